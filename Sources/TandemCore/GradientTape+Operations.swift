#if canImport(Glibc)
import Glibc
#endif

// The differentiable operations. Each one computes its output and records how to push the output's gradient to
// its inputs. Binary element-wise operations broadcast a smaller operand whose shape is a suffix of the larger's
// (a scalar, or a bias row added to every row of a batch); its gradient sums over the repeated positions.

private func broadcastShape(_ a: [Int], _ b: [Int], _ name: String) -> [Int] {
    let (large, small) = a.reduce(1, *) >= b.reduce(1, *) ? (a, b) : (b, a)
    let isSuffix = small.reduce(1, *) == 1 || (small.count <= large.count && Array(large.suffix(small.count)) == small)
    precondition(isSuffix, "\(name): shapes \(a) and \(b) do not broadcast")
    return large
}

private func elementwise(
    _ a: TapeValue, _ b: TapeValue, _ name: String,
    value: (Float, Float) -> Float, derivatives: @escaping (Float, Float) -> (Float, Float)
) -> TapeValue {
    precondition(a.tape === b.tape, "\(name): values from different tapes")
    let av = a.value, bv = b.value
    let shape = broadcastShape(av.shape, bv.shape, name)
    let count = shape.reduce(1, *)
    let scalars = (0..<count).map { i in value(av.scalars[i % av.count], bv.scalars[i % bv.count]) }
    let ai = a.index, bi = b.index
    return a.tape.record(Tensor(shape: shape, scalars: scalars)) { [tapeIndex = a.tape.values.count] gradients in
        let upstream = gradients[tapeIndex].scalars
        for i in 0..<count {
            let (da, db) = derivatives(av.scalars[i % av.count], bv.scalars[i % bv.count])
            gradients[ai].scalars[i % av.count] += upstream[i] * da
            gradients[bi].scalars[i % bv.count] += upstream[i] * db
        }
    }
}

private func unary(_ a: TapeValue, value: (Float) -> Float, derivative: @escaping (_ input: Float, _ output: Float) -> Float) -> TapeValue {
    let av = a.value
    let output = av.scalars.map(value)
    let ai = a.index
    return a.tape.record(Tensor(shape: av.shape, scalars: output)) { [tapeIndex = a.tape.values.count] gradients in
        let upstream = gradients[tapeIndex].scalars
        for i in 0..<av.count { gradients[ai].scalars[i] += upstream[i] * derivative(av.scalars[i], output[i]) }
    }
}

public func + (a: TapeValue, b: TapeValue) -> TapeValue {
    elementwise(a, b, "+", value: +, derivatives: { _, _ in (1, 1) })
}

public func - (a: TapeValue, b: TapeValue) -> TapeValue {
    elementwise(a, b, "-", value: -, derivatives: { _, _ in (1, -1) })
}

public func * (a: TapeValue, b: TapeValue) -> TapeValue {
    elementwise(a, b, "*", value: *, derivatives: { x, y in (y, x) })
}

public func / (a: TapeValue, b: TapeValue) -> TapeValue {
    elementwise(a, b, "/", value: /, derivatives: { x, y in (1 / y, -x / (y * y)) })
}

public func * (a: TapeValue, scale: Float) -> TapeValue { a * a.tape.constant(Tensor(scale)) }

public prefix func - (a: TapeValue) -> TapeValue { unary(a, value: { -$0 }, derivative: { _, _ in -1 }) }

public func relu(_ a: TapeValue) -> TapeValue { unary(a, value: { max($0, 0) }, derivative: { x, _ in x > 0 ? 1 : 0 }) }
public func tanh(_ a: TapeValue) -> TapeValue { unary(a, value: { tanhf($0) }, derivative: { _, y in 1 - y * y }) }
public func sigmoid(_ a: TapeValue) -> TapeValue { unary(a, value: { 1 / (1 + expf(-$0)) }, derivative: { _, y in y * (1 - y) }) }
public func exp(_ a: TapeValue) -> TapeValue { unary(a, value: { expf($0) }, derivative: { _, y in y }) }
public func log(_ a: TapeValue) -> TapeValue { unary(a, value: { logf($0) }, derivative: { x, _ in 1 / x }) }
public func square(_ a: TapeValue) -> TapeValue { unary(a, value: { $0 * $0 }, derivative: { x, _ in 2 * x }) }

