import Foundation
import TandemCore
import TandemNN
#if canImport(Glibc)
import Glibc
#endif

/// A checkpoint in the safetensors format (an 8-byte little-endian header length, a JSON header, then raw
/// little-endian data), so Python's `safetensors` reads it: kernels `dense_0/kernel` [in, out] F32 row-major, biases,
/// optimizer state as `optimizer/<state>/<tensor>`, and step / epoch / seed / the model description in `__metadata__`.
public struct Checkpoint {
    public struct Entry {
        public let name: String
        public let shape: [Int]
        public var values: [Float]
    }

    public var entries: [Entry]
    public var metadata: [String: String]

    public init(entries: [Entry], metadata: [String: String]) {
        self.entries = entries
        self.metadata = metadata
    }

    public func entry(named name: String) -> Entry? { entries.first { $0.name == name } }

    // MARK: writing

    /// The largest JSON header `read` accepts; `write` refuses a larger one, so a checkpoint is never written that
    /// cannot be read back (JobConfig.validate refuses a config whose text would make one, before training).
    public static let maximumHeaderBytes = 100_000_000

    /// The safetensors JSON header, padded to a multiple of 8 bytes.
    public static func header(metadata: [String: String], tensors: [(name: String, shape: [Int])]) -> String {
        var header = "{\"__metadata__\":{"
        header += metadata.keys.sorted().map { "\(jsonString($0)):\(jsonString(metadata[$0]!))" }.joined(separator: ",")
        header += "}"
        var offset = 0
        for tensor in tensors {
            let bytes = SaturatingSize.product(tensor.shape) * 4
            header += ",\(jsonString(tensor.name)):{\"dtype\":\"F32\",\"shape\":[\(tensor.shape.map(String.init).joined(separator: ","))],\"data_offsets\":[\(offset),\(offset + bytes)]}"
            offset += bytes
        }
        header += "}"
        while header.utf8.count % 8 != 0 { header += " " }
        return header
    }

