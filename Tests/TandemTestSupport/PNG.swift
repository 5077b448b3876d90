import Foundation

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
public func pngBytes(width: Int, height: Int, channels: Int, samples: [UInt8]) -> [UInt8] {
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
