#if canImport(Glibc)
import Glibc
#endif

// The differentiable operations of `ArenaTape`. Each public function computes its output into the tape's scratch
// space and records an `Operation`; the operation's backward is the case of the same name in `backward(...)` below,
// which accumulates into its operands' gradients (`+=`). Binary element-wise operations broadcast NumPy-style over
// matrices: an operand with one row (or one column) is repeated along it, and its gradient sums over the repeats.

extension ArenaTape {
    /// What produced a value, with its operands as record indices: a plain value, so recording allocates nothing.
    enum Operation {
        case leaf
        case matmul(Int, Int, transposeA: Bool, transposeB: Bool)
        case addBias(Int, bias: Int, Activation)
        case elementwise(ElementwiseOperator, Int, Int)
        case unary(UnaryFunction, Int)
        case scale(Int, by: Float)
        /// Σ of all elements times `scale` (1 for sum, 1/count for mean).
        case sum(Int, scale: Float)
        case softmax(Int)
        /// The fused loss; `dLogits` holds d(loss)/d(logits), computed with the loss in forward.
        case softmaxCrossEntropy(logits: Int, dLogits: UnsafeMutablePointer<Float>)
        /// A convolution with bias and activation; `columns` holds the unfolded input from forward, `dColumns`
        /// room for its gradient (nil when the input needs none).
        case conv2d(Int, kernel: Int, bias: Int, Activation, WindowGeometry, columns: UnsafeMutablePointer<Float>, dColumns: UnsafeMutablePointer<Float>?)
        /// Max pooling; `argmax` holds, per output value, the index within its example of the maximum.
        case maxPool2d(Int, WindowGeometry, argmax: UnsafeMutablePointer<Int32>)
        case averagePool2d(Int, WindowGeometry)
    }

    enum ElementwiseOperator { case add, subtract, multiply, divide }

    enum UnaryFunction { case negate, relu, tanh, sigmoid, exp, log, square }
}

// MARK: matmul and the fused dense-layer operations

/// op(a) · op(b), where op transposes when asked: [m, k] · [k, n] → [m, n]. One `cblas_sgemm`, transposes as flags
/// (never copies), and two more in backward for the operands that need a gradient.
///
/// ```swift
/// let scores = matmul(queries, keys, transposeB: true)     // Q · Kᵀ
/// ```
public func matmul(_ a: ArenaTape.Value, _ b: ArenaTape.Value, transposeA: Bool = false, transposeB: Bool = false) -> ArenaTape.Value {
    let tape = a.tape, left = tape[a], right = tape[b]
    let m = transposeA ? left.columns : left.rows, k = transposeA ? left.rows : left.columns
    let n = transposeB ? right.rows : right.columns
    precondition((transposeB ? right.columns : right.rows) == k,
                 "matmul: \(transposeA ? "transposed " : "")\(left.rows) × \(left.columns) and \(transposeB ? "transposed " : "")\(right.rows) × \(right.columns) do not chain")
    let output = tape.allocateOutput(rows: m, columns: n, needsGradient: left.gradient != nil || right.gradient != nil)
    gemm(transposeA ? .transposed : .none, transposeB ? .transposed : .none, m: m, n: n, k: k,
         a: left.value, lda: left.columns, b: right.value, ldb: right.columns, beta: 0, c: output.value, ldc: n)
    return tape.append(.init(operation: .matmul(a.index, b.index, transposeA: transposeA, transposeB: transposeB),
                             rows: m, columns: n, value: output.value, gradient: output.gradient))
}

