import Foundation
import TandemCore
import TandemData
import TandemTestSupport
import Testing

@Suite struct PNGImageTests {
    @Test func readsGrayPNG() throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let pixels: [UInt8] = (0..<15).map { UInt8($0 * 17) }
        let path = try directory.write("gray.png", pngBytes(width: 5, height: 3, channels: 1, samples: pixels))
        let image = try GrayImage.readPNG(path: path)
        #expect(image.width == 5 && image.height == 3)
        #expect(image.pixels == pixels)
    }

    @Test func convertsColourToGray() throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        // Neutral colours (r = g = b) keep their level.
        let levels: [UInt8] = [0, 64, 128, 255]
        let rgb = levels.flatMap { [$0, $0, $0] }
        let path = try directory.write("rgb.png", pngBytes(width: 2, height: 2, channels: 3, samples: rgb))
        let image = try GrayImage.readPNG(path: path)
        #expect(image.width == 2 && image.height == 2)
        for (got, expected) in zip(image.pixels, levels) { #expect(abs(Int(got) - Int(expected)) <= 1) }
        // Pure green is brighter than pure blue in any luminance formula.
        let colours = try directory.write("rgb2.png", pngBytes(width: 2, height: 1, channels: 3, samples: [0, 255, 0, 0, 0, 255]))
        let gray = try GrayImage.readPNG(path: colours)
        #expect(gray.pixels[0] > gray.pixels[1])
    }

    @Test func largerImageSpanningSeveralStoredBlocks() throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let pixels: [UInt8] = (0..<(300 * 280)).map { UInt8(truncatingIfNeeded: $0 &* 31 >> 3) }
        let path = try directory.write("big.png", pngBytes(width: 300, height: 280, channels: 1, samples: pixels))
        let image = try GrayImage.readPNG(path: path)
        #expect(image.width == 300 && image.height == 280 && image.pixels == pixels)
    }

    @Test func notAPNG() throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let text = try directory.write("photo.png", text: "definitely not a PNG, just some text")
        expectTandemError(.badInput, mentioning: [text]) { _ = try GrayImage.readPNG(path: text) }
        let missing = directory.file("missing.png")
        expectTandemError(mentioning: [missing]) { _ = try GrayImage.readPNG(path: missing) }
        // A real PNG cut inside its image data.
        let whole = pngBytes(width: 20, height: 20, channels: 1, samples: [UInt8](repeating: 9, count: 400))
        let cut = try directory.write("cut.png", Array(whole.prefix(whole.count / 2)))
        expectTandemError(.badInput, mentioning: [cut]) { _ = try GrayImage.readPNG(path: cut) }
    }

    @Test func shrinkingAveragesBoxes() {
        let image = GrayImage(width: 4, height: 4, pixels: [
            0, 10, 100, 100,
            20, 30, 100, 101,
            1, 1, 200, 0,
            1, 2, 0, 0,
        ])
        let small = image.resized(width: 2, height: 2)
        #expect(small.width == 2 && small.height == 2)
        #expect(small.pixels == [15, 100, 1, 50])  // (0+10+20+30)/4, 401/4 → 100, 5/4 → 1, 200/4
    }

    @Test func unevenBoxesAndEnlarging() {
        // 3 → 2: output 0 covers source 0, output 1 covers sources 1...2.
        let row = GrayImage(width: 3, height: 1, pixels: [90, 10, 20])
        #expect(row.resized(width: 2, height: 1).pixels == [90, 15])
        // Enlarging repeats the nearest source pixel.
        let tiny = GrayImage(width: 2, height: 2, pixels: [1, 2, 3, 4])
        let large = tiny.resized(width: 4, height: 4)
        #expect(large.pixels == [1, 1, 2, 2, 1, 1, 2, 2, 3, 3, 4, 4, 3, 3, 4, 4])
        #expect(tiny.resized(width: 2, height: 2).pixels == tiny.pixels)
        let constant = GrayImage(width: 56, height: 56, pixels: [UInt8](repeating: 77, count: 56 * 56))
        let fashion = constant.resized(width: 28, height: 28)
        #expect(fashion.pixels == [UInt8](repeating: 77, count: 784))
    }
}
