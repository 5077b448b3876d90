// Kernels of the image layers (convolution, pooling, dropout) on NHWC data, shared by the layers of TandemNN and the
// gradient tape's operations, so both compute the same thing. Like Kernels.swift: preallocated pointers, outputs
// written first, backward kernels accumulate (`+=`).

/// How a window slides over an image: the sizes of a convolution or pooling, its strides and padding, and the
/// output size they give (Keras's rules: "valid" drops what does not fit, "same" pads to ⌈input / stride⌉, the odd
/// pixel of padding at the bottom and right, as TensorFlow does).
public struct WindowGeometry: Sendable, Equatable {
    public enum Padding: String, Sendable, Codable { case valid, same }

    public let inputHeight: Int, inputWidth: Int, channels: Int
    public let windowHeight: Int, windowWidth: Int
    public let strideY: Int, strideX: Int
    public let padTop: Int, padLeft: Int
    public let outputHeight: Int, outputWidth: Int

    /// nil when the window does not fit the image ("valid" with a window larger than the input).
    public init?(input: (height: Int, width: Int, channels: Int), window: (height: Int, width: Int),
                 strides: (y: Int, x: Int), padding: Padding) {
        guard input.height > 0, input.width > 0, input.channels > 0, window.height > 0, window.width > 0,
              strides.y > 0, strides.x > 0 else { return nil }
        inputHeight = input.height
        inputWidth = input.width
        channels = input.channels
        windowHeight = window.height
        windowWidth = window.width
        strideY = strides.y
        strideX = strides.x
        switch padding {
        case .valid:
            guard input.height >= window.height, input.width >= window.width else { return nil }
            outputHeight = (input.height - window.height) / strides.y + 1
            outputWidth = (input.width - window.width) / strides.x + 1
            padTop = 0
            padLeft = 0
        case .same:
            outputHeight = (input.height + strides.y - 1) / strides.y
            outputWidth = (input.width + strides.x - 1) / strides.x
            padTop = max((outputHeight - 1) * strides.y + window.height - input.height, 0) / 2
            padLeft = max((outputWidth - 1) * strides.x + window.width - input.width, 0) / 2
        }
    }

    public var inputCount: Int { inputHeight * inputWidth * channels }
    public var outputPixels: Int { outputHeight * outputWidth }
    /// 2 × 2 windows, stride 2, no padding: each pixel in at most one window (the last row or column of an odd size
    /// in none), the pooling of nearly every convolutional network.
    public var isTwoByTwoTiling: Bool {
        windowHeight == 2 && windowWidth == 2 && strideY == 2 && strideX == 2 && padTop == 0 && padLeft == 0
            && outputHeight == inputHeight / 2 && outputWidth == inputWidth / 2
    }

    /// Values under one window position: a row of the im2col matrix.
    public var windowCount: Int { windowHeight * windowWidth * channels }
}

/// Unfolds one image [H, W, C] into the rows of a matrix [outputPixels, windowH · windowW · C], one row per output
/// pixel, columns in (ky, kx, c) order — a Keras kernel [kh, kw, C, filters] read as [kh·kw·C, filters] — so the
/// convolution is one GEMM. Padding reads as zeros.
public func im2col(_ image: UnsafePointer<Float>, _ g: WindowGeometry, into columns: UnsafeMutablePointer<Float>) {
    let c = g.channels, rowLength = g.windowCount, run = g.windowWidth * c
    for oy in 0..<g.outputHeight {
        for ox in 0..<g.outputWidth {
            var destination = columns + (oy * g.outputWidth + ox) * rowLength
            let ix0 = ox * g.strideX - g.padLeft
            let columnsInside = ix0 >= 0 && ix0 + g.windowWidth <= g.inputWidth
            for ky in 0..<g.windowHeight {
                let iy = oy * g.strideY - g.padTop + ky
                let rowInside = iy >= 0 && iy < g.inputHeight
                if rowInside && columnsInside {
                    // The window's row is one run of windowWidth · channels floats in NHWC.
                    copyFloats(image + (iy * g.inputWidth + ix0) * c, to: destination, count: run)
                    destination += run
                    continue
                }
                for kx in 0..<g.windowWidth {
                    let ix = ix0 + kx
                    if rowInside && ix >= 0 && ix < g.inputWidth {
                        copyFloats(image + (iy * g.inputWidth + ix) * c, to: destination, count: c)
                    } else {
                        destination.update(repeating: 0, count: c)
                    }
                    destination += c
                }
            }
        }
    }
}

/// A copy that does not pay a library call for the few floats of a one-channel window row.
@inline(__always)
func copyFloats(_ source: UnsafePointer<Float>, to destination: UnsafeMutablePointer<Float>, count: Int) {
    if count >= 32 {
        destination.update(from: source, count: count)
        return
    }
    var i = 0
    while i + 4 <= count {
        UnsafeMutableRawPointer(destination + i).storeBytes(of: UnsafeRawPointer(source + i).loadUnaligned(as: SIMD4<Float>.self), as: SIMD4<Float>.self)
        i += 4
    }
    while i < count { destination[i] = source[i]; i += 1 }
}