/// activation(x + bias) with `bias` (one row) added to every row of `x`, in one pass — the kernel the fused
/// trainer's dense layers run, so a dense layer on the tape computes what `tandem train` computes. Softmax is not
/// an activation here: fuse it with the loss (`sparseSoftmaxCrossEntropy`) or apply `softmax(_:)`.
///
/// ```swift
/// let hidden = addBias(matmul(images, w1), b1, activation: .relu)
/// ```
public func addBias(_ x: ArenaTape.Value, _ bias: ArenaTape.Value, activation: Activation = .identity) -> ArenaTape.Value {
    let tape = x.tape, input = tape[x], row = tape[bias]
    precondition(row.rows == 1 && row.columns == input.columns,
                 "addBias: a bias of \(row.rows) × \(row.columns) for rows of \(input.columns)")
    precondition(activation != .softmax, "addBias: softmax is fused with the loss (sparseSoftmaxCrossEntropy) or applied with softmax(_:)")
    let output = tape.allocateOutput(rows: input.rows, columns: input.columns, needsGradient: input.gradient != nil || row.gradient != nil)
    output.value.update(from: input.value, count: input.count)
    biasActivationForward(output.value, bias: row.value, rows: input.rows, columns: input.columns, activation: activation)
    return tape.append(.init(operation: .addBias(x.index, bias: bias.index, activation), rows: input.rows, columns: input.columns,
                             value: output.value, gradient: output.gradient))
}

/// Mean sparse categorical cross-entropy of [rows, classes] logits against class labels (one per row, as floats —
/// the form `Batch.targets` has), with the softmax fused: the one pass that computes the loss also writes
/// d(loss)/d(logits), stable for any logits.
///
/// - Parameter globalBatchSize: the number of examples the mean is over; by default this batch's rows. A replica
///   that trains on 1/N of a global batch passes the global batch size, so that summing the replicas' gradients
///   gives the gradient of the global mean (TensorFlow's `compute_average_loss`).
///
/// ```swift
/// let loss = sparseSoftmaxCrossEntropy(logits: logits, labels: batch.targets, statistics: &epochStatistics)
/// ```
public func sparseSoftmaxCrossEntropy(logits: ArenaTape.Value, labels: UnsafePointer<Float>, globalBatchSize: Int? = nil) -> ArenaTape.Value {
    var ignored = LossStatistics()
    return sparseSoftmaxCrossEntropy(logits: logits, labels: labels, globalBatchSize: globalBatchSize, statistics: &ignored)
}

/// The same loss, adding this batch's loss sum, correct predictions and row count to `statistics` (the numbers a
/// progress line or an accuracy metric needs, computed in the same pass).
public func sparseSoftmaxCrossEntropy(
    logits: ArenaTape.Value, labels: UnsafePointer<Float>, globalBatchSize: Int? = nil, statistics: inout LossStatistics
) -> ArenaTape.Value {
    let tape = logits.tape, input = tape[logits]
    let examples = globalBatchSize ?? input.rows
    precondition(examples >= input.rows, "sparseSoftmaxCrossEntropy: a global batch of \(examples) is smaller than this batch of \(input.rows)")
    for r in 0..<input.rows {
        precondition(labels[r] >= 0 && Int(exactly: labels[r]).map { $0 < input.columns } == true,
                     "sparseSoftmaxCrossEntropy: label \(labels[r]) of row \(r) is not a class of \(input.columns)")
    }
    let output = tape.allocateOutput(rows: 1, columns: 1, needsGradient: input.gradient != nil)
    let dLogits = tape.scratch(input.count)
    let batch = softmaxCrossEntropy(logits: input.value, labels: labels, rows: input.rows, classes: input.columns,
                                    dLogits: dLogits, gradientScale: 1 / Float(examples))
    statistics += batch
    output.value[0] = Float(batch.lossSum / Double(examples))
    return tape.append(.init(operation: .softmaxCrossEntropy(logits: logits.index, dLogits: dLogits), rows: 1, columns: 1,
                             value: output.value, gradient: output.gradient))
}

/// Row-wise softmax of a [rows, classes] value. For a classifier's loss prefer `sparseSoftmaxCrossEntropy`, which
/// fuses it.
public func softmax(_ x: ArenaTape.Value) -> ArenaTape.Value {
    let tape = x.tape, input = tape[x]
    let output = tape.allocateOutput(rows: input.rows, columns: input.columns, needsGradient: input.gradient != nil)
    output.value.update(from: input.value, count: input.count)
    softmaxRows(output.value, rows: input.rows, columns: input.columns)
    return tape.append(.init(operation: .softmax(x.index), rows: input.rows, columns: input.columns,
                             value: output.value, gradient: output.gradient))
}

