import Testing
import TandemCore
#if canImport(Glibc)
import Glibc
#endif

@Suite struct ActivationApproximationTests {
    /// fastTanh is Eigen's rational approximation; measured max error against tanhf is ~3.6e-7 over the real line.
    @Test func fastTanhMatchesTanhf() {
        var worst: Float = 0, worstAt: Float = 0
        var i = -200_000
        while i <= 200_000 {
            let x = Float(i) * 1e-4
            let error = abs(fastTanh(x) - tanhf(x))
            if error > worst { worst = error; worstAt = x }
            i += 1
        }
        #expect(worst < 1e-6, "max |fastTanh − tanhf| = \(worst) at \(worstAt)")
    }

    @Test func fastTanhShape() {
        #expect(fastTanh(0) == 0)
        for x: Float in [0.001, 0.3, 1, 2.5, 5, 7.9] { #expect(fastTanh(-x) == -fastTanh(x)) }
        // Clamped at ±7.9053, where float tanh rounds to ±1.
        for x: Float in [7.95, 8, 10, 100, 1e30, .infinity] {
            #expect(fastTanh(x) == 1)
            #expect(fastTanh(-x) == -1)
        }
    }

    @Test func fastSigmoidMatchesLogistic() {
        var worst: Float = 0, worstAt: Float = 0
        var i = -300_000
        while i <= 300_000 {
            let x = Float(i) * 1e-4
            let error = abs(fastSigmoid(x) - 1 / (1 + expf(-x)))
            if error > worst { worst = error; worstAt = x }
            i += 1
        }
        #expect(worst < 1e-6, "max |fastSigmoid − logistic| = \(worst) at \(worstAt)")
        #expect(fastSigmoid(0) == 0.5)
        #expect(fastSigmoid(100) == 1 && fastSigmoid(-100) == 0)
    }
}

@Suite struct KernelTests {
    /// Double-precision softmax cross-entropy per row: log Σ exp(z − max) − (z_label − max).
    static func referenceLoss(_ logits: [Float], labels: [Int], classes: Int) -> (losses: [Double], gradients: [Double]) {
        var losses: [Double] = [], gradients: [Double] = []
        for (r, label) in labels.enumerated() {
            let row = logits[r * classes..<(r + 1) * classes].map(Double.init)
            let largest = row.max()!
            let total = row.map { Glibc.exp($0 - largest) }.reduce(0, +)
            losses.append(Glibc.log(total) - (row[label] - largest))
            for c in 0..<classes { gradients.append(Glibc.exp(row[c] - largest) / total - (c == label ? 1 : 0)) }
        }
        return (losses, gradients)
    }

    @Test func softmaxCrossEntropyMatchesTheUnfusedTape() {
        let rows = 4, classes = 5
        let logits = testTensor([rows, classes], seed: 40, magnitude: 3)
        let labels = [3, 0, 4, 1]
        var dLogits = [Float](repeating: .nan, count: rows * classes)
        let statistics = softmaxCrossEntropy(logits: logits.scalars, labels: labels.map(Float.init), rows: rows,
                                             classes: classes, dLogits: &dLogits, gradientScale: 1 / Float(rows))

        // The same loss built from unfused tape operations: −Σ onehot · log softmax(z) / rows.
        var onehot = [Float](repeating: 0, count: rows * classes)
        for (r, label) in labels.enumerated() { onehot[r * classes + label] = 1 }
        let tape = GradientTape()
        let z = tape.variable(logits)
        let loss = -sum(log(softmax(z)) * tape.constant(Tensor(shape: [rows, classes], scalars: onehot))) * (1 / Float(rows))
        let tapeGradient = tape.gradient(of: loss, withRespectTo: [z])[0]

        #expect(statistics.count == rows)
        #expect(abs(statistics.meanLoss - Double(loss.value.scalar)) < 1e-5)
        #expect(maxAbsDifference(dLogits, tapeGradient.scalars) < 1e-6)

        let reference = Self.referenceLoss(logits.scalars, labels: labels, classes: classes)
        #expect(abs(statistics.lossSum - reference.losses.reduce(0, +)) < 1e-5)
        for i in 0..<rows * classes {
            #expect(abs(Double(dLogits[i]) - reference.gradients[i] / Double(rows)) < 1e-6)
        }
        // The fused tape op uses the kernel; it must agree with both.
        let fusedTape = GradientTape()
        let fusedZ = fusedTape.variable(logits)
        let fused = sparseSoftmaxCrossEntropy(logits: fusedZ, labels: labels)
        #expect(abs(Double(fused.value.scalar) - Double(loss.value.scalar)) < 1e-5)
        #expect(maxAbsDifference(fusedTape.gradient(of: fused, withRespectTo: [fusedZ])[0].scalars, tapeGradient.scalars) < 1e-6)
    }