/// The adjoint of `im2col`: adds each row of `columns` back onto the pixels it was read from (`image` += ...).
public func col2imAccumulate(_ columns: UnsafePointer<Float>, _ g: WindowGeometry, into image: UnsafeMutablePointer<Float>) {
    let c = g.channels, rowLength = g.windowCount
    for oy in 0..<g.outputHeight {
        for ox in 0..<g.outputWidth {
            var source = columns + (oy * g.outputWidth + ox) * rowLength
            for ky in 0..<g.windowHeight {
                let iy = oy * g.strideY - g.padTop + ky
                let rowInside = iy >= 0 && iy < g.inputHeight
                for kx in 0..<g.windowWidth {
                    let ix = ox * g.strideX - g.padLeft + kx
                    if rowInside && ix >= 0 && ix < g.inputWidth {
                        let pixel = image + (iy * g.inputWidth + ix) * c
                        for k in 0..<c { pixel[k] += source[k] }
                    }
                    source += c
                }
            }
        }
    }
}

/// Samples of one convolution GEMM: enough that the GEMM is large, few enough that the unfolded chunk
/// (`windowCount × outputPixels` floats per sample) stays in a core's L2 cache between im2col and the GEMM.
public func convolutionChunkSamples(_ g: WindowGeometry, maxSamples: Int) -> Int {
    let bytesPerSample = max(g.outputPixels * g.windowCount * MemoryLayout<Float>.size, 1)
    return max(1, min(maxSamples, (512 * 1024) / bytesPerSample))
}

/// Max pooling of `samples` images: output[p, c] = max over the window; `argmax` keeps, per output value, the index
/// within its sample's input of the value chosen (the first of equal ones), for the backward pass. A window with no
/// pixel inside the image ("same" padding at a corner cannot give one) is impossible by construction.
public func maxPoolForward(_ input: UnsafePointer<Float>, _ g: WindowGeometry, samples: Int,
                           output: UnsafeMutablePointer<Float>, argmax: UnsafeMutablePointer<Int32>) {
    let c = g.channels, inCount = g.inputCount, outCount = g.outputPixels * c
    let lanes = SIMD8<Int32>(0, 1, 2, 3, 4, 5, 6, 7)
    if g.isTwoByTwoTiling && c % 8 == 0 {
        maxPoolTwoByTwoForward(input, g, samples: samples, output: output, argmax: argmax)
        return
    }
    for s in 0..<samples {
        let image = input + s * inCount, out = output + s * outCount, index = argmax + s * outCount
        for oy in 0..<g.outputHeight {
            let y0 = max(oy * g.strideY - g.padTop, 0), y1 = min(oy * g.strideY - g.padTop + g.windowHeight, g.inputHeight)
            for ox in 0..<g.outputWidth {
                let x0 = max(ox * g.strideX - g.padLeft, 0), x1 = min(ox * g.strideX - g.padLeft + g.windowWidth, g.inputWidth)
                let o = out + (oy * g.outputWidth + ox) * c, at = index + (oy * g.outputWidth + ox) * c
                // Eight channels at a time in registers (explicit vectors: the compiler would not vectorize the
                // select of a value and its index), the remainder one by one.
                var k = 0
                while k + 8 <= c {
                    var best = SIMD8<Float>(repeating: -.infinity), where_ = SIMD8<Int32>(repeating: 0)
                    var first = true
                    for iy in y0..<y1 {
                        for ix in x0..<x1 {
                            let p = (iy * g.inputWidth + ix) * c + k
                            let value = UnsafeRawPointer(image + p).loadUnaligned(as: SIMD8<Float>.self)
                            let position = SIMD8<Int32>(repeating: Int32(truncatingIfNeeded: p)) &+ lanes
                            if first {
                                best = value
                                where_ = position
                                first = false
                            } else {
                                let larger = value .> best
                                best.replace(with: value, where: larger)
                                where_.replace(with: position, where: larger)
                            }
                        }
                    }
                    UnsafeMutableRawPointer(o + k).storeBytes(of: best, as: SIMD8<Float>.self)
                    UnsafeMutableRawPointer(at + k).storeBytes(of: where_, as: SIMD8<Int32>.self)
                    k += 8
                }
                while k < c {
                    var best = image[(y0 * g.inputWidth + x0) * c + k], position = (y0 * g.inputWidth + x0) * c + k
                    for iy in y0..<y1 {
                        for ix in x0..<x1 {
                            let p = (iy * g.inputWidth + ix) * c + k
                            if image[p] > best { best = image[p]; position = p }
                        }
                    }
                    o[k] = best
                    at[k] = Int32(truncatingIfNeeded: position)
                    k += 1
                }
            }
        }
    }
}

