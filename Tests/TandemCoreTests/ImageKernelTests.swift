import Testing
import TandemCore

/// The image kernels' fast paths against plain loops written from their definitions.
@Suite struct ImageKernelTests {
    /// A valid convolution by its definition, in Double: out[s, y, x, f] = bias[f] + Σ image · kernel, then ReLU.
    static func referenceConvolution(_ images: [Float], _ g: WindowGeometry, samples: Int, kernel: [Float], bias: [Float],
                                     filters: Int, relu: Bool) -> [Double] {
        var out = [Double](repeating: 0, count: samples * g.outputPixels * filters)
        for s in 0..<samples {
            for oy in 0..<g.outputHeight {
                for ox in 0..<g.outputWidth {
                    for f in 0..<filters {
                        var sum = Double(bias[f])
                        for ky in 0..<g.windowHeight {
                            for kx in 0..<g.windowWidth {
                                let iy = oy * g.strideY - g.padTop + ky, ix = ox * g.strideX - g.padLeft + kx
                                guard iy >= 0, iy < g.inputHeight, ix >= 0, ix < g.inputWidth else { continue }
                                for c in 0..<g.channels {
                                    let value = images[((s * g.inputHeight + iy) * g.inputWidth + ix) * g.channels + c]
                                    sum += Double(value) * Double(kernel[((ky * g.windowWidth + kx) * g.channels + c) * filters + f])
                                }
                            }
                        }
                        out[((s * g.outputHeight + oy) * g.outputWidth + ox) * filters + f] = relu ? max(sum, 0) : sum
                    }
                }
            }
        }
        return out
    }

    /// The hand product reads windows in place (valid padding, any stride, one row of outputs per call, widths that
    /// are and are not multiples of its four-row step, and below four) and from unfolded rows ("same" padding).
    @Test(arguments: [(28, 28, 1, 3, 1, 32, true), (9, 7, 3, 3, 2, 16, false), (5, 3, 2, 2, 1, 8, true), (6, 6, 1, 3, 1, 8, true)])
    func shallowProductMatchesTheDefinition(height: Int, width: Int, channels: Int, window: Int, stride: Int, filters: Int, relu: Bool) {
        let samples = 2
        let images = testValues(samples * height * width * channels, seed: 1)
        for padding in [WindowGeometry.Padding.valid, .same] {
            let g = WindowGeometry(input: (height, width, channels), window: (window, window), strides: (stride, stride), padding: padding)!
            let kernel = testValues(g.windowCount * filters, seed: 2), bias = testValues(filters, seed: 3)
            var out = [Float](repeating: .nan, count: samples * g.outputPixels * filters)
            let offsets = WindowRows.offsets(g, imageWidth: padding == .valid ? width : nil)
            var columns = [Float](repeating: 0, count: g.outputPixels * g.windowCount)
            images.withUnsafeBufferPointer { image in
                offsets.withUnsafeBufferPointer { offsets in
                    for s in 0..<samples {
                        let sample = image.baseAddress! + s * g.inputCount
                        if padding == .valid {
                            for oy in 0..<g.outputHeight {
                                let rows = WindowRows(start: sample + oy * stride * width * channels, rowStride: stride * channels, offsets: offsets)
                                out.withUnsafeMutableBufferPointer {
                                    shallowProductBiasReLU(rows, rows: g.outputWidth, kernel, columns: filters, bias: bias, relu: relu,
                                                           into: $0.baseAddress! + (s * g.outputPixels + oy * g.outputWidth) * filters)
                                }
                            }
                        } else {
                            columns.withUnsafeMutableBufferPointer { im2col(sample, g, into: $0.baseAddress!) }
                            columns.withUnsafeBufferPointer { unfolded in
                                out.withUnsafeMutableBufferPointer {
                                    shallowProductBiasReLU(WindowRows(start: unfolded.baseAddress!, rowStride: g.windowCount, offsets: offsets),
                                                           rows: g.outputPixels, kernel, columns: filters, bias: bias, relu: relu,
                                                           into: $0.baseAddress! + s * g.outputPixels * filters)
                                }
                            }
                        }
                    }
                }
            }
            let expected = Self.referenceConvolution(images, g, samples: samples, kernel: kernel, bias: bias, filters: filters, relu: relu)
            let worst = zip(out, expected).map { abs(Double($0) - $1) }.max()!
            #expect(worst < 1e-5, "\(padding) \(height)×\(width)×\(channels), window \(window), stride \(stride): max error \(worst)")
        }
    }

    /// 2 × 2 tiling pooling (its own loop) gives what the definition gives: the first maximum of each window and its
    /// index, odd sizes dropping the last row and column.
    @Test(arguments: [(26, 26, 32), (11, 11, 64), (4, 6, 8)])
    func twoByTwoMaxPoolingMatchesTheDefinition(height: Int, width: Int, channels: Int) {
        let samples = 2
        let g = WindowGeometry(input: (height, width, channels), window: (2, 2), strides: (2, 2), padding: .valid)!
        #expect(g.isTwoByTwoTiling)
        // Values on a coarse grid, so that windows hold ties and the first maximum must win.
        var images = testValues(samples * g.inputCount, seed: 4).map { ($0 * 4).rounded() }
        images[0] = 3; images[channels] = 3
        var pooled = [Float](repeating: .nan, count: samples * g.outputPixels * channels)
        var argmax = [Int32](repeating: -1, count: pooled.count)
        maxPoolForward(images, g, samples: samples, output: &pooled, argmax: &argmax)
        for s in 0..<samples {
            for oy in 0..<g.outputHeight {
                for ox in 0..<g.outputWidth {
                    for c in 0..<channels {
                        var best = -Float.infinity, at = -1
                        for (dy, dx) in [(0, 0), (0, 1), (1, 0), (1, 1)] {
                            let p = ((2 * oy + dy) * width + 2 * ox + dx) * channels + c
                            if images[s * g.inputCount + p] > best { best = images[s * g.inputCount + p]; at = p }
                        }
                        let o = s * g.outputPixels * channels + (oy * g.outputWidth + ox) * channels + c
                        #expect(pooled[o] == best && argmax[o] == Int32(at), "sample \(s) (\(oy), \(ox)) channel \(c)")
                    }
                }
            }
        }
    }
}