// MARK: element-wise operations

/// The strides that read a broadcast operand at (row, column) of the output: 0 along a dimension of size 1.
private struct Broadcast {
    let rowStride: Int
    let columnStride: Int

    init(_ operand: ArenaTape.Record) {
        rowStride = operand.rows == 1 ? 0 : operand.columns
        columnStride = operand.columns == 1 ? 0 : 1
    }

    @inline(__always) func index(_ row: Int, _ column: Int) -> Int { row * rowStride + column * columnStride }
}

private func elementwise(_ a: ArenaTape.Value, _ b: ArenaTape.Value, _ op: ArenaTape.ElementwiseOperator, _ name: String) -> ArenaTape.Value {
    precondition(a.tape === b.tape, "\(name): values from different tapes")
    let tape = a.tape, left = tape[a], right = tape[b]
    let rows = max(left.rows, right.rows), columns = max(left.columns, right.columns)
    func broadcasts(_ operand: ArenaTape.Record) -> Bool {
        (operand.rows == rows || operand.rows == 1) && (operand.columns == columns || operand.columns == 1)
    }
    precondition(broadcasts(left) && broadcasts(right), "\(name): \(left.rows) × \(left.columns) and \(right.rows) × \(right.columns) do not broadcast")
    let output = tape.allocateOutput(rows: rows, columns: columns, needsGradient: left.gradient != nil || right.gradient != nil)
    let at = Broadcast(left), bt = Broadcast(right), x = left.value, y = right.value, z = output.value
    for r in 0..<rows {
        for c in 0..<columns {
            let u = x[at.index(r, c)], v = y[bt.index(r, c)]
            switch op {
            case .add: z[r * columns + c] = u + v
            case .subtract: z[r * columns + c] = u - v
            case .multiply: z[r * columns + c] = u * v
            case .divide: z[r * columns + c] = u / v
            }
        }
    }
    return tape.append(.init(operation: .elementwise(op, a.index, b.index), rows: rows, columns: columns,
                             value: output.value, gradient: output.gradient))
}

/// Element-wise a + b, broadcasting an operand of one row or one column (or a scalar) over the other.
///
/// ```swift
/// let shifted = scores + tape.variable(offset)      // [rows, n] + [1, n]
/// ```
public func + (a: ArenaTape.Value, b: ArenaTape.Value) -> ArenaTape.Value { elementwise(a, b, .add, "+") }
/// Element-wise a − b, broadcasting as `+` does.
public func - (a: ArenaTape.Value, b: ArenaTape.Value) -> ArenaTape.Value { elementwise(a, b, .subtract, "-") }
/// Element-wise a · b, broadcasting as `+` does.
public func * (a: ArenaTape.Value, b: ArenaTape.Value) -> ArenaTape.Value { elementwise(a, b, .multiply, "*") }
/// Element-wise a / b, broadcasting as `+` does.
public func / (a: ArenaTape.Value, b: ArenaTape.Value) -> ArenaTape.Value { elementwise(a, b, .divide, "/") }

/// a · factor, element-wise.
///
/// ```swift
/// let penalty = sum(square(tape.variable(kernel))) * 1e-4
/// ```
public func * (a: ArenaTape.Value, factor: Float) -> ArenaTape.Value {
    let tape = a.tape, input = tape[a]
    let output = tape.allocateOutput(rows: input.rows, columns: input.columns, needsGradient: input.gradient != nil)
    for i in 0..<input.count { output.value[i] = input.value[i] * factor }
    return tape.append(.init(operation: .scale(a.index, by: factor), rows: input.rows, columns: input.columns,
                             value: output.value, gradient: output.gradient))
}

