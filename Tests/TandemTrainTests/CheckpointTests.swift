import Foundation
import TandemCore
import TandemTestSupport
import TandemTrain
import Testing

@Suite struct CheckpointTests {
    static let metadata = [
        "epoch": "12", "format": "tandem",
        "note": "line 1\nline 2 \"quoted\" back\\slash\ttab \u{01} ünïcode ✓",
    ]

    typealias Tensor = (name: String, shape: [Int], values: [Float])

    static let tensors: [Tensor] = [
        ("dense_0/kernel", [2, 3], [1, -2, 3.5, 0, -0.0, 1e-30]),
        ("dense_0/bias", [3], [.infinity, -.infinity, .nan]),
        ("scalar \"odd\" name", [], [42]),
        ("optimizer/momentum/dense_0/kernel", [6], [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]),
        // Last: a zero-size tensor shares its data offset with whatever follows, and the reader orders by offset.
        ("empty", [0, 4], []),
    ]

    /// A checkpoint holding `tensors`, obtained by reading a file from an independent safetensors encoder
    /// (`Checkpoint.Entry` has no public initialiser).
    /// The sample as `Checkpoint.write` puts it on disk: its path, its bytes and the length of its JSON header.
    static func writtenSample(in directory: TemporaryDirectory) throws -> (path: String, bytes: [UInt8], headerLength: Int) {
        let path = directory.file("model.safetensors")
        try sample(in: directory).write(to: path)
        let bytes = try [UInt8](Data(contentsOf: URL(fileURLWithPath: path)))
        return (path, bytes, (0..<8).reduce(0) { $0 | Int(bytes[$1]) << (8 * $1) })
    }

    static func sample(in directory: TemporaryDirectory) throws -> Checkpoint {
        var header: [String: Any] = ["__metadata__": metadata]
        var body: [UInt8] = []
        for tensor in tensors {
            header[tensor.name] = ["dtype": "F32", "shape": tensor.shape, "data_offsets": [body.count, body.count + 4 * tensor.values.count]]
            for value in tensor.values { body += (0..<4).map { UInt8(truncatingIfNeeded: value.bitPattern >> (8 * $0)) } }
        }
        let json = [UInt8](try JSONSerialization.data(withJSONObject: header))
        let length = (0..<8).map { UInt8(truncatingIfNeeded: json.count >> (8 * $0)) }
        let path = try directory.write("sample-source.safetensors", length + json + body)
        defer { try? FileManager.default.removeItem(atPath: path) }
        return try Checkpoint.read(path: path)
    }

    static func expectSample(_ checkpoint: Checkpoint, sourceLocation: SourceLocation = #_sourceLocation) {
        #expect(checkpoint.metadata == metadata, sourceLocation: sourceLocation)
        #expect(checkpoint.entries.map(\.name) == tensors.map(\.name), sourceLocation: sourceLocation)
        #expect(checkpoint.entries.map(\.shape) == tensors.map(\.shape), sourceLocation: sourceLocation)
        for (entry, tensor) in zip(checkpoint.entries, tensors) {
            #expect(entry.values.map(\.bitPattern) == tensor.values.map(\.bitPattern), "\(entry.name)", sourceLocation: sourceLocation)
        }
    }