    /// Writes atomically: a temporary file beside the target, fsync, rename, fsync of the folder. A crash at any
    /// point leaves either the old file or the complete new one, never a torn one.
    public func write(to path: String) throws {
        let header = Self.header(metadata: metadata, tensors: entries.map { ($0.name, $0.shape) })
        guard header.utf8.count <= Self.maximumHeaderBytes else {
            throw TandemError(.resources, "\(path): not written: its header would be \(header.utf8.count) bytes, more than the \(Self.maximumHeaderBytes) a checkpoint reader accepts")
        }
        let temporary = CheckpointDirectory.temporaryPath(for: path)
        let descriptor = open(temporary, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        guard descriptor >= 0 else { throw TandemError(.io, "\(path): cannot create checkpoint (\(String(cString: strerror(errno))))") }
        var succeeded = false
        defer {
            if !succeeded { close(descriptor); unlink(temporary) }
        }
        let length = UInt64(header.utf8.count).littleEndian
        try withUnsafeBytes(of: length) { try writeAll(descriptor, $0, path: path) }
        try Array(header.utf8).withUnsafeBytes { try writeAll(descriptor, $0, path: path) }
        for entry in entries {
            try entry.values.withUnsafeBytes { try writeAll(descriptor, $0, path: path) }
        }
        guard fsync(descriptor) == 0 else { throw TandemError(.io, "\(path): fsync failed (\(String(cString: strerror(errno))))") }
        close(descriptor)
        succeeded = true
        guard rename(temporary, path) == 0 else {
            unlink(temporary)
            throw TandemError(.io, "\(path): cannot rename checkpoint into place (\(String(cString: strerror(errno))))")
        }
        let folder = open(URL(fileURLWithPath: path).deletingLastPathComponent().path, O_RDONLY)
        if folder >= 0 {
            fsync(folder)
            close(folder)
        }
    }

    private func writeAll(_ descriptor: Int32, _ bytes: UnsafeRawBufferPointer, path: String) throws {
        var done = 0
        while done < bytes.count {
            let written = Glibc.write(descriptor, bytes.baseAddress! + done, bytes.count - done)
            guard written > 0 else { throw TandemError(.io, "\(path): write failed (\(String(cString: strerror(errno))))") }
            done += written
        }
    }

    // MARK: reading

    public static func read(path: String) throws -> Checkpoint {
        func bad(_ problem: String) -> TandemError { TandemError(.badCheckpoint, "\(path): \(problem)") }
        guard let data = FileManager.default.contents(atPath: path) else {
            throw TandemError(.io, "\(path): cannot read checkpoint (missing or unreadable)")
        }
        guard data.count >= 8 else { throw bad("not a safetensors file (\(data.count) bytes)") }
        let headerLength = data.prefix(8).enumerated().reduce(0) { $0 | Int($1.element) << (8 * $1.offset) }
        guard headerLength > 1, headerLength <= data.count - 8, headerLength <= maximumHeaderBytes else {
            throw bad("not a safetensors file (header length \(headerLength) for a file of \(data.count) bytes)")
        }
        let headerData = data.subdata(in: 8..<8 + headerLength)
        guard let header = try? JSONSerialization.jsonObject(with: headerData) as? [String: Any] else {
            throw bad("safetensors header is not a JSON object")
        }
        let body = data.subdata(in: 8 + headerLength..<data.count)
        var metadata: [String: String] = [:]
        var entries: [(offset: Int, entry: Entry)] = []
        for (name, value) in header {
            if name == "__metadata__" {
                // The format maps names to strings; anything else would be dropped silently (and an epoch with it).
                guard let strings = value as? [String: String] else { throw bad("__metadata__ must map names to strings") }
                metadata = strings
                continue
            }
            guard let description = value as? [String: Any], let dtype = description["dtype"] as? String,
                  let shape = description["shape"] as? [Int], let offsets = description["data_offsets"] as? [Int], offsets.count == 2 else {
                throw bad("tensor \(name) has a malformed header entry")
            }
            guard dtype == "F32" else { throw bad("tensor \(name) has dtype \(dtype); Tandem reads F32 only") }
            // A corrupt shape must not trap on overflow: a product beyond the body's size is wrong anyway.
            var count = 1
            for dimension in shape {
                let (product, overflow) = count.multipliedReportingOverflow(by: dimension)
                guard dimension >= 0, !overflow, product <= body.count / 4 else {
                    throw bad("tensor \(name) data_offsets \(offsets) do not fit its shape \(shape) in a body of \(body.count) bytes")
                }
                count = product
            }
            guard offsets[0] >= 0, offsets[0] <= offsets[1], offsets[1] <= body.count, offsets[1] - offsets[0] == count * 4 else {
                throw bad("tensor \(name) data_offsets \(offsets) do not fit its shape \(shape) in a body of \(body.count) bytes")
            }
            var values = [Float](repeating: 0, count: count)
            values.withUnsafeMutableBytes { destination in
                body.withUnsafeBytes { source in
                    destination.copyMemory(from: UnsafeRawBufferPointer(rebasing: source[offsets[0]..<offsets[1]]))
                }
            }
            entries.append((offsets[0], Entry(name: name, shape: shape, values: values)))
        }
        return Checkpoint(entries: entries.sorted { $0.offset < $1.offset }.map(\.entry), metadata: metadata)
    }
}

/// JSON string literal with the escapes the format requires.
func jsonString(_ text: String) -> String {
    var result = "\""
    for scalar in text.unicodeScalars {
        switch scalar {
        case "\"": result += "\\\""
        case "\\": result += "\\\\"
        case "\n": result += "\\n"
        case "\r": result += "\\r"
        case "\t": result += "\\t"
        case _ where scalar.value < 0x20: result += String(format: "\\u%04x", scalar.value)
        default: result.unicodeScalars.append(scalar)
        }
    }
    return result + "\""
}