private func unary(_ a: ArenaTape.Value, _ function: ArenaTape.UnaryFunction) -> ArenaTape.Value {
    let tape = a.tape, input = tape[a]
    let output = tape.allocateOutput(rows: input.rows, columns: input.columns, needsGradient: input.gradient != nil)
    let x = input.value, y = output.value
    // One loop per function, so each vectorizes (tanh and sigmoid use the trainer's vectorizing forms).
    switch function {
    case .negate: for i in 0..<input.count { y[i] = -x[i] }
    case .relu: for i in 0..<input.count { y[i] = max(x[i], 0) }
    case .tanh: for i in 0..<input.count { y[i] = fastTanh(x[i]) }
    case .sigmoid: for i in 0..<input.count { y[i] = fastSigmoid(x[i]) }
    case .exp: for i in 0..<input.count { y[i] = expf(x[i]) }
    case .log: for i in 0..<input.count { y[i] = logf(x[i]) }
    case .square: for i in 0..<input.count { y[i] = x[i] * x[i] }
    }
    return tape.append(.init(operation: .unary(function, a.index), rows: input.rows, columns: input.columns,
                             value: output.value, gradient: output.gradient))
}

/// Element-wise −a.
public prefix func - (a: ArenaTape.Value) -> ArenaTape.Value { unary(a, .negate) }
/// Element-wise max(a, 0); its gradient is 0 where a ≤ 0.
///
/// ```swift
/// let hidden = relu(matmul(images, tape.variable(w1)) + tape.variable(b1))
/// ```
public func relu(_ a: ArenaTape.Value) -> ArenaTape.Value { unary(a, .relu) }
/// Element-wise tanh (the trainer's vectorizing rational form, within float rounding of libm's).
public func tanh(_ a: ArenaTape.Value) -> ArenaTape.Value { unary(a, .tanh) }
/// Element-wise 1 / (1 + e^−a).
public func sigmoid(_ a: ArenaTape.Value) -> ArenaTape.Value { unary(a, .sigmoid) }
/// Element-wise e^a.
public func exp(_ a: ArenaTape.Value) -> ArenaTape.Value { unary(a, .exp) }
/// Element-wise natural logarithm.
public func log(_ a: ArenaTape.Value) -> ArenaTape.Value { unary(a, .log) }
/// Element-wise a².
public func square(_ a: ArenaTape.Value) -> ArenaTape.Value { unary(a, .square) }

/// Applies an activation by name, as a layer description would.
public func activate(_ a: ArenaTape.Value, _ activation: Activation) -> ArenaTape.Value {
    switch activation {
    case .identity: return a
    case .relu: return relu(a)
    case .tanh: return tanh(a)
    case .sigmoid: return sigmoid(a)
    case .softmax: return softmax(a)
    }
}

// MARK: reductions and losses

private func reduceSum(_ a: ArenaTape.Value, scale: Float) -> ArenaTape.Value {
    let tape = a.tape, input = tape[a]
    let output = tape.allocateOutput(rows: 1, columns: 1, needsGradient: input.gradient != nil)
    var total: Float = 0
    for i in 0..<input.count { total += input.value[i] }
    output.value[0] = total * scale
    return tape.append(.init(operation: .sum(a.index, scale: scale), rows: 1, columns: 1, value: output.value, gradient: output.gradient))
}

/// Sum of all elements, a scalar.
///
/// ```swift
/// tape.backward(from: sum(square(prediction - target)))
/// ```
public func sum(_ a: ArenaTape.Value) -> ArenaTape.Value { reduceSum(a, scale: 1) }

/// Mean of all elements, a scalar.
public func mean(_ a: ArenaTape.Value) -> ArenaTape.Value { reduceSum(a, scale: 1 / Float(a.count)) }

/// Mean of (prediction − target)² over all elements.
public func meanSquaredError(_ prediction: ArenaTape.Value, _ target: ArenaTape.Value) -> ArenaTape.Value {
    mean(square(prediction - target))
}

// MARK: image operations (NHWC images as rows of height · width · channels)