    @Test func readsAnIndependentlyEncodedFile() throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        Self.expectSample(try Self.sample(in: directory))
    }

    @Test func writeThenReadRoundTrips() throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let path = directory.file("model.safetensors")
        try Self.sample(in: directory).write(to: path)
        let loaded = try Checkpoint.read(path: path)
        Self.expectSample(loaded)
        #expect(loaded.entry(named: "dense_0/bias")?.shape == [3])
        #expect(loaded.entry(named: "missing") == nil)
    }

    @Test func fileIsValidSafetensors() throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let (_, bytes, headerLength) = try Self.writtenSample(in: directory)

        #expect(headerLength % 8 == 0)
        try #require(8 + headerLength <= bytes.count)
        let headerBytes = Data(bytes[8..<8 + headerLength])
        let header = try #require(try JSONSerialization.jsonObject(with: headerBytes) as? [String: Any])
        #expect(header["__metadata__"] as? [String: String] == Self.metadata)
        #expect(header.count == Self.tensors.count + 1)

        let body = Array(bytes[(8 + headerLength)...])
        var expectedOffset = 0
        for entry in Self.tensors {
            let description = try #require(header[entry.name] as? [String: Any], "no header entry for \(entry.name)")
            #expect(description["dtype"] as? String == "F32")
            #expect(description["shape"] as? [Int] == entry.shape)
            let offsets = try #require(description["data_offsets"] as? [Int])
            #expect(offsets == [expectedOffset, expectedOffset + 4 * entry.values.count])
            for (i, value) in entry.values.enumerated() {
                let at = expectedOffset + 4 * i
                let stored = (0..<4).reduce(UInt32(0)) { $0 | UInt32(body[at + $1]) << (8 * UInt32($1)) }
                #expect(stored == value.bitPattern, "\(entry.name)[\(i)] is not little-endian F32")
            }
            expectedOffset += 4 * entry.values.count
        }
        #expect(body.count == expectedOffset)
    }

    @Test func emptyCheckpoint() throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let path = directory.file("empty.safetensors")
        try Checkpoint(entries: [], metadata: [:]).write(to: path)
        let loaded = try Checkpoint.read(path: path)
        #expect(loaded.entries.isEmpty && loaded.metadata.isEmpty)
    }

    @Test func noTemporaryFileIsLeftBehind() throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let path = directory.file("model.safetensors")
        let sample = try Self.sample(in: directory)
        try sample.write(to: path)
        #expect(directory.contents() == ["model.safetensors"])
        // Overwriting replaces the file and still leaves nothing else.
        var second = sample
        second.entries[0].values[0] = 99
        try second.write(to: path)
        #expect(directory.contents() == ["model.safetensors"])
        #expect(try Checkpoint.read(path: path).entries[0].values[0] == 99)
    }

    @Test func writingIntoAMissingFolderThrows() throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let path = directory.file("no/such/folder/model.safetensors")
        let sample = try Self.sample(in: directory)
        expectTandemError(.io, mentioning: [path]) { try sample.write(to: path) }
        #expect(directory.contents().isEmpty)
    }

    @Test func truncatedCheckpointThrows() throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let (path, bytes, headerLength) = try Self.writtenSample(in: directory)
        // Cut in half (inside the header), just after the header (no body), and one float short.
        for (name, length) in [("half", bytes.count / 2), ("header-only", 8 + headerLength), ("short", bytes.count - 4), ("tiny", 5)] {
            let cut = try directory.write("\(name).safetensors", Array(bytes.prefix(length)))
            expectTandemError(.badCheckpoint, mentioning: [cut]) { _ = try Checkpoint.read(path: cut) }
        }
    }

    @Test func corruptCheckpointThrows() throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        func file(_ name: String, header: String, body: [UInt8] = []) throws -> String {
            let json = Array(header.utf8)
            let length = (0..<8).map { UInt8(truncatingIfNeeded: json.count >> (8 * $0)) }
            return try directory.write(name, length + json + body)
        }
        let cases: [(String, String, [String])] = [
            ("not-json", "{not json at all", ["JSON"]),
            ("array", "[1, 2, 3]", ["JSON"]),
            ("f16", #"{"w": {"dtype": "F16", "shape": [2], "data_offsets": [0, 4]}}"#, ["w", "F16"]),
            ("no-shape", #"{"w": {"dtype": "F32", "data_offsets": [0, 8]}}"#, ["w"]),
            ("offsets", #"{"w": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}"#, ["w", "data_offsets"]),
            ("beyond", #"{"w": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}"#, ["w"]),
        ]
        for (name, header, fragments) in cases {
            let path = try file(name, header: header, body: [UInt8](repeating: 0, count: 8))
            expectTandemError(.badCheckpoint, mentioning: [path] + fragments) { _ = try Checkpoint.read(path: path) }
        }
        // Header length far beyond the file, and one with the sign bit set.
        let huge = try directory.write("huge.safetensors", [0, 0, 0, 0, 0, 1, 0, 0] + Array("{}".utf8))
        expectTandemError(.badCheckpoint, mentioning: [huge]) { _ = try Checkpoint.read(path: huge) }
        let negative = try directory.write("negative.safetensors", [2, 0, 0, 0, 0, 0, 0, 0x80] + Array("{}".utf8))
        expectTandemError(.badCheckpoint, mentioning: [negative]) { _ = try Checkpoint.read(path: negative) }
        let missing = directory.file("missing.safetensors")
        expectTandemError(.io, mentioning: [missing]) { _ = try Checkpoint.read(path: missing) }
    }

    @Test
    func absurdShapeThrowsInsteadOfTrapping() throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let header = Array(#"{"w": {"dtype": "F32", "shape": [4611686018427387904, 4], "data_offsets": [0, 16]}}"#.utf8)
        let length = (0..<8).map { UInt8(truncatingIfNeeded: header.count >> (8 * $0)) }
        let path = try directory.write("absurd.safetensors", length + header + [UInt8](repeating: 0, count: 16))
        expectTandemError(.badCheckpoint, mentioning: [path, "w"]) { _ = try Checkpoint.read(path: path) }
    }
}
