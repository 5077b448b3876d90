import Foundation
import TandemCore
import TandemData
import TandemTestSupport
import Testing

@Suite struct IDXReaderTests {
    static let folder = "/usr/share/datasets/fashion-mnist/"

    @Test func fashionMNISTTrainingSet() throws {
        let images = try IDXReader.read(path: Self.folder + "train-images-idx3-ubyte.gz")
        #expect(images.dimensions == [60_000, 28, 28])
        #expect(images.count == 60_000 && images.rowLength == 784)
        #expect(images.bytes.count == 60_000 * 784)
        // Fashion-MNIST's mean training pixel is 0.2860 · 255 ≈ 72.94.
        let mean = Double(images.bytes.reduce(0) { $0 + Int($1) }) / Double(images.bytes.count)
        #expect(abs(mean - 72.94) < 0.1)

        let labels = try IDXReader.read(path: Self.folder + "train-labels-idx1-ubyte.gz")
        #expect(labels.dimensions == [60_000])
        #expect(labels.rowLength == 1)
        #expect(Array(labels.bytes.prefix(12)) == [9, 0, 0, 3, 0, 2, 7, 2, 5, 5, 0, 9])
        var histogram = [Int](repeating: 0, count: 256)
        for label in labels.bytes { histogram[Int(label)] += 1 }
        #expect(Array(histogram[0..<10]) == [Int](repeating: 6_000, count: 10))
    }

    @Test func fashionMNISTTestSetAsExamples() throws {
        let examples = try IDXReader.readLabelled(images: Self.folder + "t10k-images-idx3-ubyte.gz",
                                                  labels: Self.folder + "t10k-labels-idx1-ubyte.gz")
        #expect(examples.count == 10_000 && examples.featureCount == 784 && examples.targetWidth == 1)
        #expect(examples.classCount == 10)
        #expect(Array(examples.targets.prefix(8)) == [9, 2, 1, 1, 6, 1, 4, 6])
        guard case .bytes(let bytes) = examples.features else { Issue.record("IDX images should stay bytes"); return }
        #expect(bytes.count == 10_000 * 784)
    }

    @Test func smallPlainAndCompressedFiles() throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let data: [UInt8] = (0..<24).map { UInt8($0 * 10) }
        let plain = try directory.write("cube.idx", idxBytes(dimensions: [2, 3, 4], data: data))
        let contents = try IDXReader.read(path: plain)
        #expect(contents.dimensions == [2, 3, 4] && contents.bytes == data && contents.rowLength == 12)

        let compressed = try gzip(try directory.write("again.idx", idxBytes(dimensions: [2, 3, 4], data: data)))
        let fromGzip = try IDXReader.read(path: compressed)
        #expect(fromGzip.dimensions == [2, 3, 4] && fromGzip.bytes == data)