/// A 2-D convolution of `x` — `x.rows` images of `geometry`'s input, one per row — by `kernel`
/// [kh · kw · channels, filters] (a Keras kernel [kh, kw, channels, filters] read as a matrix), plus `bias` (one row
/// of filters) and `activation`: one row of outputHeight · outputWidth · filters per image. The same im2col, GEMMs
/// and fused bias + activation as the `Conv2D` layer.
///
/// ```swift
/// let geometry = WindowGeometry(input: (28, 28, 1), window: (3, 3), strides: (1, 1), padding: .valid)!
/// let features = conv2d(images, tape.variable(kernel), tape.variable(bias), geometry: geometry, activation: .relu)
/// ```
public func conv2d(_ x: ArenaTape.Value, _ kernel: ArenaTape.Value, _ bias: ArenaTape.Value, geometry g: WindowGeometry,
                   activation: Activation = .identity) -> ArenaTape.Value {
    let tape = x.tape, input = tape[x], weights = tape[kernel], row = tape[bias]
    precondition(input.columns == g.inputCount, "conv2d: rows of \(input.columns) values are not \(g.inputHeight)×\(g.inputWidth)×\(g.channels) images")
    precondition(weights.rows == g.windowCount, "conv2d: a kernel of \(weights.rows) rows for windows of \(g.windowCount) values")
    let filters = weights.columns
    precondition(row.rows == 1 && row.columns == filters, "conv2d: a bias of \(row.rows) × \(row.columns) for \(filters) filters")
    precondition(activation != .softmax, "conv2d: softmax is not a convolution's activation")
    let pixels = g.outputPixels, rowLength = pixels * g.windowCount
    let output = tape.allocateOutput(rows: input.rows, columns: pixels * filters,
                                     needsGradient: input.gradient != nil || weights.gradient != nil || row.gradient != nil)
    let columns = tape.scratch(input.rows * rowLength)
    let dColumns = input.gradient == nil ? nil : tape.scratch(input.rows * rowLength)
    for r in 0..<input.rows { im2col(input.value + r * g.inputCount, g, into: columns + r * rowLength) }
    gemm(.none, .none, m: input.rows * pixels, n: filters, k: g.windowCount, a: columns, lda: g.windowCount,
         b: weights.value, ldb: filters, beta: 0, c: output.value, ldc: filters)
    biasActivationForward(output.value, bias: row.value, rows: input.rows * pixels, columns: filters, activation: activation)
    return tape.append(.init(operation: .conv2d(x.index, kernel: kernel.index, bias: bias.index, activation, g, columns: columns, dColumns: dColumns),
                             rows: input.rows, columns: output.columns, value: output.value, gradient: output.gradient))
}

/// Max pooling of `x` (rows of `geometry`'s input images): one row of outputHeight · outputWidth · channels per
/// image; the gradient flows to each window's maximum.
public func maxPool2d(_ x: ArenaTape.Value, geometry g: WindowGeometry) -> ArenaTape.Value {
    let tape = x.tape, input = tape[x]
    precondition(input.columns == g.inputCount, "maxPool2d: rows of \(input.columns) values are not \(g.inputHeight)×\(g.inputWidth)×\(g.channels) images")
    let columns = g.outputPixels * g.channels
    let output = tape.allocateOutput(rows: input.rows, columns: columns, needsGradient: input.gradient != nil)
    // Indices below 2^24 (a layer's input is bounded so), kept in the tape's float scratch as 32-bit integers.
    let argmax = UnsafeMutableRawPointer(tape.scratch(input.rows * columns)).bindMemory(to: Int32.self, capacity: input.rows * columns)
    maxPoolForward(input.value, g, samples: input.rows, output: output.value, argmax: argmax)
    return tape.append(.init(operation: .maxPool2d(x.index, g, argmax: argmax), rows: input.rows, columns: columns,
                             value: output.value, gradient: output.gradient))
}