/// Applies an activation by name, as a layer description would.
public func activate(_ a: TapeValue, _ activation: Activation) -> TapeValue {
    switch activation {
    case .identity: return a
    case .relu: return relu(a)
    case .tanh: return tanh(a)
    case .sigmoid: return sigmoid(a)
    case .softmax: return softmax(a)
    }
}

/// Sum of all elements, a scalar.
public func sum(_ a: TapeValue) -> TapeValue {
    let av = a.value
    let ai = a.index
    return a.tape.record(Tensor(av.scalars.reduce(0, +))) { [tapeIndex = a.tape.values.count] gradients in
        let upstream = gradients[tapeIndex].scalars[0]
        for i in 0..<av.count { gradients[ai].scalars[i] += upstream }
    }
}

/// Mean of all elements, a scalar.
public func mean(_ a: TapeValue) -> TapeValue { sum(a) * (1 / Float(a.value.count)) }

/// [m, k] · [k, n] → [m, n], through BLAS both ways.
public func matmul(_ a: TapeValue, _ b: TapeValue) -> TapeValue {
    let av = a.value, bv = b.value
    precondition(av.shape.count == 2 && bv.shape.count == 2 && av.shape[1] == bv.shape[0],
                 "matmul: shapes \(av.shape) and \(bv.shape) do not chain")
    let m = av.shape[0], k = av.shape[1], n = bv.shape[1]
    var output = [Float](repeating: 0, count: m * n)
    gemm(.none, .none, m: m, n: n, k: k, a: av.scalars, lda: k, b: bv.scalars, ldb: n, beta: 0, c: &output, ldc: n)
    let ai = a.index, bi = b.index
    return a.tape.record(Tensor(shape: [m, n], scalars: output)) { [tapeIndex = a.tape.values.count] gradients in
        let upstream = gradients[tapeIndex].scalars
        // dA += dC · Bᵀ ; dB += Aᵀ · dC
        gemm(.none, .transposed, m: m, n: k, k: n, a: upstream, lda: n, b: bv.scalars, ldb: n,
             beta: 1, c: &gradients[ai].scalars, ldc: k)
        gemm(.transposed, .none, m: k, n: n, k: m, a: av.scalars, lda: k, b: upstream, ldb: n,
             beta: 1, c: &gradients[bi].scalars, ldc: n)
    }
}

/// Row-wise softmax of a [rows, classes] tensor.
public func softmax(_ a: TapeValue) -> TapeValue {
    let av = a.value
    let classes = av.shape.last ?? 1, rows = av.count / classes
    var output = av.scalars
    output.withUnsafeMutableBufferPointer { softmaxRows($0.baseAddress!, rows: rows, columns: classes) }
    let ai = a.index
    return a.tape.record(Tensor(shape: av.shape, scalars: output)) { [tapeIndex = a.tape.values.count] gradients in
        let upstream = gradients[tapeIndex].scalars
        for r in 0..<rows {
            var dot: Float = 0
            for c in 0..<classes { dot += upstream[r * classes + c] * output[r * classes + c] }
            for c in 0..<classes {
                gradients[ai].scalars[r * classes + c] += output[r * classes + c] * (upstream[r * classes + c] - dot)
            }
        }
    }
}

/// Mean sparse categorical cross-entropy of [rows, classes] logits against integer labels, with the softmax fused
/// (stable for any logits).
public func sparseSoftmaxCrossEntropy(logits: TapeValue, labels: [Int]) -> TapeValue {
    let lv = logits.value
    let classes = lv.shape.last ?? 1, rows = lv.count / classes
    precondition(labels.count == rows, "sparseSoftmaxCrossEntropy: \(labels.count) labels for \(rows) rows")
    let floatLabels = labels.map(Float.init)
    var dLogits = [Float](repeating: 0, count: lv.count)
    let statistics = softmaxCrossEntropy(
        logits: lv.scalars, labels: floatLabels, rows: rows, classes: classes, dLogits: &dLogits, gradientScale: 1 / Float(rows))
    let li = logits.index
    return logits.tape.record(Tensor(Float(statistics.meanLoss))) { [tapeIndex = logits.tape.values.count] gradients in
        let upstream = gradients[tapeIndex].scalars[0]
        for i in 0..<dLogits.count { gradients[li].scalars[i] += upstream * dLogits[i] }
    }
}

/// Mean of (prediction − target)² over all elements.
public func meanSquaredError(_ prediction: TapeValue, _ target: TapeValue) -> TapeValue {
    mean(square(prediction - target))
}