        // Trailing bytes beyond what the header promises are ignored.
        let longer = try directory.write("longer.idx", idxBytes(dimensions: [3], data: [7, 8, 9, 10, 11]))
        #expect(try IDXReader.read(path: longer).bytes == [7, 8, 9])
    }

    @Test func missingFile() throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let path = directory.file("nowhere.idx.gz")
        expectTandemError(.io, mentioning: [path]) { _ = try IDXReader.read(path: path) }
    }

    @Test func wrongMagic() throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let floats = try directory.write("floats.idx", idxBytes(dimensions: [2], data: [0, 0, 0, 0, 0, 0, 0, 0], magic: [0, 0, 0x0D, 1]))
        expectTandemError(.badInput, mentioning: [floats, "magic", "0d"]) { _ = try IDXReader.read(path: floats) }
        let text = try directory.write("text.idx", text: "this is not an IDX file at all")
        expectTandemError(.badInput, mentioning: [text, "magic"]) { _ = try IDXReader.read(path: text) }
        let rank = try directory.write("rank5.idx", idxBytes(dimensions: [1, 1, 1, 1, 1], data: [1]))
        expectTandemError(.badInput, mentioning: [rank, "5 dimensions"]) { _ = try IDXReader.read(path: rank) }
        let short = try directory.write("short.idx", [0, 0])
        expectTandemError(.badInput, mentioning: [short, "header"]) { _ = try IDXReader.read(path: short) }
    }

    @Test func truncatedData() throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        // Header promises 10 × 2 × 2 = 40 bytes; the file has 20.
        let plain = try directory.write("short-data.idx", idxBytes(dimensions: [10, 2, 2], data: [UInt8](repeating: 1, count: 20)))
        expectTandemError(.badInput, mentioning: [plain, "40"]) { _ = try IDXReader.read(path: plain) }
        let inHeader = try directory.write("short-header.idx", Array(idxBytes(dimensions: [10, 2, 2], data: []).prefix(9)))
        expectTandemError(.badInput, mentioning: [inHeader]) { _ = try IDXReader.read(path: inHeader) }
    }

    @Test(arguments: ["train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz"])
    func gzipCutInHalf(_ name: String) throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let original = try [UInt8](Data(contentsOf: URL(fileURLWithPath: Self.folder + name)))
        let path = try directory.write("half-" + name, Array(original.prefix(original.count / 2)))
        expectTandemError(.badInput, mentioning: [path]) { _ = try IDXReader.read(path: path) }
    }

    @Test func corruptGzip() throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let original = try [UInt8](Data(contentsOf: URL(fileURLWithPath: Self.folder + "t10k-labels-idx1-ubyte.gz")))
        var flipped = original
        flipped[original.count / 2] ^= 0x01
        let flippedPath = try directory.write("flipped.gz", flipped)
        expectTandemError(.badInput, mentioning: [flippedPath, "gzip"]) { _ = try IDXReader.read(path: flippedPath) }

        var badChecksum = original
        badChecksum[original.count - 6] ^= 0xFF  // inside the CRC-32 of the trailer
        let checksumPath = try directory.write("checksum.gz", badChecksum)
        expectTandemError(.badInput, mentioning: [checksumPath]) { _ = try IDXReader.read(path: checksumPath) }

        // gzip magic followed by garbage.
        let garbage = try directory.write("garbage.gz", [0x1F, 0x8B, 8, 0] + [UInt8](repeating: 0xAB, count: 60))
        expectTandemError(.badInput, mentioning: [garbage]) { _ = try IDXReader.read(path: garbage) }
        let tiny = try directory.write("tiny.gz", [0x1F, 0x8B, 8])
        expectTandemError(.badInput, mentioning: [tiny]) { _ = try IDXReader.read(path: tiny) }
    }

    @Test func absurdDimensionsAreRejectedBeforeAllocating() throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        // 2^31 × 28 × 28 images would be 1.7 TB.
        let plain = try directory.write("absurd.idx", idxBytes(dimensions: [1 << 31, 28, 28], data: [UInt8](repeating: 0, count: 784)))
        expectTandemError(.badInput, mentioning: [plain, "2147483648×28×28"]) { _ = try IDXReader.read(path: plain) }

        let compressed = try gzip(try directory.write("absurd2.idx", idxBytes(dimensions: [1 << 31, 28, 28], data: [UInt8](repeating: 0, count: 784))))
        expectTandemError(.badInput, mentioning: [compressed, "2147483648×28×28"]) { _ = try IDXReader.read(path: compressed) }

        // Dimensions whose product overflows Int.
        let overflow = try directory.write("overflow.idx", idxBytes(dimensions: [.max, .max, .max, .max], data: [1, 2, 3]))
        expectTandemError(.badInput, mentioning: [overflow]) { _ = try IDXReader.read(path: overflow) }
    }

    @Test func imageAndLabelCountMismatch() throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let images = try directory.write("images.idx", idxBytes(dimensions: [3, 2, 2], data: [UInt8](repeating: 5, count: 12)))
        let labels = try directory.write("labels.idx", idxBytes(dimensions: [4], data: [0, 1, 2, 3]))
        expectTandemError(.badInput, mentioning: [images, labels, "3", "4"]) {
            _ = try IDXReader.readLabelled(images: images, labels: labels)
        }
        // Files swapped: a 1-d "images" file and a 3-d "labels" file.
        let cube = try directory.write("cube.idx", idxBytes(dimensions: [4, 1, 1], data: [0, 1, 2, 3]))
        expectTandemError(.badInput, mentioning: [cube]) { _ = try IDXReader.readLabelled(images: images, labels: cube) }
        expectTandemError(.badInput, mentioning: [labels]) { _ = try IDXReader.readLabelled(images: labels, labels: labels) }

        let matching = try directory.write("labels3.idx", idxBytes(dimensions: [3], data: [2, 0, 1]))
        let examples = try IDXReader.readLabelled(images: images, labels: matching)
        #expect(examples.count == 3 && examples.featureCount == 4 && examples.targets == [2, 0, 1])
    }
}
