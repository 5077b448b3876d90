import Dispatch
import Foundation
import Testing
import TandemCore

/// A fresh folder under the system temporary directory, removed by `remove()`.
struct TemporaryDirectory {
    let path: String

    init() throws {
        path = NSTemporaryDirectory() + "tandem-data-tests-" + UUID().uuidString
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    }

    func file(_ name: String) -> String { path + "/" + name }

    @discardableResult
    func write(_ name: String, _ bytes: [UInt8]) throws -> String {
        let target = file(name)
        try Data(bytes).write(to: URL(fileURLWithPath: target))
        return target
    }

    @discardableResult
    func write(_ name: String, text: String) throws -> String { try write(name, Array(text.utf8)) }

    func remove() { try? FileManager.default.removeItem(atPath: path) }
}

/// The bytes of an unsigned-byte IDX file.
func idxBytes(dimensions: [UInt32], data: [UInt8], magic: [UInt8]? = nil) -> [UInt8] {
    var bytes = magic ?? [0, 0, 8, UInt8(dimensions.count)]
    for dimension in dimensions { bytes += [24, 16, 8, 0].map { UInt8(truncatingIfNeeded: dimension >> $0) } }
    return bytes + data
}

/// Compresses `path` to `path.gz` with the system gzip, returning the new path.
func gzip(_ path: String) throws -> String {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/usr/bin/gzip")
    process.arguments = ["-f", "-n", path]
    try process.run()
    process.waitUntilExit()
    try #require(process.terminationStatus == 0, "gzip failed")
    return path + ".gz"
}

/// Runs `body` on another thread and reports whether it finished within `seconds`: a guard against a deadlock
/// hanging the whole test run (not a speed measurement — the limit is far above the expected milliseconds).
func finishes(within seconds: Double = 60, _ body: @escaping @Sendable () -> Void) -> Bool {
    let done = DispatchSemaphore(value: 0)
    Thread { body(); done.signal() }.start()
    return done.wait(timeout: .now() + seconds) == .success
}

/// Expects `body` to throw a TandemError whose message contains every fragment.
@discardableResult
func expectTandemError(_ code: TandemError.Code? = nil, mentioning fragments: [String],
                       sourceLocation: SourceLocation = #_sourceLocation, _ body: () throws -> Void) -> TandemError? {
    do {
        try body()
        Issue.record("expected a TandemError mentioning \(fragments)", sourceLocation: sourceLocation)
    } catch let error as TandemError {
        if let code { #expect(error.code == code, "\(error.message)", sourceLocation: sourceLocation) }
        for fragment in fragments {
            #expect(error.message.contains(fragment), "\"\(error.message)\" does not mention \(fragment)", sourceLocation: sourceLocation)
        }
        return error
    } catch {
        Issue.record("expected a TandemError, got \(error)", sourceLocation: sourceLocation)
    }
    return nil
}

// MARK: a minimal PNG encoder (stored deflate blocks, so no compressor is needed)

private let crcTable: [UInt32] = (0..<256).map { n in
    var c = UInt32(n)
    for _ in 0..<8 { c = c & 1 == 1 ? 0xEDB8_8320 ^ (c >> 1) : c >> 1 }
    return c
}

private func crc32(_ bytes: [UInt8]) -> UInt32 {
    ~bytes.reduce(~UInt32(0)) { crcTable[Int(($0 ^ UInt32($1)) & 0xFF)] ^ ($0 >> 8) }
}

private func bigEndian(_ value: UInt32) -> [UInt8] { [24, 16, 8, 0].map { UInt8(truncatingIfNeeded: value >> $0) } }

/// An 8-bit PNG of `width`×`height` pixels with `channels` samples each (1 gray, 2 gray+alpha, 3 RGB, 4 RGBA).
func pngBytes(width: Int, height: Int, channels: Int, samples: [UInt8]) -> [UInt8] {
    precondition(samples.count == width * height * channels)
    let colorType: UInt8 = [1: 0, 2: 4, 3: 2, 4: 6][channels]!
    func chunk(_ type: String, _ data: [UInt8]) -> [UInt8] {
        let body = Array(type.utf8) + data
        return bigEndian(UInt32(data.count)) + body + bigEndian(crc32(body))
    }
    var raw: [UInt8] = []
    for y in 0..<height {
        raw.append(0)  // filter: none
        raw += samples[y * width * channels..<(y + 1) * width * channels]
    }
    // zlib stream of stored blocks (≤ 65535 bytes each) and its Adler-32.
    var zlib: [UInt8] = [0x78, 0x01]
    var start = 0
    repeat {
        let count = min(65_535, raw.count - start)
        let final: UInt8 = start + count == raw.count ? 1 : 0
        zlib += [final, UInt8(count & 0xFF), UInt8(count >> 8), UInt8(~count & 0xFF), UInt8((~count >> 8) & 0xFF)]
        zlib += raw[start..<start + count]
        start += count
    } while start < raw.count
    var a: UInt32 = 1, b: UInt32 = 0
    for byte in raw { a = (a + UInt32(byte)) % 65_521; b = (b + a) % 65_521 }
    zlib += bigEndian(b << 16 | a)
    let header = bigEndian(UInt32(width)) + bigEndian(UInt32(height)) + [8, colorType, 0, 0, 0]
    return [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A] + chunk("IHDR", header) + chunk("IDAT", zlib) + chunk("IEND", [])
}
