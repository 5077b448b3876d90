import TandemCore

/// Slurm's compressed lists, as its environment variables carry them, expanded without calling `scontrol`
/// (which a task on a compute node may not have, and which would cost a process per task).
///
/// ```swift
/// try SlurmNodeList.expandHosts("node[01-03,07]", variable: "SLURM_STEP_NODELIST")
/// // ["node01", "node02", "node03", "node07"]
/// try SlurmNodeList.expandCounts("2(x2),1", variable: "SLURM_STEP_TASKS_PER_NODE")  // [2, 2, 1]
/// ```
public enum SlurmNodeList {
    /// The most hosts a list may expand to: far above any real allocation, and a bound on what a malformed or hostile
    /// variable can make a task allocate (`n[0-999999999]`).
    public static let maximumHosts = 65_536

    /// Expands a host list: comma-separated names, each name literal text with any number of bracket groups, each group
    /// a comma list of numbers and `low-high` ranges. Zero padding follows the low end (`[01-10]` gives `01`…`10`);
    /// with several groups the leftmost varies slowest (`rack[1-2]-n[1-2]`: rack1-n1, rack1-n2, rack2-n1, rack2-n2).
    /// Tested against `scontrol show hostnames`; text after the last group (`n[1-2]x`, which Slurm never writes and
    /// its own parser refuses) is accepted as a suffix.
    /// - Parameter variable: the environment variable the text came from, named in every error.
    /// - Throws: `TandemError(.badConfig)` naming the variable, the text and what is wrong with it.
    public static func expandHosts(_ text: String, variable: String) throws -> [String] {
        func fail(_ problem: String) -> TandemError { TandemError(.badConfig, "\(variable): \"\(text)\" \(problem)") }
        guard !text.isEmpty else { throw fail("is empty; expected host names such as node[01-04]") }
        var hosts: [String] = []
        for name in try splitTopLevel(text, fail: fail) {
            guard !name.isEmpty else { throw fail("has an empty host name (two commas in a row, or one at an end)") }
            let parts = try parseName(name, fail: fail)
            let count = parts.reduce(1) { product, part in
                let (value, overflow) = product.multipliedReportingOverflow(by: part.count)
                return overflow ? Int.max : value
            }
            guard count <= maximumHosts - hosts.count else { throw fail("expands to more than \(maximumHosts) hosts") }
            hosts.append(contentsOf: expand(parts))
        }
        return hosts
    }

    /// Expands a tasks-per-node list such as `2(x3),1` (2 tasks on each of 3 nodes, then 1) into one count per node.
    /// - Throws: `TandemError(.badConfig)` naming the variable when an entry is not `COUNT` or `COUNT(xREPEAT)`.
    public static func expandCounts(_ text: String, variable: String) throws -> [Int] {
        func fail(_ problem: String) -> TandemError { TandemError(.badConfig, "\(variable): \"\(text)\" \(problem)") }
        var counts: [Int] = []
        for entry in text.split(separator: ",", omittingEmptySubsequences: false) {
            var countText = Substring(entry), repeats = 1
            if let open = entry.firstIndex(of: "(") {
                guard entry.hasSuffix(")"), entry[entry.index(after: open)...].hasPrefix("x") else {
                    throw fail("has \"\(entry)\"; expected COUNT or COUNT(xREPEAT), e.g. 2(x3)")
                }
                countText = entry[..<open]
                let repeatText = entry[entry.index(open, offsetBy: 2)..<entry.index(before: entry.endIndex)]
                repeats = try number(repeatText, in: 1...maximumHosts, fail: { fail("has repeat count \"\(repeatText)\" in \"\(entry)\"; \($0)") })
            }
            let count = try number(countText, in: 1...maximumHosts, fail: { fail("has task count \"\(countText)\" in \"\(entry)\"; \($0)") })
            guard counts.count + repeats <= maximumHosts else { throw fail("covers more than \(maximumHosts) nodes") }
            counts.append(contentsOf: repeatElement(count, count: repeats))
        }
        return counts
    }

    /// One piece of a host name: literal text (one choice) or a bracket group's expanded numbers.
    private typealias Choices = [String]

    /// Splits at the commas outside brackets; checks that brackets pair up and do not nest.
    private static func splitTopLevel(_ text: String, fail: (String) -> TandemError) throws -> [Substring] {
        var names: [Substring] = [], start = text.startIndex, open = false
        for index in text.indices {
            switch text[index] {
            case "[":
                guard !open else { throw fail("has a \"[\" inside another bracket group") }
                open = true
            case "]":
                guard open else { throw fail("has a \"]\" without its \"[\"") }
                open = false
            case "," where !open:
                names.append(text[start..<index])
                start = text.index(after: index)
            case let character where character.isWhitespace:
                throw fail("contains white space")
            default:
                break
            }
        }
        guard !open else { throw fail("has a \"[\" that is never closed") }
        names.append(text[start...])
        return names
    }

    private static func parseName(_ name: Substring, fail: (String) -> TandemError) throws -> [Choices] {
        var parts: [Choices] = [], rest = name
        while let open = rest.firstIndex(of: "[") {
            if open > rest.startIndex { parts.append([String(rest[..<open])]) }
            let close = rest[open...].firstIndex(of: "]")!  // splitTopLevel checked the pairing
            parts.append(try parseGroup(rest[rest.index(after: open)..<close], fail: fail))
            rest = rest[rest.index(after: close)...]
        }
        if !rest.isEmpty { parts.append([String(rest)]) }
        return parts
    }

    /// `01-04,07` → ["01", "02", "03", "04", "07"].
    private static func parseGroup(_ group: Substring, fail: (String) -> TandemError) throws -> Choices {
        guard !group.isEmpty else { throw fail("has an empty bracket group \"[]\"") }
        var choices: Choices = []
        for item in group.split(separator: ",", omittingEmptySubsequences: false) {
            let bounds = item.split(separator: "-", omittingEmptySubsequences: false)
            guard bounds.count <= 2 else { throw fail("has \"\(item)\" in brackets; expected a number or a range low-high") }
            let problem = { (why: String) in fail("has \"\(item)\" in brackets: \(why)") }
            let low = try number(bounds[0], in: 0...999_999_999, fail: problem)
            let high = bounds.count == 2 ? try number(bounds[1], in: 0...999_999_999, fail: problem) : low
            guard high >= low else { throw fail("has the range \"\(item)\", which runs backwards") }
            guard choices.count + (high - low) < maximumHosts else { throw fail("expands to more than \(maximumHosts) hosts") }
            let width = bounds[0].count
            for value in low...high {
                let digits = String(value)
                choices.append(String(repeating: "0", count: max(width - digits.count, 0)) + digits)
            }
        }
        return choices
    }

    /// Cartesian product of the parts, leftmost slowest.
    private static func expand(_ parts: [Choices]) -> [String] {
        parts.reduce([""]) { prefixes, choices in prefixes.flatMap { prefix in choices.map { prefix + $0 } } }
    }

    /// A decimal number in `range`; the text is checked to be digits, and short enough, before it is converted.
    static func number(_ text: Substring, in range: ClosedRange<Int>, fail: (String) -> TandemError) throws -> Int {
        guard !text.isEmpty, text.count <= 10, text.allSatisfy({ $0.isASCII && $0.isNumber }), let value = Int(text) else {
            throw fail("\"\(text)\" is not a number")
        }
        guard range.contains(value) else { throw fail("\(value) is out of range \(range.lowerBound)-\(range.upperBound)") }
        return value
    }
}