/// `maxPoolForward` for the common case, 2 × 2 windows with stride 2 and no padding on a multiple of 8 channels:
/// the four values of a window are four loads at fixed distances, with no bounds to work out per window.
func maxPoolTwoByTwoForward(_ input: UnsafePointer<Float>, _ g: WindowGeometry, samples: Int,
                            output: UnsafeMutablePointer<Float>, argmax: UnsafeMutablePointer<Int32>) {
    let c = g.channels, inCount = g.inputCount, outCount = g.outputPixels * c, imageRow = g.inputWidth * c
    let lanes = SIMD8<Int32>(0, 1, 2, 3, 4, 5, 6, 7)
    let right = SIMD8<Int32>(repeating: Int32(c)), below = SIMD8<Int32>(repeating: Int32(imageRow))
    let belowRight = right &+ below
    @inline(__always) func load(_ p: UnsafePointer<Float>) -> SIMD8<Float> { UnsafeRawPointer(p).loadUnaligned(as: SIMD8<Float>.self) }
    for s in 0..<samples {
        let image = input + s &* inCount, out = output + s &* outCount, index = argmax + s &* outCount
        for oy in 0..<g.outputHeight {
            for ox in 0..<g.outputWidth {
                let topLeft = 2 &* oy &* imageRow &+ 2 &* ox &* c, o = (oy &* g.outputWidth &+ ox) &* c
                for k in stride(from: 0, to: c, by: 8) {
                    let p = topLeft &+ k, at = image + p
                    let position = SIMD8<Int32>(repeating: Int32(truncatingIfNeeded: p)) &+ lanes
                    var best = load(at), where_ = position
                    let v1 = load(at + c), v2 = load(at + imageRow), v3 = load(at + imageRow + c)
                    var larger = v1 .> best
                    best.replace(with: v1, where: larger)
                    where_.replace(with: position &+ right, where: larger)
                    larger = v2 .> best
                    best.replace(with: v2, where: larger)
                    where_.replace(with: position &+ below, where: larger)
                    larger = v3 .> best
                    best.replace(with: v3, where: larger)
                    where_.replace(with: position &+ belowRight, where: larger)
                    UnsafeMutableRawPointer(out + (o &+ k)).storeBytes(of: best, as: SIMD8<Float>.self)
                    UnsafeMutableRawPointer(index + (o &+ k)).storeBytes(of: where_, as: SIMD8<Int32>.self)
                }
            }
        }
    }
}

/// dInput[argmax] = dOutput, per sample, and zero elsewhere; `positiveOnly`: only where the maximum is above zero
/// (the derivative of a ReLU before the pooling, taken over by it). dInput is written, not accumulated.
public func maxPoolBackward(_ dOutput: UnsafePointer<Float>, output: UnsafePointer<Float>, argmax: UnsafePointer<Int32>,
                            _ g: WindowGeometry, samples: Int, positiveOnly: Bool, dInput: UnsafeMutablePointer<Float>) {
    let inCount = g.inputCount, outCount = g.outputPixels * g.channels
    for s in 0..<samples {
        // One sample at a time: its input gradient is zeroed and scattered into while it is in cache.
        let dImage = dInput + s * inCount, dOut = dOutput + s * outCount, out = output + s * outCount, index = argmax + s * outCount
        dImage.update(repeating: 0, count: inCount)
        if positiveOnly {
            // A select, not a branch: whether a maximum is positive is a coin toss the predictor loses.
            for o in 0..<outCount { dImage[Int(index[o])] += out[o] > 0 ? dOut[o] : 0 }
        } else {
            for o in 0..<outCount { dImage[Int(index[o])] += dOut[o] }
        }
    }
}

/// Average pooling: the mean of the window's pixels inside the image (padding is not counted, as in Keras).
/// `backward`: false computes output from input; true spreads dOutput evenly back onto dInput (`+=`).
public func averagePool(_ g: WindowGeometry, samples: Int, backward: Bool,
                        image: UnsafeMutablePointer<Float>, pooled: UnsafeMutablePointer<Float>) {
    let c = g.channels, inCount = g.inputCount, outCount = g.outputPixels * c
    for s in 0..<samples {
        let picture = image + s * inCount, out = pooled + s * outCount
        for oy in 0..<g.outputHeight {
            let y0 = max(oy * g.strideY - g.padTop, 0), y1 = min(oy * g.strideY - g.padTop + g.windowHeight, g.inputHeight)
            for ox in 0..<g.outputWidth {
                let x0 = max(ox * g.strideX - g.padLeft, 0), x1 = min(ox * g.strideX - g.padLeft + g.windowWidth, g.inputWidth)
                let o = out + (oy * g.outputWidth + ox) * c
                let scale = 1 / Float((y1 - y0) * (x1 - x0))
                if !backward { o.update(repeating: 0, count: c) }
                for iy in y0..<y1 {
                    for ix in x0..<x1 {
                        let p = picture + (iy * g.inputWidth + ix) * c
                        if backward {
                            for k in 0..<c { p[k] += o[k] * scale }
                        } else {
                            for k in 0..<c { o[k] += p[k] }
                        }
                    }
                }
                if !backward { for k in 0..<c { o[k] *= scale } }
            }
        }
    }
}

