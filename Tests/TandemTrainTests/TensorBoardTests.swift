import Foundation
import TandemCore
import TandemTrain
import Testing

struct TensorBoardTests {
    @Test func scalarsRoundTripThroughTheEventFile() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("tandem-tb-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let writer = try TensorBoardWriter(directory: directory)
        writer.scalar("epoch/loss", 0.4321, step: 937)
        writer.scalar("epoch/accuracy", 0.8462, step: 937)
        writer.scalar("batch/loss", 2.5, step: 1_000_000)
        writer.flush()
        let name = try #require(try FileManager.default.contentsOfDirectory(atPath: directory).first)
        #expect(name.hasPrefix("events.out.tfevents."))
        let scalars = try TensorBoardReader.scalars(path: directory + "/" + name)
        #expect(scalars == [
            .init(step: 937, tag: "epoch/loss", value: 0.4321),
            .init(step: 937, tag: "epoch/accuracy", value: 0.8462),
            .init(step: 1_000_000, tag: "batch/loss", value: 2.5),
        ])
    }

    @Test func aFlippedByteFailsTheRecordCRC() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("tandem-tb-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let writer = try TensorBoardWriter(directory: directory)
        writer.scalar("epoch/loss", 1, step: 1)
        writer.flush()
        let path = directory + "/" + (try FileManager.default.contentsOfDirectory(atPath: directory).first!)
        var bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
        bytes[bytes.count - 6] ^= 0x40
        try Data(bytes).write(to: URL(fileURLWithPath: path))
        #expect(throws: TandemError.self) { try TensorBoardReader.scalars(path: path) }
    }

    /// The framing checked against an independent fact: TFRecord's masked CRC-32C of the 8-byte length of the
    /// version event TensorFlow writes first.
    @Test func firstRecordIsTheVersionEvent() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("tandem-tb-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: directory) }
        _ = try TensorBoardWriter(directory: directory)
        let path = directory + "/" + (try FileManager.default.contentsOfDirectory(atPath: directory).first!)
        let bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
        // Event { wall_time (9 bytes), file_version "brain.Event:2" (2 + 13 bytes) } = 24 bytes.
        #expect(Array(bytes[0..<8]) == [24, 0, 0, 0, 0, 0, 0, 0])
        #expect(String(decoding: bytes[12 + 9 + 2..<12 + 24], as: UTF8.self) == "brain.Event:2")
        #expect(bytes.count == 12 + 24 + 4)
    }
}
