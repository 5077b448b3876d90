import TandemCore

/// A 2-D convolution over NHWC images, as Keras's `Conv2D`: `filters` kernels of `kernelSize` × `kernelSize` over
/// every input channel, then bias and activation. Its kernel [kh, kw, in, filters] and bias [filters] are views into
/// the model's parameter arena.
///
/// Forward and both backward products run as OpenBLAS GEMMs on the image unfolded (im2col) a few samples at a time,
/// so the unfolded chunk stays in cache: output = col · W, dW += colᵀ · dZ, dcol = dZ · Wᵀ folded back (col2im).
/// A window of at most 32 values (a first layer's 3 × 3 on one channel) is multiplied by hand instead, read in
/// place.
///
/// Before a 2 × 2 max pooling, the two run as one pass (``FusingLayer``) that never stores the convolution's
/// output: as a model's first layer, by hand on windows read in place; elsewhere, the GEMM followed by bias, ReLU
/// and pooling in one pass, and backward as a scatter of the few nonzero pooled gradients instead of the two GEMMs.
///
/// ```swift
/// Conv2D(32, kernelSize: 3, activation: .relu)
/// ```
public final class Conv2D: FusingLayer, @unchecked Sendable {
    public let filters: Int
    public let kernelSize: Int
    public let strides: Int
    public let padding: WindowGeometry.Padding
    public let activation: Activation
    // Set by `build` and `reserve`, before any forward; read-only while training (hence @unchecked Sendable).
    public private(set) var geometry: WindowGeometry?
    public private(set) var kernel = ArenaView(name: "kernel", offset: 0, shape: [0])
    public private(set) var bias = ArenaView(name: "bias", offset: 0, shape: [0])
    private var chunkSamples = 1
    /// Whether forward multiplies by hand (`shallowProductBiasReLU`) instead of with OpenBLAS: for windows of a few
    /// values, as a first layer's 3 × 3 on one channel, where the GEMM is all packing and memory traffic.
    private var multipliesByHand = false
    /// Where each of a window's values is, from its first (see `WindowRows`): in the image ("valid" padding) or in
    /// an unfolded row.
    private var windowOffsets = UnsafeMutableBufferPointer<Int32>.allocate(capacity: 0)
    /// How the convolution runs with the 2 × 2 max pooling after it, when the model fuses the two.
    private enum FusedPooling {
        /// Windows read in place and multiplied by hand, the pooling in registers (`convolveMaxPoolForward` and
        /// `Backward`): a model's first layer, which owes no input gradient.
        case inPlace
        /// im2col + GEMM, then `biasActivationMaxPool`; backward `convolveMaxPoolBackwardScatter`.
        case unfolded
    }
    private var fusedPooling: FusedPooling?
    /// When fused: the pooled values per example, and per pooled value which of its window's four outputs was the
    /// maximum.
    private var pooledCount = 0
    private var poolWindows = UnsafeMutableBufferPointer<Int32>.allocate(capacity: 0)
    private var columns = FlatArena(count: 0)
    private var dColumns = FlatArena(count: 0)
    /// Fused with im2col: a chunk's convolution outputs, the kernel and its gradient by filter, and one sample's
    /// lists of nonzero pooled gradients, one per filter (`scatterPixels` holds a count per filter after the
    /// pixels; see `convolveMaxPoolBackwardScatter`).
    private var convolved = FlatArena(count: 0)
    private var kernelByFilter = FlatArena(count: 0)
    private var dKernelByFilter = FlatArena(count: 0)
    private var scatterGradients = FlatArena(count: 0)
    private var scatterPixels = UnsafeMutableBufferPointer<Int32>.allocate(capacity: 0)

    public init(_ filters: Int, kernelSize: Int, strides: Int = 1, padding: WindowGeometry.Padding = .valid,
                activation: Activation = .identity) {
        self.filters = filters
        self.kernelSize = kernelSize
        self.strides = strides
        self.padding = padding
        self.activation = activation
    }

    deinit {
        windowOffsets.deallocate()
        poolWindows.deallocate()
        scatterPixels.deallocate()
    }

    public var specification: ModelSpec.Layer {
        ModelSpec.Layer(type: "conv2d", activation: activation.rawValue, filters: filters, kernelSize: kernelSize,
                        strides: strides == 1 ? nil : strides, padding: padding == .valid ? nil : padding.rawValue)
    }

