import Foundation
import TandemCore

/// Writes TensorBoard event files: TFRecord framing (length, masked CRC-32C of the length, data, masked CRC-32C of
/// the data) around Event protobufs, the few fields of which are encoded by hand:
/// Event { double wall_time = 1; int64 step = 2; string file_version = 3; Summary summary = 5 }
/// Summary { repeated Value value = 1 }, Value { string tag = 1; float simple_value = 2 }.
/// Encoding reuses one buffer and writes through stdio's buffer: no allocation per scalar.
public final class TensorBoardWriter {
    public let path: String
    private let file: UnsafeMutablePointer<FILE>
    private var event: [UInt8] = []
    private var value: [UInt8] = []
    private var record: [UInt8] = []

    /// Creates `directory` and a new events.out.tfevents.TIME.HOST file in it.
    public init(directory: String) throws {
        do {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        } catch {
            throw TandemError(.io, "\(directory): cannot create the TensorBoard folder (\(error.localizedDescription))")
        }
        let seconds = Int(Date().timeIntervalSince1970)
        path = "\(directory)/events.out.tfevents.\(seconds).\(ProcessInfo.processInfo.hostName).\(getpid())"
        guard let file = fopen(path, "wb") else {
            throw TandemError(.io, "\(path): cannot create (\(String(cString: strerror(errno))))")
        }
        self.file = file
        event.reserveCapacity(256)
        value.reserveCapacity(128)
        record.reserveCapacity(256)
        // The first event names the format version, as TensorFlow's writers do.
        event.removeAll(keepingCapacity: true)
        Protobuf.appendDouble(Date().timeIntervalSince1970, field: 1, to: &event)
        Protobuf.appendBytes(Array("brain.Event:2".utf8), field: 3, to: &event)
        writeRecord(event)
        fflush(file)
    }

    deinit { fclose(file) }

    /// One scalar at `step` (the x axis TensorBoard plots against).
    public func scalar(_ tag: StaticString, _ scalar: Double, step: Int) {
        value.removeAll(keepingCapacity: true)
        tag.withUTF8Buffer { Protobuf.appendBytes($0, field: 1, to: &value) }
        Protobuf.appendFloat(Float(scalar), field: 2, to: &value)
        event.removeAll(keepingCapacity: true)
        Protobuf.appendDouble(Date().timeIntervalSince1970, field: 1, to: &event)
        Protobuf.appendVarint(field: 2, UInt64(bitPattern: Int64(step)), to: &event)
        // Summary (field 5) holding one Value (field 1).
        Protobuf.appendKey(field: 5, wireType: 2, to: &event)
        Protobuf.appendRawVarint(UInt64(1 + Protobuf.varintLength(UInt64(value.count)) + value.count), to: &event)
        Protobuf.appendBytes(value, field: 1, to: &event)
        writeRecord(event)
    }

    /// Makes what was written visible to TensorBoard (it reads while the run goes on).
    public func flush() { fflush(file) }

    private func writeRecord(_ data: [UInt8]) {
        record.removeAll(keepingCapacity: true)
        var length = UInt64(data.count).littleEndian
        withUnsafeBytes(of: &length) { record.append(contentsOf: $0) }
        var lengthCRC = CRC32C.masked(record[0..<8]).littleEndian
        withUnsafeBytes(of: &lengthCRC) { record.append(contentsOf: $0) }
        record.append(contentsOf: data)
        var dataCRC = CRC32C.masked(data[...]).littleEndian
        withUnsafeBytes(of: &dataCRC) { record.append(contentsOf: $0) }
        _ = record.withUnsafeBytes { fwrite($0.baseAddress, 1, $0.count, file) }
    }
}

/// Reads the scalars back from an event file, checking every record's CRCs: for tests and `tandem inspect`.
public enum TensorBoardReader {
    public struct Scalar: Equatable, Sendable {
        public let step: Int
        public let tag: String
        public let value: Float

        public init(step: Int, tag: String, value: Float) {
            self.step = step
            self.tag = tag
            self.value = value
        }
    }

    public static func scalars(path: String) throws -> [Scalar] {
        guard let data = FileManager.default.contents(atPath: path) else { throw TandemError(.io, "\(path): cannot read") }
        let bytes = [UInt8](data)
        var offset = 0
        var result: [Scalar] = []
        func bad(_ what: String) -> TandemError { TandemError(.badInput, "\(path): \(what) at byte \(offset)") }
        while offset < bytes.count {
            guard offset + 12 <= bytes.count else { throw bad("truncated record header") }
            let length = Int(bytes[offset..<offset + 8].reversed().reduce(UInt64(0)) { $0 << 8 | UInt64($1) })
            let lengthCRC = UInt32(littleEndianBytes: bytes[offset + 8..<offset + 12])
            guard lengthCRC == CRC32C.masked(bytes[offset..<offset + 8]) else { throw bad("length CRC mismatch") }
            let start = offset + 12, end = start + length
            guard end + 4 <= bytes.count else { throw bad("truncated record") }
            guard UInt32(littleEndianBytes: bytes[end..<end + 4]) == CRC32C.masked(bytes[start..<end]) else { throw bad("data CRC mismatch") }
            result += try Protobuf.scalars(inEvent: bytes[start..<end])
            offset = end + 4
        }
        return result
    }
}

