import CBLAS
#if canImport(Glibc)
import Glibc
#endif

// The hot kernels of a training step. They work on preallocated pointers (bounds-checked arrays keep loops from
// vectorizing), write outputs first, and the backward kernels accumulate into their gradients (`+=`), so zeroing
// all gradients is one memset of the arena.

public enum Transpose { case none, transposed }

/// Row-major C = alpha · op(A) · op(B) + beta · C, with op(A) m×k and op(B) k×n; transposes are flags, never copies.
@inline(__always)
public func gemm(
    _ transposeA: Transpose, _ transposeB: Transpose, m: Int, n: Int, k: Int,
    alpha: Float = 1, a: UnsafePointer<Float>, lda: Int, b: UnsafePointer<Float>, ldb: Int,
    beta: Float, c: UnsafeMutablePointer<Float>, ldc: Int
) {
    cblas_sgemm(
        CblasRowMajor, transposeA == .none ? CblasNoTrans : CblasTrans, transposeB == .none ? CblasNoTrans : CblasTrans,
        Int32(m), Int32(n), Int32(k), alpha, a, Int32(lda), b, Int32(ldb), beta, c, Int32(ldc))
}

/// Sets how many threads OpenBLAS may use; Tandem uses one per replica, or small GEMMs get slower, not faster.
public func setBLASThreads(_ count: Int) { openblas_set_num_threads(Int32(count)) }

/// z[r, c] = activation(z[r, c] + bias[c]) in one pass over the GEMM's output. Softmax is left to the loss or to
/// `softmaxRows`, so here it adds the bias only.
public func biasActivationForward(
    _ z: UnsafeMutablePointer<Float>, bias: UnsafePointer<Float>, rows: Int, columns: Int, activation: Activation
) {
    for r in 0..<rows {
        let row = z + r * columns
        switch activation {
        case .identity, .softmax: for c in 0..<columns { row[c] += bias[c] }
        case .relu: for c in 0..<columns { row[c] = max(row[c] + bias[c], 0) }
        case .tanh: for c in 0..<columns { row[c] = fastTanh(row[c] + bias[c]) }
        case .sigmoid: for c in 0..<columns { row[c] = fastSigmoid(row[c] + bias[c]) }
        }
    }
}

/// dOutput ⊙= activation′, written in terms of the activation's output (which forward kept), in place.
public func activationBackward(
    _ dOutput: UnsafeMutablePointer<Float>, output: UnsafePointer<Float>, count: Int, activation: Activation
) {
    switch activation {
    case .identity, .softmax: return
    case .relu: for i in 0..<count { dOutput[i] = output[i] > 0 ? dOutput[i] : 0 }
    case .tanh: for i in 0..<count { dOutput[i] *= 1 - output[i] * output[i] }
    case .sigmoid: for i in 0..<count { dOutput[i] *= output[i] * (1 - output[i]) }
    }
}

/// dBias[c] += Σ_r dZ[r, c].
/// Columns are summed in blocks held in registers down all the rows: the same additions in the same order as row
/// by row (results are unchanged to the bit), without a store and reload of `dBias` per element (the compiler cannot
/// keep them in registers itself, as `dBias` might alias `dZ`).
public func columnSumAccumulate(_ dBias: UnsafeMutablePointer<Float>, _ dZ: UnsafePointer<Float>, rows: Int, columns: Int) {
    let stride = columns * MemoryLayout<Float>.stride
    @inline(__always) func load(_ p: UnsafeRawPointer) -> SIMD8<Float> { p.loadUnaligned(as: SIMD8<Float>.self) }
    @inline(__always) func store(_ v: SIMD8<Float>, _ p: UnsafeMutablePointer<Float>) { UnsafeMutableRawPointer(p).storeBytes(of: v, as: SIMD8<Float>.self) }
    var c = 0
    while c + 32 <= columns {
        var s0 = load(dBias + c), s1 = load(dBias + c + 8), s2 = load(dBias + c + 16), s3 = load(dBias + c + 24)
        var row = UnsafeRawPointer(dZ + c)
        for _ in 0..<rows {
            s0 += load(row); s1 += load(row + 32); s2 += load(row + 64); s3 += load(row + 96)
            row += stride
        }
        store(s0, dBias + c); store(s1, dBias + c + 8); store(s2, dBias + c + 16); store(s3, dBias + c + 24)
        c += 32
    }
    while c + 8 <= columns {
        var sum = load(dBias + c), row = UnsafeRawPointer(dZ + c)
        for _ in 0..<rows { sum += load(row); row += stride }
        store(sum, dBias + c)
        c += 8
    }
    while c < columns {
        var sum = dBias[c]
        for r in 0..<rows { sum += dZ[r * columns + c] }
        dBias[c] = sum
        c += 1
    }
}