    public func build(name: String, inputShape: [Int], layout: inout ArenaLayout) throws -> [Int] {
        let g = try windowGeometry(layer: "\(name) (Conv2D)", inputShape: inputShape, window: kernelSize, strides: strides, padding: padding)
        guard filters > 0, filters <= ModelSpec.maximumUnits else {
            throw TandemError(.badConfig, "\(name) (Conv2D): filters must be between 1 and \(ModelSpec.maximumUnits), found \(filters)")
        }
        geometry = g
        multipliesByHand = g.windowCount <= Self.largestHandMultipliedWindow && filters % 8 == 0
            && (activation == .relu || activation == .identity)
        // Only the hand-multiplied paths read windows through the offset table.
        let offsets = multipliesByHand ? WindowRows.offsets(g, imageWidth: padding == .valid ? g.inputWidth : nil) : []
        windowOffsets.deallocate()
        windowOffsets = .allocate(capacity: offsets.count)
        _ = windowOffsets.initialize(from: offsets)
        kernel = layout.parameter("\(name)/kernel", shape: [kernelSize, kernelSize, g.channels, filters])
        bias = layout.parameter("\(name)/bias", shape: [filters])
        return [g.outputHeight, g.outputWidth, filters]
    }

    public var parameterViews: [ArenaView] { [kernel, bias] }

    /// The window size (kh · kw · channels) up to which forward skips OpenBLAS: at 9 (3 × 3 × 1), perf showed the
    /// K = 9 `cblas_sgemm` spending its time packing and zeroing its output, then a separate bias + ReLU pass.
    static let largestHandMultipliedWindow = 32

    /// Glorot-uniform kernel (fan-in kh·kw·in, fan-out kh·kw·filters, as Keras), zero bias.
    public func initializeParameters(_ parameters: UnsafeMutablePointer<Float>, generator: inout SeededGenerator) {
        guard let g = geometry else { return }
        let area = kernelSize * kernelSize
        fillGlorotUniform(parameters + kernel.offset, count: kernel.count, fanIn: area * g.channels, fanOut: area * filters, generator: &generator)
    }

    public func reserve(maxBatchSize rows: Int) {
        guard let g = geometry else { return }
        chunkSamples = convolutionChunkSamples(g, maxSamples: rows)
        let unfoldedCount = chunkSamples * g.outputPixels * g.windowCount
        if fusedPooling != nil {
            poolWindows.deallocate()
            poolWindows = .allocate(capacity: rows * pooledCount)
        }
        switch fusedPooling {
        case .inPlace:
            return
        case .unfolded:
            columns = FlatArena(count: unfoldedCount)
            convolved = FlatArena(count: chunkSamples * g.outputPixels * filters)
            kernelByFilter = FlatArena(count: kernel.count)
            dKernelByFilter = FlatArena(count: kernel.count)
            scatterGradients = FlatArena(count: pooledCount)
            scatterPixels.deallocate()
            scatterPixels = .allocate(capacity: pooledCount + filters)
        case nil:
            columns = FlatArena(count: unfoldedCount)
            dColumns = FlatArena(count: unfoldedCount)
        }
    }

    /// Unfolds samples [start, start + count) of `input` into the column buffer.
    private func unfold(_ input: UnsafePointer<Float>, _ g: WindowGeometry, start: Int, count: Int) {
        let rowLength = g.outputPixels * g.windowCount
        for s in 0..<count { im2col(input + (start + s) * g.inputCount, g, into: columns.base + s * rowLength) }
    }