/// Average pooling of `x` (rows of `geometry`'s input images); padded cells are not counted, as in Keras.
public func averagePool2d(_ x: ArenaTape.Value, geometry g: WindowGeometry) -> ArenaTape.Value {
    let tape = x.tape, input = tape[x]
    precondition(input.columns == g.inputCount, "averagePool2d: rows of \(input.columns) values are not \(g.inputHeight)×\(g.inputWidth)×\(g.channels) images")
    let columns = g.outputPixels * g.channels
    let output = tape.allocateOutput(rows: input.rows, columns: columns, needsGradient: input.gradient != nil)
    averagePool(g, samples: input.rows, backward: false, image: input.value, pooled: output.value)
    return tape.append(.init(operation: .averagePool2d(x.index, g), rows: input.rows, columns: columns,
                             value: output.value, gradient: output.gradient))
}

// MARK: backward

extension ArenaTape.Operation {
    /// Accumulates this operation's share of the gradient into its operands' gradients, given d(target)/d(output).
    /// Operands without a gradient (constants, values no variable reaches) are skipped, and so is their GEMM.
    func backward(output: ArenaTape.Record, dOutput: UnsafeMutablePointer<Float>, records: UnsafeBufferPointer<ArenaTape.Record>) {
        switch self {
        case .leaf:
            return

        case let .matmul(a, b, transposeA, transposeB):
            let left = records[a], right = records[b]
            let m = output.rows, n = output.columns, k = transposeA ? left.rows : left.columns
            let opB: Transpose = transposeB ? .transposed : .none
            if let dA = left.gradient {
                if transposeA { // dA = op(B) · dCᵀ
                    gemm(opB, .transposed, m: k, n: m, k: n, a: right.value, lda: right.columns, b: dOutput, ldb: n,
                         beta: 1, c: dA, ldc: left.columns)
                } else { // dA = dC · op(B)ᵀ
                    gemm(.none, transposeB ? .none : .transposed, m: m, n: k, k: n, a: dOutput, lda: n, b: right.value,
                         ldb: right.columns, beta: 1, c: dA, ldc: left.columns)
                }
            }
            if let dB = right.gradient {
                let opA: Transpose = transposeA ? .transposed : .none
                if transposeB { // dB = dCᵀ · op(A)
                    gemm(.transposed, opA, m: n, n: k, k: m, a: dOutput, lda: n, b: left.value, ldb: left.columns,
                         beta: 1, c: dB, ldc: right.columns)
                } else { // dB = op(A)ᵀ · dC
                    gemm(transposeA ? .none : .transposed, .none, m: k, n: n, k: m, a: left.value, lda: left.columns,
                         b: dOutput, ldb: n, beta: 1, c: dB, ldc: right.columns)
                }
            }

        case let .addBias(x, bias, activation):
            // dZ = dOutput ⊙ activation′ (in terms of the output, as the trainer's kernel), added to the input's
            // gradient and summed down the columns for the bias in one pass, without a buffer for dZ. The switch
            // sits outside the loops so each activation's loop vectorizes.
            let rows = output.rows, columns = output.columns, y = UnsafePointer(output.value), dy = UnsafePointer(dOutput)
            let dInput = records[x].gradient, dBias = records[bias].gradient
            @inline(__always) func accumulate(_ slope: (_ y: Float, _ dy: Float) -> Float) {
                for r in 0..<rows {
                    let row = r * columns
                    for c in 0..<columns {
                        let dz = slope(y[row + c], dy[row + c])
                        dInput?[row + c] += dz
                        dBias?[c] += dz
                    }
                }
            }
            switch activation {
            case .identity, .softmax: accumulate { _, dy in dy }
            case .relu: accumulate { y, dy in y > 0 ? dy : 0 }
            case .tanh: accumulate { y, dy in dy * (1 - y * y) }
            case .sigmoid: accumulate { y, dy in dy * y * (1 - y) }
            }

        case let .softmaxCrossEntropy(logits, dLogits):
            guard let dInput = records[logits].gradient else { return }
            let upstream = dOutput[0]
            for i in 0..<records[logits].count { dInput[i] += upstream * dLogits[i] }

        case let .softmax(x):
            guard let dInput = records[x].gradient else { return }
            let columns = output.columns, y = output.value
            for r in 0..<output.rows {
                let yr = y + r * columns, dy = dOutput + r * columns
                var dot: Float = 0
                for c in 0..<columns { dot += dy[c] * yr[c] }
                for c in 0..<columns { dInput[r * columns + c] += yr[c] * (dy[c] - dot) }
            }

        case let .elementwise(op, a, b):
            let left = records[a], right = records[b]
            let at = Broadcast(left), bt = Broadcast(right), x = left.value, y = right.value
            let dA = left.gradient, dB = right.gradient
            for r in 0..<output.rows {
                for c in 0..<output.columns {
                    let ai = at.index(r, c), bi = bt.index(r, c), upstream = dOutput[r * output.columns + c]
                    let u = x[ai], v = y[bi]
                    switch op {
                    case .add:
                        dA?[ai] += upstream
                        dB?[bi] += upstream
                    case .subtract:
                        dA?[ai] += upstream
                        dB?[bi] -= upstream
                    case .multiply:
                        dA?[ai] += upstream * v
                        dB?[bi] += upstream * u
                    case .divide:
                        dA?[ai] += upstream / v
                        dB?[bi] += upstream * (-u / (v * v))
                    }
                }
            }

        case let .scale(a, factor):
            guard let dInput = records[a].gradient else { return }
            for i in 0..<output.count { dInput[i] += dOutput[i] * factor }

        case let .unary(function, a):
            guard let dInput = records[a].gradient else { return }
            let x = records[a].value, y = output.value
            switch function {
            case .negate: for i in 0..<output.count { dInput[i] -= dOutput[i] }
            case .relu: for i in 0..<output.count { dInput[i] += x[i] > 0 ? dOutput[i] : 0 }
            case .tanh: for i in 0..<output.count { dInput[i] += dOutput[i] * (1 - y[i] * y[i]) }
            case .sigmoid: for i in 0..<output.count { dInput[i] += dOutput[i] * y[i] * (1 - y[i]) }
            case .exp: for i in 0..<output.count { dInput[i] += dOutput[i] * y[i] }
            case .log: for i in 0..<output.count { dInput[i] += dOutput[i] / x[i] }
            case .square: for i in 0..<output.count { dInput[i] += dOutput[i] * 2 * x[i] }
            }

        case let .conv2d(x, kernel, bias, activation, g, columns, dColumns):
            // dZ = dOutput ⊙ activation′, in place: nothing reads this value's gradient after its own backward.
            let images = output.rows, pixels = images * g.outputPixels, filters = records[kernel].columns
            activationBackward(dOutput, output: output.value, count: output.count, activation: activation)
            if let dBias = records[bias].gradient { columnSumAccumulate(dBias, dOutput, rows: pixels, columns: filters) }
            if let dKernel = records[kernel].gradient {
                gemm(.transposed, .none, m: g.windowCount, n: filters, k: pixels, a: columns, lda: g.windowCount,
                     b: dOutput, ldb: filters, beta: 1, c: dKernel, ldc: filters)
            }
            if let dInput = records[x].gradient, let dColumns {
                gemm(.none, .transposed, m: pixels, n: g.windowCount, k: filters, a: dOutput, lda: filters,
                     b: records[kernel].value, ldb: filters, beta: 0, c: dColumns, ldc: g.windowCount)
                let rowLength = g.outputPixels * g.windowCount
                for r in 0..<images { col2imAccumulate(dColumns + r * rowLength, g, into: dInput + r * g.inputCount) }
            }

        case let .maxPool2d(x, g, argmax):
            guard let dInput = records[x].gradient else { return }
            let columns = output.columns
            for r in 0..<output.rows {
                let dImage = dInput + r * g.inputCount, dOut = dOutput + r * columns, index = argmax + r * columns
                for o in 0..<columns { dImage[Int(index[o])] += dOut[o] }
            }

        case let .averagePool2d(x, g):
            guard let dInput = records[x].gradient else { return }
            averagePool(g, samples: output.rows, backward: true, image: dInput, pooled: dOutput)

        case let .sum(a, scale):
            guard let dInput = records[a].gradient else { return }
            let upstream = dOutput[0] * scale
            for i in 0..<records[a].count { dInput[i] += upstream }
        }
    }
}