/// Softmax over each row in place (max subtracted first, so large logits do not overflow).
public func softmaxRows(_ z: UnsafeMutablePointer<Float>, rows: Int, columns: Int) {
    for r in 0..<rows {
        let row = z + r * columns
        var largest = row[0]
        for c in 1..<columns { largest = max(largest, row[c]) }
        var sum: Float = 0
        for c in 0..<columns {
            row[c] = expf(row[c] - largest)
            sum += row[c]
        }
        let inverse = 1 / sum
        for c in 0..<columns { row[c] *= inverse }
    }
}

/// What a loss kernel reports for one batch: summed, so shards and groups combine by addition.
public struct LossStatistics: Sendable, Equatable {
    public var lossSum: Double
    public var correct: Int
    public var count: Int

    public init(lossSum: Double = 0, correct: Int = 0, count: Int = 0) {
        self.lossSum = lossSum
        self.correct = correct
        self.count = count
    }

    public static func += (lhs: inout LossStatistics, rhs: LossStatistics) {
        lhs.lossSum += rhs.lossSum
        lhs.correct += rhs.correct
        lhs.count += rhs.count
    }

    public var meanLoss: Double { count > 0 ? lossSum / Double(count) : 0 }
    public var accuracy: Double { count > 0 ? Double(correct) / Double(count) : 0 }
}

/// Softmax + sparse categorical cross-entropy from logits, fused: one pass gives the loss, the arg-max hits and
/// dLogits = (softmax − onehot) · gradientScale. Subtracting the row max and taking the loss as
/// log Σ exp(z − max) − (z_label − max) keeps it finite for any logits.
/// `dLogits` may be nil for evaluation.
public func softmaxCrossEntropy(
    logits: UnsafePointer<Float>, labels: UnsafePointer<Float>, rows: Int, classes: Int,
    dLogits: UnsafeMutablePointer<Float>?, gradientScale: Float
) -> LossStatistics {
    var statistics = LossStatistics(count: rows)
    for r in 0..<rows {
        let z = logits + r * classes
        let label = Int(labels[r])
        var largest = z[0]
        var best = 0
        for c in 1..<classes where z[c] > largest {
            largest = z[c]
            best = c
        }
        var sum: Float = 0
        for c in 0..<classes { sum += expf(z[c] - largest) }
        statistics.lossSum += Double(logf(sum) - (z[label] - largest))
        if best == label { statistics.correct += 1 }
        if let dLogits {
            let g = dLogits + r * classes
            let scale = gradientScale / sum
            for c in 0..<classes { g[c] = expf(z[c] - largest) * scale }
            g[label] -= gradientScale
        }
    }
    return statistics
}

/// Mean squared error over all outputs: loss Σ (y − t)² / columns per row, dOutput = 2 (y − t) · gradientScale / columns.
/// `correct` counts nothing: accuracy is not defined for regression.
public func meanSquaredError(
    outputs: UnsafePointer<Float>, targets: UnsafePointer<Float>, rows: Int, columns: Int,
    dOutputs: UnsafeMutablePointer<Float>?, gradientScale: Float
) -> LossStatistics {
    var statistics = LossStatistics(count: rows)
    let perColumn = 1 / Float(columns)
    for r in 0..<rows {
        var rowSum: Float = 0
        for c in 0..<columns {
            let difference = outputs[r * columns + c] - targets[r * columns + c]
            rowSum += difference * difference
            dOutputs?[r * columns + c] = 2 * difference * gradientScale * perColumn
        }
        statistics.lossSum += Double(rowSum * perColumn)
    }
    return statistics
}

/// Arg-max of each row.
public func argmaxRows(_ z: UnsafePointer<Float>, rows: Int, columns: Int, into result: UnsafeMutablePointer<Int>) {
    for r in 0..<rows {
        let row = z + r * columns
        var best = 0
        for c in 1..<columns where row[c] > row[best] { best = c }
        result[r] = best
    }
}

/// Sums `count` buffers into buffer 0 in one fixed binary tree — ((b0 + b1) + (b2 + b3)) ... — over the elements in
/// `elements`. The tree's shape, not who runs it, fixes the result bit for bit: the trainer's reduction groups and the
/// replica threads' exchange both sum with it, so 1 process and N replicas agree exactly.
public func fixedTreeSum(count: Int, elements: Range<Int>, buffer: (Int) -> UnsafeMutablePointer<Float>) {
    var span = 1
    while span < count {
        for left in stride(from: 0, to: count - span, by: 2 * span) {
            let sum = buffer(left), right = UnsafePointer(buffer(left + span))
            for i in elements { sum[i] += right[i] }
        }
        span *= 2
    }
}
