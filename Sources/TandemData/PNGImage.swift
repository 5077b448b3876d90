import CPNG
import Foundation
import TandemCore

/// Loads a PNG (any bit depth, gray, palette or colour, with or without alpha) as 8-bit gray through libpng's
/// simplified API, and resizes it to what a model expects.
public struct GrayImage: Sendable {
    public let width: Int
    public let height: Int
    public let pixels: [UInt8]

    public init(width: Int, height: Int, pixels: [UInt8]) {
        self.width = width
        self.height = height
        self.pixels = pixels
    }

    public static func readPNG(path: String) throws -> GrayImage {
        var image = png_image()
        image.version = UInt32(PNG_IMAGE_VERSION)
        guard png_image_begin_read_from_file(&image, path) != 0 else {
            throw TandemError(.badInput, "\(path): not a readable PNG (\(message(of: image)))")
        }
        defer { png_image_free(&image) }
        guard image.width > 0, image.height > 0, Int(image.width) * Int(image.height) <= 1 << 28 else {
            throw TandemError(.badInput, "\(path): PNG of \(image.width)×\(image.height) pixels is not supported")
        }
        // The header alone sets the size allocated below: a damaged or hostile header in a small file must not
        // make us allocate for an image the file cannot hold (deflate expands at most 1032:1; one bit per pixel).
        let fileBytes = (try? FileManager.default.attributesOfItem(atPath: path)[.size] as? Int) ?? nil
        if let fileBytes, Int(image.width) * Int(image.height) > SaturatingSize.product(fileBytes, 1032, 8) {
            throw TandemError(.badInput, "\(path): PNG header says \(image.width)×\(image.height) pixels, more than a file of \(fileBytes) bytes can hold")
        }
        image.format = UInt32(PNG_FORMAT_GRAY)
        let width = Int(image.width), height = Int(image.height)
        var pixels = [UInt8](repeating: 0, count: width * height)
        guard png_image_finish_read(&image, nil, &pixels, 0, nil) != 0 else {
            throw TandemError(.badInput, "\(path): corrupt PNG (\(message(of: image)))")
        }
        return GrayImage(width: width, height: height, pixels: pixels)
    }

    private static func message(of image: png_image) -> String {
        withUnsafeBytes(of: image.message) { raw in
            String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
        }
    }

    /// Box-filter resize: each output pixel is the mean of the source pixels under it (the nearest one when
    /// enlarging), which keeps thin strokes when a photo is shrunk to 28×28.
    public func resized(width newWidth: Int, height newHeight: Int) -> GrayImage {
        if newWidth == width && newHeight == height { return self }
        var output = [UInt8](repeating: 0, count: newWidth * newHeight)
        for y in 0..<newHeight {
            let y0 = y * height / newHeight, y1 = max((y + 1) * height / newHeight, y0 + 1)
            for x in 0..<newWidth {
                let x0 = x * width / newWidth, x1 = max((x + 1) * width / newWidth, x0 + 1)
                var sum = 0
                for sy in y0..<y1 { for sx in x0..<x1 { sum += Int(pixels[sy * width + sx]) } }
                output[y * newWidth + x] = UInt8(sum / ((y1 - y0) * (x1 - x0)))
            }
        }
        return GrayImage(width: newWidth, height: newHeight, pixels: output)
    }
}