    public func forward(parameters: UnsafePointer<Float>, input: UnsafePointer<Float>, output: UnsafeMutablePointer<Float>,
                        rows: Int, context: LayerContext) {
        guard let g = geometry else { preconditionFailure("Conv2D.forward before build") }
        let outputCount = g.outputPixels * filters
        if multipliesByHand && padding == .valid {
            // Every window lies inside the image: read it in place, one output row at a time, without unfolding.
            let imageRow = g.inputWidth * g.channels
            for s in 0..<rows {
                for oy in 0..<g.outputHeight {
                    let windows = WindowRows(start: input + s * g.inputCount + oy * g.strideY * imageRow, rowStride: g.strideX * g.channels,
                                             offsets: UnsafeBufferPointer(windowOffsets))
                    shallowProductBiasReLU(windows, rows: g.outputWidth, parameters + kernel.offset, columns: filters,
                                           bias: parameters + bias.offset, relu: activation == .relu,
                                           into: output + s * outputCount + oy * g.outputWidth * filters)
                }
            }
            return
        }
        for start in stride(from: 0, to: rows, by: chunkSamples) {
            let count = min(chunkSamples, rows - start)
            unfold(input, g, start: start, count: count)
            let out = output + start * outputCount
            if multipliesByHand {
                shallowProductBiasReLU(WindowRows(start: columns.base, rowStride: g.windowCount, offsets: UnsafeBufferPointer(windowOffsets)),
                                       rows: count * g.outputPixels,
                                       parameters + kernel.offset, columns: filters, bias: parameters + bias.offset,
                                       relu: activation == .relu, into: out)
                continue
            }
            gemm(.none, .none, m: count * g.outputPixels, n: filters, k: g.windowCount, a: columns.base, lda: g.windowCount,
                 b: parameters + kernel.offset, ldb: filters, beta: 0, c: out, ldc: filters)
            biasActivationForward(out, bias: parameters + bias.offset, rows: count * g.outputPixels, columns: filters, activation: activation)
        }
    }

    public func backward(parameters: UnsafePointer<Float>, gradients: UnsafeMutablePointer<Float>,
                         input: UnsafePointer<Float>, output: UnsafePointer<Float>, dOutput: UnsafeMutablePointer<Float>,
                         dInput: UnsafeMutablePointer<Float>?, rows: Int, activationIsFused: Bool, context: LayerContext) {
        guard let g = geometry else { preconditionFailure("Conv2D.backward before build") }
        let outputCount = g.outputPixels * filters, rowLength = g.outputPixels * g.windowCount
        for start in stride(from: 0, to: rows, by: chunkSamples) {
            let count = min(chunkSamples, rows - start), pixels = count * g.outputPixels
            let dZ = dOutput + start * outputCount
            if !activationIsFused {
                activationBackward(dZ, output: output + start * outputCount, count: pixels * filters, activation: activation)
            }
            columnSumAccumulate(gradients + bias.offset, dZ, rows: pixels, columns: filters)
            unfold(input, g, start: start, count: count)
            gemm(.transposed, .none, m: g.windowCount, n: filters, k: pixels, a: columns.base, lda: g.windowCount,
                 b: dZ, ldb: filters, beta: 1, c: gradients + kernel.offset, ldc: filters)
            guard let dInput else { continue }
            gemm(.none, .transposed, m: pixels, n: g.windowCount, k: filters, a: dZ, lda: filters,
                 b: parameters + kernel.offset, ldb: filters, beta: 0, c: dColumns.base, ldc: g.windowCount)
            let dImages = dInput + start * g.inputCount
            dImages.update(repeating: 0, count: count * g.inputCount)
            for s in 0..<count { col2imAccumulate(dColumns.base + s * rowLength, g, into: dImages + s * g.inputCount) }
        }
    }

    /// A "valid" convolution with ReLU or no activation and a multiple of 16 filters fuses with a 2 × 2 stride-2
    /// max pooling after it: read in place by hand when it multiplies by hand and owes no input gradient, through
    /// im2col and the GEMM otherwise.
    public func fuse(with next: any Layer, needsInputGradient: Bool) -> Bool {
        guard filters % 16 == 0, padding == .valid, activation == .relu || activation == .identity, let g = geometry,
              let pool = next as? Pooling2D, pool.kind == .max, let p = pool.geometry, p.isTwoByTwoTiling,
              p.inputHeight == g.outputHeight, p.inputWidth == g.outputWidth else { return false }
        fusedPooling = multipliesByHand && !needsInputGradient ? .inPlace : .unfolded
        pooledCount = p.outputPixels * filters
        return true
    }

    public func forward(fusedWith next: any Layer, parameters: UnsafePointer<Float>, input: UnsafePointer<Float>,
                        output: UnsafeMutablePointer<Float>, rows: Int, context: LayerContext) {
        guard let g = geometry, let fusedPooling else { preconditionFailure("Conv2D.forward(fusedWith:) before fuse(with:)") }
        let windows = poolWindows.baseAddress! + context.firstRow * pooledCount, relu = activation == .relu
        switch fusedPooling {
        case .inPlace:
            let offsets = UnsafeBufferPointer(windowOffsets)
            for s in 0..<rows {
                convolveMaxPoolForward(input + s * g.inputCount, g, offsets: offsets, kernel: parameters + kernel.offset, filters: filters,
                                       bias: parameters + bias.offset, relu: relu,
                                       pooled: output + s * pooledCount, window: windows + s * pooledCount)
            }
        case .unfolded:
            for start in stride(from: 0, to: rows, by: chunkSamples) {
                let count = min(chunkSamples, rows - start)
                unfold(input, g, start: start, count: count)
                gemm(.none, .none, m: count * g.outputPixels, n: filters, k: g.windowCount, a: columns.base, lda: g.windowCount,
                     b: parameters + kernel.offset, ldb: filters, beta: 0, c: convolved.base, ldc: filters)
                biasActivationMaxPool(convolved.base, height: g.outputHeight, width: g.outputWidth, filters: filters, samples: count,
                                      bias: parameters + bias.offset, relu: relu,
                                      pooled: output + start * pooledCount, window: windows + start * pooledCount)
            }
        }
    }