    @Test func softmaxCrossEntropyIsStableForHugeLogits() {
        let logits: [Float] = [1000, 0, -1000,   1000, 1000, 999,   -1000, -1000, -1000,   -3000, 3000, 0]
        let labels = [0, 1, 2, 0]
        var dLogits = [Float](repeating: .nan, count: logits.count)
        let statistics = softmaxCrossEntropy(logits: logits, labels: labels.map(Float.init), rows: 4, classes: 3,
                                             dLogits: &dLogits, gradientScale: 1)
        let reference = Self.referenceLoss(logits, labels: labels, classes: 3)
        #expect(statistics.lossSum.isFinite)
        #expect(abs(statistics.lossSum - reference.losses.reduce(0, +)) < 1e-3)
        #expect(abs(reference.losses[3] - 6000) < 1e-9)   // sanity of the reference itself
        #expect(dLogits.allSatisfy { $0.isFinite })
        for i in 0..<logits.count { #expect(abs(Double(dLogits[i]) - reference.gradients[i]) < 1e-6) }
        for r in 0..<4 { #expect(abs(dLogits[r * 3..<r * 3 + 3].reduce(0, +)) < 1e-6) }
        // Row 0 is right; row 1 ties at 1000 and arg-max takes the first (0 ≠ 1); rows 2 and 3 are wrong.
        #expect(statistics.correct == 1)

        let tape = GradientTape()
        let z = tape.variable(Tensor(shape: [4, 3], scalars: logits))
        let loss = sparseSoftmaxCrossEntropy(logits: z, labels: labels)
        #expect(abs(Double(loss.value.scalar) - reference.losses.reduce(0, +) / 4) < 1e-3)
        #expect(tape.gradient(of: loss, withRespectTo: [z])[0].scalars.allSatisfy { $0.isFinite })
    }

    @Test func softmaxCrossEntropyWithoutGradientReportsTheSameStatistics() {
        let logits = testTensor([6, 4], seed: 41, magnitude: 2).scalars
        let labels: [Float] = [0, 1, 2, 3, 3, 0]
        var dLogits = [Float](repeating: 0, count: 24)
        let withGradient = softmaxCrossEntropy(logits: logits, labels: labels, rows: 6, classes: 4, dLogits: &dLogits, gradientScale: 1)
        let without = softmaxCrossEntropy(logits: logits, labels: labels, rows: 6, classes: 4, dLogits: nil, gradientScale: 1)
        #expect(withGradient == without)
        var argmax = [Int](repeating: -1, count: 6)
        argmaxRows(logits, rows: 6, columns: 4, into: &argmax)
        #expect(without.correct == zip(argmax, labels).filter { $0 == Int($1) }.count)
    }

    @Test func meanSquaredErrorKernel() {
        let outputs: [Float] = [1, 2, 3, -1, 0.5, 4], targets: [Float] = [0, 2, 5, 1, 0.5, 1]
        var dOutputs = [Float](repeating: .nan, count: 6)
        let statistics = meanSquaredError(outputs: outputs, targets: targets, rows: 2, columns: 3,
                                          dOutputs: &dOutputs, gradientScale: 0.5)
        // row 0: (1 + 0 + 4) / 3, row 1: (4 + 0 + 9) / 3
        #expect(abs(statistics.lossSum - 18.0 / 3) < 1e-6)
        #expect(statistics.count == 2 && statistics.correct == 0)
        let expected = zip(outputs, targets).map { 2 * ($0 - $1) * 0.5 / 3 }
        #expect(maxAbsDifference(dOutputs, expected) < 1e-7)

        // The kernel agrees with the tape's meanSquaredError (mean over every element, so scale 1/rows).
        let tape = GradientTape()
        let prediction = tape.variable(Tensor(shape: [2, 3], scalars: outputs))
        let loss = meanSquaredError(prediction, tape.constant(Tensor(shape: [2, 3], scalars: targets)))
        var scaled = [Float](repeating: 0, count: 6)
        let kernel = meanSquaredError(outputs: outputs, targets: targets, rows: 2, columns: 3, dOutputs: &scaled, gradientScale: 0.5)
        #expect(abs(kernel.meanLoss - Double(loss.value.scalar)) < 1e-6)
        #expect(maxAbsDifference(scaled, tape.gradient(of: loss, withRespectTo: [prediction])[0].scalars) < 1e-7)
    }

    @Test func softmaxRowsIsNormalisedAndStable() {
        var z: [Float] = [1, 2, 3, 1000, 1001, 999, -1000, 0, 1000]
        softmaxRows(&z, rows: 3, columns: 3)
        #expect(z.allSatisfy { $0.isFinite })
        for r in 0..<3 { #expect(abs(z[r * 3..<r * 3 + 3].reduce(0, +) - 1) < 1e-6) }
        let e: [Double] = [1, 2, 3].map { Glibc.exp($0 - 3) }
        for c in 0..<3 { #expect(abs(Double(z[c]) - e[c] / e.reduce(0, +)) < 1e-6) }
        // Same shift-invariant values for row 1 (logits 1000, 1001, 999 ≡ 1, 2, 0).
        let shifted: [Double] = [1, 2, 0].map { Glibc.exp($0) }
        for c in 0..<3 { #expect(abs(Double(z[3 + c]) - shifted[c] / shifted.reduce(0, +)) < 1e-6) }
        #expect(z[8] == 1 && z[6] == 0)
    }

    @Test func argmaxTakesTheFirstOfTies() {
        let z: [Float] = [1, 3, 3, 0,   -1, -1, -1, -1,   0, 0, 0, 5]
        var result = [Int](repeating: -1, count: 3)
        argmaxRows(z, rows: 3, columns: 4, into: &result)
        #expect(result == [1, 0, 3])
    }

    @Test(arguments: Activation.allCases)
    func biasActivationForwardAndBackward(_ activation: Activation) {
        let rows = 3, columns = 4
        let input = testTensor([rows, columns], seed: 42, magnitude: 3, awayFromZero: 0.1).scalars
        let bias: [Float] = [0.25, -0.5, 0.125, 1]
        var z = input
        biasActivationForward(&z, bias: bias, rows: rows, columns: columns, activation: activation)
        for r in 0..<rows {
            for c in 0..<columns {
                let pre = input[r * columns + c] + bias[c]
                let expected: Float
                switch activation {
                case .identity, .softmax: expected = pre
                case .relu: expected = max(pre, 0)
                case .tanh: expected = tanhf(pre)
                case .sigmoid: expected = 1 / (1 + expf(-pre))
                }
                #expect(abs(z[r * columns + c] - expected) < 1e-6, "\(activation) at \(r),\(c)")
            }
        }

        let upstream = testTensor([rows, columns], seed: 43).scalars
        var gradient = upstream
        activationBackward(&gradient, output: z, count: rows * columns, activation: activation)
        for i in 0..<rows * columns {
            let y = z[i]
            let derivative: Float
            switch activation {
            case .identity, .softmax: derivative = 1
            case .relu: derivative = y > 0 ? 1 : 0
            case .tanh: derivative = 1 - y * y
            case .sigmoid: derivative = y * (1 - y)
            }
            #expect(gradient[i] == upstream[i] * derivative)
        }
    }

    @Test func columnSumAccumulates() {
        var bias: [Float] = [1, 2, 3]
        let dZ: [Float] = [1, 10, 100, 2, 20, 200]
        columnSumAccumulate(&bias, dZ, rows: 2, columns: 3)
        #expect(bias == [4, 32, 303])
    }

    /// The blocked sum (32, then 8, then single columns) adds in the same order as row by row: equal to the bit.
    @Test func columnSumAddsInRowOrder() {
        let rows = 37, columns = 75
        let dZ = testValues(rows * columns, seed: 11, magnitude: 1000)
        var expected = testValues(columns, seed: 12)
        var bias = expected
        for r in 0..<rows { for c in 0..<columns { expected[c] += dZ[r * columns + c] } }
        columnSumAccumulate(&bias, dZ, rows: rows, columns: columns)
        #expect(bias == expected)
    }

    @Test(arguments: [(false, false), (true, false), (false, true), (true, true)])
    func gemmMatchesNaiveProduct(transposesA: Bool, transposesB: Bool) {
        let transposeA: Transpose = transposesA ? .transposed : .none
        let transposeB: Transpose = transposesB ? .transposed : .none
        let m = 3, n = 4, k = 5
        let a = testValues(m * k, seed: 44), b = testValues(k * n, seed: 45)
        let c0 = testValues(m * n, seed: 46)
        // Stored layouts: A is m×k (or k×m when transposed), B is k×n (or n×k).
        func aAt(_ i: Int, _ p: Int) -> Double { Double(transposeA == .none ? a[i * k + p] : a[p * m + i]) }
        func bAt(_ p: Int, _ j: Int) -> Double { Double(transposeB == .none ? b[p * n + j] : b[j * k + p]) }
        var c = c0
        gemm(transposeA, transposeB, m: m, n: n, k: k, alpha: 2, a: a, lda: transposeA == .none ? k : m,
             b: b, ldb: transposeB == .none ? n : k, beta: 0.5, c: &c, ldc: n)
        for i in 0..<m {
            for j in 0..<n {
                var dot = 0.0
                for p in 0..<k { dot += aAt(i, p) * bAt(p, j) }
                #expect(abs(Double(c[i * n + j]) - (2 * dot + 0.5 * Double(c0[i * n + j]))) < 1e-5)
            }
        }
    }

    @Test func lossStatisticsCombineBySum() {
        var total = LossStatistics()
        #expect(total.meanLoss == 0 && total.accuracy == 0)
        total += LossStatistics(lossSum: 3, correct: 1, count: 4)
        total += LossStatistics(lossSum: 5, correct: 3, count: 4)
        #expect(total == LossStatistics(lossSum: 8, correct: 4, count: 8))
        #expect(total.meanLoss == 1 && total.accuracy == 0.5)
    }
}