/// CRC-32C (Castagnoli), masked as TFRecord does: ((crc >> 15) | (crc << 17)) + 0xa282ead8.
enum CRC32C {
    static let table: [UInt32] = (0..<256).map { index in
        var crc = UInt32(index)
        for _ in 0..<8 { crc = crc & 1 == 1 ? (crc >> 1) ^ 0x82F6_3B78 : crc >> 1 }
        return crc
    }

    static func checksum(_ bytes: ArraySlice<UInt8>) -> UInt32 {
        var crc: UInt32 = 0xFFFF_FFFF
        table.withUnsafeBufferPointer { table in
            for byte in bytes { crc = table[Int((crc ^ UInt32(byte)) & 0xFF)] ^ (crc >> 8) }
        }
        return ~crc
    }

    static func masked(_ bytes: ArraySlice<UInt8>) -> UInt32 {
        let crc = checksum(bytes)
        return ((crc >> 15) | (crc << 17)) &+ 0xA282_EAD8
    }
}

/// The protobuf wire format, as far as event files need it.
enum Protobuf {
    static func appendKey(field: Int, wireType: Int, to buffer: inout [UInt8]) {
        appendRawVarint(UInt64(field << 3 | wireType), to: &buffer)
    }

    static func appendRawVarint(_ value: UInt64, to buffer: inout [UInt8]) {
        var value = value
        while value >= 0x80 {
            buffer.append(UInt8(value & 0x7F) | 0x80)
            value >>= 7
        }
        buffer.append(UInt8(value))
    }

    static func varintLength(_ value: UInt64) -> Int {
        var value = value, length = 1
        while value >= 0x80 { value >>= 7; length += 1 }
        return length
    }

    static func appendVarint(field: Int, _ value: UInt64, to buffer: inout [UInt8]) {
        appendKey(field: field, wireType: 0, to: &buffer)
        appendRawVarint(value, to: &buffer)
    }

    static func appendDouble(_ value: Double, field: Int, to buffer: inout [UInt8]) {
        appendKey(field: field, wireType: 1, to: &buffer)
        var bits = value.bitPattern.littleEndian
        withUnsafeBytes(of: &bits) { buffer.append(contentsOf: $0) }
    }

    static func appendFloat(_ value: Float, field: Int, to buffer: inout [UInt8]) {
        appendKey(field: field, wireType: 5, to: &buffer)
        var bits = value.bitPattern.littleEndian
        withUnsafeBytes(of: &bits) { buffer.append(contentsOf: $0) }
    }

    static func appendBytes<Bytes: Collection<UInt8>>(_ bytes: Bytes, field: Int, to buffer: inout [UInt8]) {
        appendKey(field: field, wireType: 2, to: &buffer)
        appendRawVarint(UInt64(bytes.count), to: &buffer)
        buffer.append(contentsOf: bytes)
    }

    /// Walks one message: calls `visit(field, wireType, varint, bytes)` for each field.
    static func fields(_ message: ArraySlice<UInt8>, _ visit: (Int, Int, UInt64, ArraySlice<UInt8>) throws -> Void) throws {
        var index = message.startIndex
        func varint() throws -> UInt64 {
            var result: UInt64 = 0, shift: UInt64 = 0
            while true {
                guard index < message.endIndex, shift < 64 else { throw TandemError(.badInput, "malformed protobuf varint") }
                let byte = message[index]
                index += 1
                result |= UInt64(byte & 0x7F) << shift
                if byte < 0x80 { return result }
                shift += 7
            }
        }
        while index < message.endIndex {
            let key = try varint()
            let field = Int(key >> 3), wireType = Int(key & 7)
            switch wireType {
            case 0: try visit(field, 0, try varint(), [])
            case 1, 5:
                let size = wireType == 1 ? 8 : 4
                guard index + size <= message.endIndex else { throw TandemError(.badInput, "truncated protobuf field \(field)") }
                try visit(field, wireType, 0, message[index..<index + size])
                index += size
            case 2:
                let size = Int(try varint())
                guard size >= 0, index + size <= message.endIndex else { throw TandemError(.badInput, "truncated protobuf field \(field)") }
                try visit(field, 2, 0, message[index..<index + size])
                index += size
            default: throw TandemError(.badInput, "unsupported protobuf wire type \(wireType)")
            }
        }
    }

    static func scalars(inEvent event: ArraySlice<UInt8>) throws -> [TensorBoardReader.Scalar] {
        var step = 0
        var summary: ArraySlice<UInt8>?
        try fields(event) { field, _, varint, bytes in
            if field == 2 { step = Int(Int64(bitPattern: varint)) }
            if field == 5 { summary = bytes }
        }
        guard let summary else { return [] }
        var scalars: [TensorBoardReader.Scalar] = []
        try fields(summary) { field, _, _, value in
            guard field == 1 else { return }
            var tag = "", scalar: Float?
            try fields(value) { field, _, _, bytes in
                if field == 1 { tag = String(decoding: bytes, as: UTF8.self) }
                if field == 2 { scalar = Float(bitPattern: UInt32(littleEndianBytes: bytes)) }
            }
            if let scalar { scalars.append(.init(step: step, tag: tag, value: scalar)) }
        }
        return scalars
    }
}

extension UInt32 {
    init(littleEndianBytes bytes: ArraySlice<UInt8>) {
        self = bytes.reversed().reduce(UInt32(0)) { $0 << 8 | UInt32($1) }
    }
}
