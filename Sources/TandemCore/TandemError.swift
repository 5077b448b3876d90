/// The one error type of Tandem: a code a program can switch on and a one-line message a user can act on
/// (it names the file or field, what was expected and what was found).
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
    }

    public let code: Code
    public let message: String

    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { message }
}
