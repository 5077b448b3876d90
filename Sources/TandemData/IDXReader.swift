import CZlib
import TandemCore
#if canImport(Glibc)
import Glibc
#endif

/// Reads IDX files (MNIST / Fashion-MNIST), plain or gzip-compressed, straight into their final UInt8 storage.
///
/// The header is checked before anything large is allocated: the size it promises must fit in what the file can
/// hold (the file size, or for gzip the uncompressed size recorded in its trailer), so a corrupt header cannot
/// make us allocate gigabytes.
public enum IDXReader {
    public struct Contents: Sendable {
        public let dimensions: [Int]
        public let bytes: [UInt8]
        public var count: Int { dimensions.first ?? 0 }
        public var rowLength: Int { dimensions.dropFirst().reduce(1, *) }
    }

    public static func read(path: String) throws -> Contents {
        let expectedUpperBound = try uncompressedSizeBound(path: path)
        guard let file = gzopen(path, "rb") else {
            throw TandemError(.io, "\(path): cannot open (\(String(cString: strerror(errno))))")
        }
        defer { gzclose(file) }
        gzbuffer(file, 1 << 18)

        var magic = [UInt8](repeating: 0, count: 4)
        try readExactly(file, into: &magic, count: 4, path: path, what: "the IDX header")
        guard magic[0] == 0, magic[1] == 0, magic[2] == 0x08 else {
            throw TandemError(.badInput, "\(path): not an unsigned-byte IDX file (magic bytes \(magic.map { String(format2: $0) }.joined(separator: " ")), expected 00 00 08 0N)")
        }
        let rank = Int(magic[3])
        guard (1...4).contains(rank) else {
            throw TandemError(.badInput, "\(path): IDX header says \(rank) dimensions (expected 1 to 4)")
        }
        var raw = [UInt8](repeating: 0, count: 4 * rank)
        try readExactly(file, into: &raw, count: 4 * rank, path: path, what: "the IDX dimensions")
        let dimensions = (0..<rank).map { i -> Int in
            raw[4 * i..<4 * i + 4].reduce(0) { $0 << 8 | Int($1) }
        }
        let total = dimensions.reduce(1) { $0.multipliedReportingOverflow(by: $1).overflow ? Int.max : $0 * $1 }
        let headerSize = 4 + 4 * rank
        if let bound = expectedUpperBound, total > bound - headerSize {
            throw TandemError(.badInput, "\(path): header dimensions \(dimensions.map(String.init).joined(separator: "×")) need \(total) bytes but the file holds \(max(bound - headerSize, 0))")
        }
        guard total <= 1 << 34 else {
            throw TandemError(.badInput, "\(path): header dimensions \(dimensions.map(String.init).joined(separator: "×")) are absurd (\(total) bytes)")
        }
        let bytes = try [UInt8](unsafeUninitializedCapacity: total) { buffer, initialized in
            var done = 0
            while done < total {
                let chunk = Int32(min(total - done, 1 << 30))
                let got = gzread(file, buffer.baseAddress! + done, UInt32(chunk))
                if got < 0 { throw gzipError(file, path: path) }
                if got == 0 { break }
                done += Int(got)
            }
            initialized = done
            if done < total {
                throw TandemError(.badInput, "\(path): truncated: header promises \(total) data bytes, file has \(done)")
            }
        }
        return Contents(dimensions: dimensions, bytes: bytes)
    }

    /// Reads an images file and a labels file and checks they describe the same examples.
    public static func readLabelled(images imagesPath: String, labels labelsPath: String) throws -> Examples {
        let images = try read(path: imagesPath)
        let labels = try read(path: labelsPath)
        guard images.dimensions.count >= 2 else {
            throw TandemError(.badInput, "\(imagesPath): expected an images file (3 dimensions), found \(images.dimensions.count)")
        }
        guard labels.dimensions.count == 1 else {
            throw TandemError(.badInput, "\(labelsPath): expected a labels file (1 dimension), found \(labels.dimensions.count)")
        }
        guard images.count == labels.count else {
            throw TandemError(.badInput, "\(imagesPath) has \(images.count) images but \(labelsPath) has \(labels.count) labels")
        }
        return try Examples(features: .bytes(images.bytes), featureCount: images.rowLength, targets: labels.bytes.map(Float.init))
    }

    /// The most bytes the file can yield: its size if plain, the gzip trailer's ISIZE if compressed (exact below
    /// 4 GiB, which is all IDX data sets in practice). nil when it cannot be told.
    private static func uncompressedSizeBound(path: String) throws -> Int? {
        guard let handle = fopen(path, "rb") else {
            throw TandemError(.io, "\(path): cannot open (\(String(cString: strerror(errno))))")
        }
        defer { fclose(handle) }
        var head = [UInt8](repeating: 0, count: 2)
        let headCount = fread(&head, 1, 2, handle)
        fseek(handle, 0, SEEK_END)
        let size = ftell(handle)
        guard headCount == 2, head[0] == 0x1f, head[1] == 0x8b else { return size }
        guard size >= 18 else { throw TandemError(.badInput, "\(path): truncated gzip file (\(size) bytes)") }
        fseek(handle, -4, SEEK_END)
        var trailer = [UInt8](repeating: 0, count: 4)
        guard fread(&trailer, 1, 4, handle) == 4 else { return nil }
        let isize = trailer.reversed().reduce(0) { $0 << 8 | Int($1) }
        // ISIZE is modulo 2^32; a larger file cannot be bounded by it. A corrupt trailer can claim up to 4 GiB:
        // deflate expands at most 1032:1, so the compressed size bounds what the data can really hold.
        return size > 1 << 31 ? nil : min(isize, size * maximumDeflateRatio)
    }

    /// Deflate's largest expansion (a long run of one byte): 1032 output bytes per input byte.
    static let maximumDeflateRatio = 1032

    private static func readExactly(_ file: gzFile, into buffer: inout [UInt8], count: Int, path: String, what: String) throws {
        let got = gzread(file, &buffer, UInt32(count))
        if got < 0 { throw gzipError(file, path: path) }
        guard got == count else { throw TandemError(.badInput, "\(path): file ends inside \(what)") }
    }

    private static func gzipError(_ file: gzFile, path: String) -> TandemError {
        var code: Int32 = 0
        let message = gzerror(file, &code).map { String(cString: $0) } ?? "unknown error"
        return TandemError(.badInput, "\(path): corrupt or truncated gzip data (\(message))")
    }
}

private extension String {
    init(format2 byte: UInt8) {
        let digits = Array("0123456789abcdef")
        self = String([digits[Int(byte >> 4)], digits[Int(byte & 15)]])
    }
}
