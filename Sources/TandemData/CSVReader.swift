import TandemCore
#if canImport(Glibc)
import Glibc
#endif

/// Reads a numeric CSV table: every column but the target is a feature. A first row that is not all numbers is a
/// header, so the target can be named; otherwise it is a column index (negative counts from the end; default last).
public enum CSVReader {
    public static func read(path: String, targetColumn: String? = nil) throws -> (examples: Examples, header: [String]?) {
        guard let handle = fopen(path, "rb") else {
            throw TandemError(.io, "\(path): cannot open (\(String(cString: strerror(errno))))")
        }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 1 << 16)
        while true {
            let got = fread(&chunk, 1, chunk.count, handle)
            if got <= 0 { break }
            bytes.append(contentsOf: chunk[0..<got])
        }
        fclose(handle)
        // Split on the bytes, keeping empty lines, so reported line numbers match an editor's (CR LF too).
        let lines = bytes.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false)
            .map { String(decoding: $0, as: UTF8.self).trimmingWhitespace() }
            .enumerated().filter { !$0.element.isEmpty && !$0.element.hasPrefix("#") }
        guard let first = lines.first else { throw TandemError(.badInput, "\(path): no rows") }

        let firstFields = first.element.split(separator: ",", omittingEmptySubsequences: false).map { $0.trimmingWhitespace() }
        let hasHeader = firstFields.contains { Float($0) == nil }
        let header = hasHeader ? firstFields : nil
        let columnCount = firstFields.count
        guard columnCount >= 2 else {
            throw TandemError(.badInput, "\(path): line \(first.offset + 1) has \(columnCount) column; need features and a target")
        }
        let target = try resolveTarget(targetColumn, header: header, columnCount: columnCount, path: path)

        var features: [Float] = []
        var targets: [Float] = []
        for (lineIndex, line) in lines.dropFirst(hasHeader ? 1 : 0) {
            let fields = line.split(separator: ",", omittingEmptySubsequences: false)
            guard fields.count == columnCount else {
                throw TandemError(.badInput, "\(path):\(lineIndex + 1): \(fields.count) fields, expected \(columnCount)")
            }
            for (column, field) in fields.enumerated() {
                let text = field.trimmingWhitespace()
                guard let value = Float(text), value.isFinite else {
                    throw TandemError(.badInput, "\(path):\(lineIndex + 1): column \(column + 1) \(TandemError.quoted(text)) is not a number")
                }
                if column == target { targets.append(value) } else { features.append(value) }
            }
        }
        guard !targets.isEmpty else { throw TandemError(.badInput, "\(path): header but no data rows") }
        return (try Examples(features: .floats(features), featureCount: columnCount - 1, targets: targets), header)
    }

    private static func resolveTarget(_ name: String?, header: [String]?, columnCount: Int, path: String) throws -> Int {
        guard let name else { return columnCount - 1 }
        if let header, let index = header.firstIndex(of: name) { return index }
        if let index = Int(name) {
            let resolved = index < 0 ? columnCount + index : index
            if (0..<columnCount).contains(resolved) { return resolved }
        }
        let columns = header.map { names in names.prefix(20).map { TandemError.quoted($0, limit: 30) }.joined(separator: ", ") + (names.count > 20 ? ", …" : "") }
        throw TandemError(.badConfig, "\(path): target column \(TandemError.quoted(name)) not found (columns: \(columns ?? "0..<\(columnCount)"))")
    }
}

extension StringProtocol {
    func trimmingWhitespace() -> String {
        var scalars = Substring(self)
        while let first = scalars.first, first.isWhitespace { scalars.removeFirst() }
        while let last = scalars.last, last.isWhitespace { scalars.removeLast() }
        return String(scalars)
    }
}