    public func backward(fusedWith next: any Layer, parameters: UnsafePointer<Float>, gradients: UnsafeMutablePointer<Float>,
                         input: UnsafePointer<Float>, output: UnsafePointer<Float>, dOutput: UnsafePointer<Float>,
                         dInput: UnsafeMutablePointer<Float>?, rows: Int, context: LayerContext) {
        guard let g = geometry, let fusedPooling else { preconditionFailure("Conv2D.backward(fusedWith:) before fuse(with:)") }
        let windows = poolWindows.baseAddress! + context.firstRow * pooledCount, relu = activation == .relu
        switch fusedPooling {
        case .inPlace:
            precondition(dInput == nil, "Conv2D fused in place gives no input gradient")
            let offsets = UnsafeBufferPointer(windowOffsets)
            for s in 0..<rows {
                convolveMaxPoolBackward(input + s * g.inputCount, g, offsets: offsets, filters: filters, pooled: output + s * pooledCount,
                                        dPooled: dOutput + s * pooledCount, window: windows + s * pooledCount,
                                        relu: relu, dKernel: gradients + kernel.offset, dBias: gradients + bias.offset)
            }
        case .unfolded:
            if dInput != nil {
                transpose(parameters + kernel.offset, rows: g.windowCount, columns: filters, into: kernelByFilter.base)
            }
            dKernelByFilter.zero()
            // One sample at a time: its input and input gradient (2 × 21 KB in keras.io's convnet) stay in L1 while
            // the scatter reads and adds into them (three samples, 2 × 65 KB, would spill into L2).
            for s in 0..<rows {
                let at = s * pooledCount
                convolveMaxPoolBackwardScatter(images: input + s * g.inputCount, samples: 1, g,
                                               filters: filters, pooled: output + at, dPooled: dOutput + at, window: windows + at,
                                               relu: relu, kernelByFilter: kernelByFilter.base, dKernelByFilter: dKernelByFilter.base,
                                               dBias: gradients + bias.offset, dImages: dInput.map { $0 + s * g.inputCount },
                                               list: (scatterPixels.baseAddress!, scatterGradients.base, scatterPixels.baseAddress! + pooledCount))
            }
            transpose(dKernelByFilter.base, rows: filters, columns: g.windowCount, into: gradients + kernel.offset, accumulate: true)
        }
    }
}

/// The window geometry of an image layer on `inputShape`, or an error naming the layer and the shape.
func windowGeometry(layer: String, inputShape: [Int], window: Int, strides: Int, padding: WindowGeometry.Padding) throws -> WindowGeometry {
    guard inputShape.count == 3, inputShape.allSatisfy({ $0 > 0 }) else {
        throw TandemError(.badConfig, "\(layer) expects images [height, width, channels], found \(inputShape); give the model an input_shape such as [28, 28, 1]")
    }
    guard let g = WindowGeometry(input: (inputShape[0], inputShape[1], inputShape[2]), window: (window, window),
                                 strides: (strides, strides), padding: padding) else {
        throw TandemError(.badConfig, "\(layer): a \(window)×\(window) window with strides \(strides) and \(padding.rawValue) padding does not fit its input \(inputShape)")
    }
    return g
}

/// Keras's Glorot-uniform initializer on `count` values: uniform in ±√(6 / (fanIn + fanOut)).
func fillGlorotUniform(_ values: UnsafeMutablePointer<Float>, count: Int, fanIn: Int, fanOut: Int, generator: inout SeededGenerator) {
    let limit = (6 / Float(fanIn + fanOut)).squareRoot()
    for i in 0..<count { values[i] = (2 * generator.nextUnitFloat() - 1) * limit }
}