/// The dropout decision for one value, a pure function of what identifies it — the run's seed, the layer, the epoch,
/// the example's index in the data set and the value's position in the example — so a replica draws the same mask
/// for an example whichever replica, thread or reduction group it lands on, and a run's parameters do not depend on
/// how many replicas share it. Returns the value's multiplier: 0, or 1 / (1 − rate).
public struct DropoutMask: Sendable {
    public let rate: Float
    private let threshold: UInt32
    private let keepScale: Float

    public init(rate: Float) {
        self.rate = rate
        threshold = UInt32(min(max(Double(rate), 0), 1) * Double(1 << 24))
        keepScale = rate < 1 ? 1 / (1 - rate) : 0
    }

    /// The key of one example's mask; `fill` draws its values.
    @inline(__always)
    public static func exampleKey(seed: UInt64, layer: UInt64, epoch: Int, example: Int) -> UInt64 {
        mix(mix(mix(seed ^ 0x6A09_E667_F3BC_C908 &+ layer) ^ UInt64(truncatingIfNeeded: epoch)) ^ UInt64(truncatingIfNeeded: example))
    }

    /// mask[i] = the multiplier of value i of the example `key` names, for i in 0..<count.
    @inline(__always)
    public func fill(_ mask: UnsafeMutablePointer<Float>, count: Int, key: UInt64) {
        for i in 0..<count {
            let bits = UInt32(truncatingIfNeeded: Self.mix(key &+ UInt64(i) &* 0x9E37_79B9_7F4A_7C15) >> 40)
            mask[i] = bits >= threshold ? keepScale : 0
        }
    }

