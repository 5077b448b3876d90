/// The one error type of Tandem: a code a program can switch on, a one-line message a user can act on (it names
/// the file or field, what was expected and what was found), and the error it came from, if any.
///
/// ```swift
/// throw TandemError(.io, "\(path): cannot read the config file", cause: error)
/// ```
public struct TandemError: Error, Sendable, CustomStringConvertible, Equatable {
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        public let name: String
        public init(_ name: String) { self.name = name }
        public var description: String { name }

        public static let badInput = Code("bad input")
        public static let badConfig = Code("bad config")
        public static let badCheckpoint = Code("bad checkpoint")
        public static let io = Code("i/o")
        public static let numeric = Code("numeric")
        public static let communication = Code("communication")
        public static let timeout = Code("timeout")
        public static let usage = Code("usage")
        /// The job needs more memory, threads or bytes than this machine or a file format allows.
        public static let resources = Code("resources")
        /// A replica stopped because the group of replicas it exchanges with stopped (another replica failed, or
        /// one did not arrive in time): the failure of the one that caused it is the one to report.
        public static let replicasStopped = Code("replicas stopped")
    }

    public let code: Code
    public let message: String
    /// The lower-level error this one reports (a Foundation or system error), for logs and debugging.
    public let cause: (any Error & Sendable)?

    /// Messages quote names and values taken from files, flags and the environment: control characters among them
    /// are escaped here, so a message is always one printable line (no escape sequence reaches the terminal).
    public init(_ code: Code, _ message: String, cause: (any Error & Sendable)? = nil) {
        self.code = code
        self.message = Self.escapingControlCharacters(message)
        self.cause = cause
    }

    public var description: String { message }

    /// Errors are equal when their code and message are: what a user sees and a program switches on.
    public static func == (a: TandemError, b: TandemError) -> Bool { a.code == b.code && a.message == b.message }

    /// `text` with every control character (C0, DEL, C1, line and paragraph separators) written as `\u{XX}`,
    /// and invalid UTF-8 already replaced by U+FFFD when the text was decoded.
    public static func escapingControlCharacters(_ text: String) -> String {
        guard text.unicodeScalars.contains(where: isControl) else { return text }
        var result = ""
        result.unicodeScalars.reserveCapacity(text.unicodeScalars.count)
        for scalar in text.unicodeScalars {
            if isControl(scalar) {
                result += "\\u{" + String(scalar.value, radix: 16) + "}"
            } else {
                result.unicodeScalars.append(scalar)
            }
        }
        return result
    }

    private static func isControl(_ scalar: Unicode.Scalar) -> Bool {
        scalar.value < 0x20 || (0x7F...0x9F).contains(scalar.value) || scalar.value == 0x2028 || scalar.value == 0x2029
    }

    /// Text taken from a file or the environment, for a message: in double quotes, control characters escaped, and
    /// cut to `limit` characters (a binary file's "line" can be megabytes long).
    public static func quoted<S: StringProtocol>(_ text: S, limit: Int = 60) -> String {
        let cut = text.count > limit ? String(text.prefix(limit)) + "…" : String(text)
        return "\"" + escapingControlCharacters(cut) + "\""
    }
}