    /// SplitMix64's finalizer: a bijection of 64-bit words whose outputs pass as independent uniform draws.
    @inline(__always)
    static func mix(_ value: UInt64) -> UInt64 {
        var z = value &+ 0x9E37_79B9_7F4A_7C15
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// sum += weights · value, in one rounding where the target CPU has FMA instructions (see Package.swift).
@inline(__always)
func multiplyAdd(_ sum: inout SIMD8<Float>, _ weights: SIMD8<Float>, _ value: Float) {
    #if FUSED_MULTIPLY_ADD
    sum.addProduct(weights, SIMD8(repeating: value))
    #else
    sum += weights * value
    #endif
}

/// `multiplyAdd` on sixteen lanes. (Concrete overloads, not one generic function: generic SIMD code that the
/// optimizer does not specialize runs lane by lane, measured 15× slower.)
@inline(__always)
func multiplyAdd(_ sum: inout SIMD16<Float>, _ weights: SIMD16<Float>, _ value: Float) {
    #if FUSED_MULTIPLY_ADD
    sum.addProduct(weights, SIMD16(repeating: value))
    #else
    sum += weights * value
    #endif
}

/// Where the rows of a small product's left matrix are in memory: row r's value i is at
/// `start[r · rowStride + offsets[i]]`. Unfolded windows (im2col) have offsets 0, 1, 2, …; a "valid" window read in
/// place from an NHWC image has, per window row, `windowWidth · channels` consecutive offsets, an image row apart —
/// so a convolution can skip im2col.
public struct WindowRows {
    public let start: UnsafePointer<Float>
    public let rowStride: Int
    public let offsets: UnsafeBufferPointer<Int32>

    public init(start: UnsafePointer<Float>, rowStride: Int, offsets: UnsafeBufferPointer<Int32>) {
        self.start = start
        self.rowStride = rowStride
        self.offsets = offsets
    }

    /// The offsets of one window's values from its top-left value, in the kernel's (ky, kx, c) order: consecutive
    /// (`imageWidth` nil, unfolded rows) or read in place from an image `imageWidth` pixels wide.
    public static func offsets(_ g: WindowGeometry, imageWidth: Int?) -> [Int32] {
        guard let imageWidth else { return (0..<g.windowCount).map { Int32($0) } }
        let run = g.windowWidth * g.channels
        return (0..<g.windowHeight).flatMap { ky in (0..<run).map { Int32(ky * imageWidth * g.channels + $0) } }
    }
}

/// c[r, f] = bias[f] + Σᵢ a[r, i] · b[i, f], then a ReLU when `relu`, for a product whose inner dimension is a few
/// values — a first convolution's windows (3 × 3 on one channel: 9) times its kernel [depth, columns]. There
/// OpenBLAS spends more on packing `a` and on a separate pass zeroing `c` than on the multiply-adds; this keeps the
/// kernel in L1, computes four rows at a time and writes each output once, bias and ReLU included.
/// `columns` must be a multiple of 8; `c` is dense, `columns` floats per row.
public func shallowProductBiasReLU(_ a: WindowRows, rows: Int, _ b: UnsafePointer<Float>, columns: Int,
                                   bias: UnsafePointer<Float>, relu: Bool, into c: UnsafeMutablePointer<Float>) {
    precondition(columns % 8 == 0, "shallowProductBiasReLU needs a multiple of 8 columns")
    @inline(__always) func load(_ p: UnsafePointer<Float>) -> SIMD8<Float> { UnsafeRawPointer(p).loadUnaligned(as: SIMD8<Float>.self) }
    @inline(__always) func store(_ v: SIMD8<Float>, _ p: UnsafeMutablePointer<Float>) {
        // A select of vectors, not the standard library's pointwiseMax (a generic call per store here) nor the
        // forms with a scalar operand (lane-by-lane loops).
        let zero = SIMD8<Float>()
        UnsafeMutableRawPointer(p).storeBytes(of: relu ? v.replacing(with: zero, where: v .< zero) : v, as: SIMD8<Float>.self)
    }
    let offsets = a.offsets.baseAddress!, depth = a.offsets.count
    var r = 0
    while r < rows {
        // Four rows at a time; the last four overlap the ones before when `rows` is not a multiple of four (they are
        // written again with the same values: outputs are not accumulated).
        let first = rows >= 4 ? min(r, rows - 4) : r
        let a0 = a.start + first &* a.rowStride, c0 = c + first &* columns
        if rows < 4 {
            for f in stride(from: 0, to: columns, by: 8) {
                var sum = load(bias + f)
                for i in 0..<depth { multiplyAdd(&sum, load(b + (i &* columns &+ f)), a0[Int(offsets[i])]) }
                store(sum, c0 + f)
            }
            r += 1
            continue
        }
        let a1 = a0 + a.rowStride, a2 = a1 + a.rowStride, a3 = a2 + a.rowStride
        let c1 = c0 + columns, c2 = c1 + columns, c3 = c2 + columns
        for f in stride(from: 0, to: columns, by: 8) {
            let start = load(bias + f)
            var s0 = start, s1 = start, s2 = start, s3 = start
            for i in 0..<depth {
                let weights = load(b + (i &* columns &+ f)), o = Int(offsets[i])
                multiplyAdd(&s0, weights, a0[o])
                multiplyAdd(&s1, weights, a1[o])
                multiplyAdd(&s2, weights, a2[o])
                multiplyAdd(&s3, weights, a3[o])
            }
            store(s0, c0 + f)
            store(s1, c1 + f)
            store(s2, c2 + f)
            store(s3, c3 + f)
        }
        r = first + 4
    }
}

/// The four positions of a 2 × 2 window as vectors. Kernels compare and select vector against vector: the standard
/// library's forms with a scalar operand (`v .== 1`, `replace(with: 0, where:)`) compile to lane-by-lane loops.
let windowPositions = (SIMD16<Int32>(repeating: 0), SIMD16<Int32>(repeating: 1), SIMD16<Int32>(repeating: 2), SIMD16<Int32>(repeating: 3))

/// One image's convolution, its windows read in place (`offsets`: `WindowRows.offsets` for "valid" padding), with
/// the 2 × 2 stride-2 max pooling of its output fused in: per pooled value, the four convolution outputs under it
/// are computed in registers and only the largest (the first of equals) is kept, bias and ReLU added after the max
/// (they commute with it); `window` records which of the four it was (0–3, row by row). The convolution's own
/// output — a convnet's largest tensor, written and read back once per layer otherwise — is never stored.
/// Sixteen filters at a time (a first layer's 16, 32 or 64: AVX-512 holds them in one register); `filters` must
/// be a multiple of 16; `pooled` is [outputHeight / 2, outputWidth / 2, filters].
public func convolveMaxPoolForward(_ image: UnsafePointer<Float>, _ g: WindowGeometry, offsets: UnsafeBufferPointer<Int32>,
                                   kernel: UnsafePointer<Float>, filters: Int, bias: UnsafePointer<Float>, relu: Bool,
                                   pooled: UnsafeMutablePointer<Float>, window: UnsafeMutablePointer<Int32>) {
    precondition(filters % 16 == 0, "convolveMaxPoolForward needs a multiple of 16 filters")
    @inline(__always) func load(_ p: UnsafePointer<Float>) -> SIMD16<Float> { UnsafeRawPointer(p).loadUnaligned(as: SIMD16<Float>.self) }
    let c = g.channels, right = g.strideX * c, below = g.strideY * g.inputWidth * c
    let pooledWidth = g.outputWidth / 2, depth = offsets.count, at = offsets.baseAddress!
    for qy in 0..<(g.outputHeight / 2) {
        for qx in 0..<pooledWidth {
            let a0 = image + (2 &* qy &* below &+ 2 &* qx &* right), a1 = a0 + right, a2 = a0 + below, a3 = a2 + right
            let o = (qy &* pooledWidth &+ qx) &* filters
            for f in stride(from: 0, to: filters, by: 16) {
                var s0 = SIMD16<Float>(), s1 = s0, s2 = s0, s3 = s0
                for i in 0..<depth {
                    let weights = load(kernel + (i &* filters &+ f)), offset = Int(at[i])
                    multiplyAdd(&s0, weights, a0[offset])
                    multiplyAdd(&s1, weights, a1[offset])
                    multiplyAdd(&s2, weights, a2[offset])
                    multiplyAdd(&s3, weights, a3[offset])
                }
                storeMaximumOfFour(s0, s1, s2, s3, bias: load(bias + f), relu: relu, pooled: pooled + (o &+ f), window: window + (o &+ f))
            }
        }
    }
}

/// Stores the largest of a 2 × 2 window's four values (the first of equals) plus `bias`, through a ReLU when
/// `relu` (both commute with the maximum), and which of the four it was (0–3, row by row).
@inline(__always)
func storeMaximumOfFour(_ v0: SIMD16<Float>, _ v1: SIMD16<Float>, _ v2: SIMD16<Float>, _ v3: SIMD16<Float>, bias: SIMD16<Float>,
                        relu: Bool, pooled: UnsafeMutablePointer<Float>, window: UnsafeMutablePointer<Int32>) {
    let positions = windowPositions, zero = SIMD16<Float>()
    var best = v0, which = positions.0
    var larger = v1 .> best
    best.replace(with: v1, where: larger)
    which.replace(with: positions.1, where: larger)
    larger = v2 .> best
    best.replace(with: v2, where: larger)
    which.replace(with: positions.2, where: larger)
    larger = v3 .> best
    best.replace(with: v3, where: larger)
    which.replace(with: positions.3, where: larger)
    best += bias
    if relu { best = best.replacing(with: zero, where: best .< zero) }
    UnsafeMutableRawPointer(pooled).storeBytes(of: best, as: SIMD16<Float>.self)
    // Int32, not bytes: the standard library's conversions between vector widths are lane-by-lane loops.
    UnsafeMutableRawPointer(window).storeBytes(of: which, as: SIMD16<Int32>.self)
}

/// The 2 × 2 stride-2 max pooling of `samples` convolution outputs [height, width, filters] (before bias and
/// activation), with the convolution's bias and ReLU (when `relu`) added after the maximum: what
/// `convolveMaxPoolForward` does after its products, for a convolution computed as a GEMM. `window` records which
/// of the four values each pooled value came from (0–3). `filters` must be a multiple of 16; an odd last row or
/// column is dropped, as the pooling does.
public func biasActivationMaxPool(_ convolved: UnsafePointer<Float>, height: Int, width: Int, filters: Int, samples: Int,
                                  bias: UnsafePointer<Float>, relu: Bool,
                                  pooled: UnsafeMutablePointer<Float>, window: UnsafeMutablePointer<Int32>) {
    precondition(filters % 16 == 0, "biasActivationMaxPool needs a multiple of 16 filters")
    @inline(__always) func load(_ p: UnsafePointer<Float>) -> SIMD16<Float> { UnsafeRawPointer(p).loadUnaligned(as: SIMD16<Float>.self) }
    let pooledHeight = height / 2, pooledWidth = width / 2, row = width &* filters
    for s in 0..<samples {
        let image = convolved + s &* height &* row, out = s &* pooledHeight &* pooledWidth &* filters
        for qy in 0..<pooledHeight {
            for qx in 0..<pooledWidth {
                let a0 = image + (2 &* qy &* row &+ 2 &* qx &* filters), a2 = a0 + row
                let o = out &+ (qy &* pooledWidth &+ qx) &* filters
                for f in stride(from: 0, to: filters, by: 16) {
                    storeMaximumOfFour(load(a0 + f), load(a0 + (filters &+ f)), load(a2 + f), load(a2 + (filters &+ f)),
                                       bias: load(bias + f), relu: relu, pooled: pooled + (o &+ f), window: window + (o &+ f))
                }
            }
        }
    }
}

/// The backward pass of a convolution ("valid" padding) and the 2 × 2 stride-2 max pooling after it, on `samples`
/// images, as a scatter instead of two GEMMs. Each pooled gradient (zero where a ReLU cut the pooled value) reaches
/// one convolution output, the one its window chose; behind dropout, a ReLU and the pooling most are zero (a
/// quarter of the outputs at most, ~28% of those in keras.io's convnet), and each nonzero one g adds g · its input
/// window to its filter's kernel gradient and g · its filter's kernel to the input window's gradient. One
/// branch-free pass over the pooled values, in memory order, lists every filter's nonzero gradients (`list`: room
/// for `samples` × pooled pixels per filter, and a count per filter; a pass per filter, reading every filter-th
/// value, measured ~10% slower in all); then each filter's list is applied along each window row (contiguous in
/// NHWC), the kernel row and its gradient held in registers (`scatterColumns`).
///
/// The kernels are by filter (`[filters, windowCount]`, the transpose of a Keras kernel) so that each filter's row
/// is contiguous. `dKernelByFilter` and `dBias` accumulate (`+=`); `dImages`, when given, is written.
public func convolveMaxPoolBackwardScatter(images: UnsafePointer<Float>, samples: Int, _ g: WindowGeometry, filters: Int,
                                           pooled: UnsafePointer<Float>, dPooled: UnsafePointer<Float>,
                                           window: UnsafePointer<Int32>, relu: Bool,
                                           kernelByFilter: UnsafePointer<Float>, dKernelByFilter: UnsafeMutablePointer<Float>,
                                           dBias: UnsafeMutablePointer<Float>, dImages: UnsafeMutablePointer<Float>?,
                                           list: (pixels: UnsafeMutablePointer<Int32>, gradients: UnsafeMutablePointer<Float>,
                                                  counts: UnsafeMutablePointer<Int32>)) {
    precondition(g.padTop == 0 && g.padLeft == 0, "convolveMaxPoolBackwardScatter needs \"valid\" padding")
    let pooledHeight = g.outputHeight / 2, pooledWidth = g.outputWidth / 2, capacity = samples &* pooledHeight &* pooledWidth
    let imageRow = g.inputWidth &* g.channels, run = g.windowWidth &* g.channels, depth = g.windowCount
    let right = g.strideX &* g.channels, below = g.strideY &* imageRow
    // Where each of a pooled window's four positions is, from its top-left, in the image.
    let positions = SIMD4<Int32>(0, Int32(truncatingIfNeeded: right), Int32(truncatingIfNeeded: below), Int32(truncatingIfNeeded: below &+ right))
    dImages?.update(repeating: 0, count: samples &* g.inputCount)
    // Every filter's list in one pass over the pooled values, in memory order (filter f's list at f · capacity).
    list.counts.update(repeating: 0, count: filters)
    var o = 0
    for s in 0..<samples {
        for qy in 0..<pooledHeight {
            for qx in 0..<pooledWidth {
                let topLeft = Int32(truncatingIfNeeded: s &* g.inputCount &+ 2 &* qy &* below &+ 2 &* qx &* right)
                for f in 0..<filters {
                    let gradient = relu && !(pooled[o] > 0) ? 0 : dPooled[o]
                    let count = Int(list.counts[f]), at = f &* capacity &+ count
                    list.pixels[at] = topLeft &+ positions[Int(window[o]) & 3]
                    list.gradients[at] = gradient
                    list.counts[f] = Int32(truncatingIfNeeded: count &+ (gradient != 0 ? 1 : 0))
                    o &+= 1
                }
            }
        }
    }
    for f in 0..<filters {
        let count = Int(list.counts[f])
        let entries = (pixels: UnsafePointer(list.pixels + f &* capacity), gradients: UnsafePointer(list.gradients + f &* capacity), count: count)
        var biasSum: Float = 0
        for j in 0..<count { biasSum += entries.gradients[j] }
        dBias[f] += biasSum
        let kernel = kernelByFilter + f &* depth, dKernel = dKernelByFilter + f &* depth
        for ky in 0..<g.windowHeight {
            // Along the window row, sixty-four columns at a time, then sixteen, then one: the kernel row's gradient
            // and the kernel row stay in registers over the whole list.
            let inImage = ky &* imageRow, inKernel = ky &* run
            var c = 0
            while c &+ 64 <= run {
                scatterColumns(entries, images: images + (inImage &+ c), kernel: kernel + (inKernel &+ c),
                               dKernel: dKernel + (inKernel &+ c), dImages: dImages.map { $0 + (inImage &+ c) }, vectors: 4)
                c &+= 64
            }
            while c &+ 16 <= run {
                scatterColumns(entries, images: images + (inImage &+ c), kernel: kernel + (inKernel &+ c),
                               dKernel: dKernel + (inKernel &+ c), dImages: dImages.map { $0 + (inImage &+ c) }, vectors: 1)
                c &+= 16
            }
            while c < run {
                var sum = dKernel[inKernel &+ c]
                let weight = kernel[inKernel &+ c]
                for j in 0..<count {
                    let gradient = entries.gradients[j], at = Int(entries.pixels[j]) &+ inImage &+ c
                    sum += gradient * images[at]
                    if let dImages { dImages[at] += gradient * weight }
                }
                dKernel[inKernel &+ c] = sum
                c &+= 1
            }
        }
    }
}

/// One stretch of `vectors` × 16 columns (1 or 4) of `convolveMaxPoolBackwardScatter`'s window row, over its list
/// of (pixel, gradient): dKernel += Σ gradient · images[pixel …] in registers, and dImages[pixel …] += gradient ·
/// kernel, the kernel in registers.
@inline(__always)
func scatterColumns(_ entries: (pixels: UnsafePointer<Int32>, gradients: UnsafePointer<Float>, count: Int),
                    images: UnsafePointer<Float>, kernel: UnsafePointer<Float>, dKernel: UnsafeMutablePointer<Float>,
                    dImages: UnsafeMutablePointer<Float>?, vectors: Int) {
    @inline(__always) func load(_ p: UnsafePointer<Float>) -> SIMD16<Float> { UnsafeRawPointer(p).loadUnaligned(as: SIMD16<Float>.self) }
    @inline(__always) func store(_ v: SIMD16<Float>, _ p: UnsafeMutablePointer<Float>) {
        UnsafeMutableRawPointer(p).storeBytes(of: v, as: SIMD16<Float>.self)
    }
    let wide = vectors == 4
    var s0 = load(dKernel), s1 = wide ? load(dKernel + 16) : SIMD16(), s2 = wide ? load(dKernel + 32) : SIMD16()
    var s3 = wide ? load(dKernel + 48) : SIMD16()
    let w0 = load(kernel), w1 = wide ? load(kernel + 16) : SIMD16(), w2 = wide ? load(kernel + 32) : SIMD16()
    let w3 = wide ? load(kernel + 48) : SIMD16()
    for j in 0..<entries.count {
        let gradient = entries.gradients[j], at = Int(entries.pixels[j]), x = images + at
        multiplyAdd(&s0, load(x), gradient)
        if wide {
            multiplyAdd(&s1, load(x + 16), gradient)
            multiplyAdd(&s2, load(x + 32), gradient)
            multiplyAdd(&s3, load(x + 48), gradient)
        }
        guard let dImages else { continue }
        let d = dImages + at
        var d0 = load(d)
        multiplyAdd(&d0, w0, gradient)
        store(d0, d)
        if wide {
            var d1 = load(d + 16), d2 = load(d + 32), d3 = load(d + 48)
            multiplyAdd(&d1, w1, gradient)
            multiplyAdd(&d2, w2, gradient)
            multiplyAdd(&d3, w3, gradient)
            store(d1, d + 16)
            store(d2, d + 32)
            store(d3, d + 48)
        }
    }
    store(s0, dKernel)
    if wide {
        store(s1, dKernel + 16)
        store(s2, dKernel + 32)
        store(s3, dKernel + 48)
    }
}

/// The backward pass of `convolveMaxPoolForward` for one image: each pooled gradient (zero where a ReLU cut the
/// pooled value) reaches the one convolution output its window chose, and from there the kernel and bias
/// gradients (`+=`), without materializing the convolution's output gradient: dKernel[i, f] += Σ x[window value i]
/// · g, dBias[f] += Σ g. Blocks of sixteen filters whose gradients are all zero (dropout, ReLU) are skipped.
public func convolveMaxPoolBackward(_ image: UnsafePointer<Float>, _ g: WindowGeometry, offsets: UnsafeBufferPointer<Int32>,
                                    filters: Int, pooled: UnsafePointer<Float>, dPooled: UnsafePointer<Float>,
                                    window: UnsafePointer<Int32>, relu: Bool,
                                    dKernel: UnsafeMutablePointer<Float>, dBias: UnsafeMutablePointer<Float>) {
    // The walk over pooled windows repeats the forward's: sharing it through a closure measured 35% slower here.
    precondition(filters % 16 == 0, "convolveMaxPoolBackward needs a multiple of 16 filters")
    @inline(__always) func load(_ p: UnsafePointer<Float>) -> SIMD16<Float> { UnsafeRawPointer(p).loadUnaligned(as: SIMD16<Float>.self) }
    @inline(__always) func add(_ v: SIMD16<Float>, to p: UnsafeMutablePointer<Float>) {
        UnsafeMutableRawPointer(p).storeBytes(of: load(p) + v, as: SIMD16<Float>.self)
    }
    let c = g.channels, right = g.strideX * c, below = g.strideY * g.inputWidth * c
    let pooledWidth = g.outputWidth / 2, depth = offsets.count, at = offsets.baseAddress!
    let positions = windowPositions, zero = SIMD16<Float>()
    for qy in 0..<(g.outputHeight / 2) {
        for qx in 0..<pooledWidth {
            let a0 = image + (2 &* qy &* below &+ 2 &* qx &* right), a1 = a0 + right, a2 = a0 + below, a3 = a2 + right
            let o = (qy &* pooledWidth &+ qx) &* filters
            for f in stride(from: 0, to: filters, by: 16) {
                var gradient = load(dPooled + (o &+ f))
                if relu { gradient.replace(with: zero, where: load(pooled + (o &+ f)) .<= zero) }
                if gradient == zero { continue }
                let which = UnsafeRawPointer(window + (o &+ f)).loadUnaligned(as: SIMD16<Int32>.self)
                let g0 = zero.replacing(with: gradient, where: which .== positions.0)
                let g1 = zero.replacing(with: gradient, where: which .== positions.1)
                let g2 = zero.replacing(with: gradient, where: which .== positions.2)
                let g3 = zero.replacing(with: gradient, where: which .== positions.3)
                add(gradient, to: dBias + f)
                for i in 0..<depth {
                    let offset = Int(at[i])
                    var sum = SIMD16<Float>()
                    multiplyAdd(&sum, g0, a0[offset])
                    multiplyAdd(&sum, g1, a1[offset])
                    multiplyAdd(&sum, g2, a2[offset])
                    multiplyAdd(&sum, g3, a3[offset])
                    add(sum, to: dKernel + (i &* filters &+ f))
                }
            }
        }
    }
}

/// b ← aᵀ (or b += aᵀ when `accumulate`) for a [rows, columns] and b [columns, rows]: a kernel between its Keras
/// layout and the by-filter layout of `convolveMaxPoolBackwardScatter`.
public func transpose(_ a: UnsafePointer<Float>, rows: Int, columns: Int, into b: UnsafeMutablePointer<Float>, accumulate: Bool = false) {
    for i in 0..<rows {
        for j in 0..<columns {
            let value = a[i &* columns &+ j], at = j &* rows &+ i
            b[at] = accumulate ? b[at] + value : value
        }
    }
}
