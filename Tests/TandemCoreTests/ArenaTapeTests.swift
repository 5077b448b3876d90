import Testing
import TandemCore
#if canImport(Glibc)
import Glibc
#endif

/// Every operation of the arena tape, checked against central finite differences and against the Tensor-valued
/// `GradientTape` (an independent implementation: closures over arrays instead of records over pointers).
@Suite struct ArenaTapeTests {
    // MARK: element-wise operations, same shape and broadcast

    /// (shape of a, shape of b) in the ranks both tapes support; the last pair broadcasts a column, which only the
    /// arena tape does (it is checked against finite differences alone).
    static let broadcastCases: [([Int], [Int])] = [
        ([3, 4], [3, 4]), ([3, 4], [4]), ([4], [3, 4]), ([3, 4], []), ([], [3, 4]), ([3, 4], [1]), ([3, 1], [3, 4]),
    ]

    static func referenceIfSupported(_ a: [Int], _ b: [Int], _ op: @escaping (TapeValue, TapeValue) -> TapeValue) -> (([TapeValue]) -> TapeValue)? {
        a == [3, 1] ? nil : { op($0[0], $0[1]) }
    }

    @Test(arguments: broadcastCases)
    func addition(a: [Int], b: [Int]) {
        checkArenaGradients([testTensor(a, seed: 1), testTensor(b, seed: 2)], reference: Self.referenceIfSupported(a, b, +)) { $0[0] + $0[1] }
    }

    @Test(arguments: broadcastCases)
    func subtraction(a: [Int], b: [Int]) {
        checkArenaGradients([testTensor(a, seed: 3), testTensor(b, seed: 4)], reference: Self.referenceIfSupported(a, b, -)) { $0[0] - $0[1] }
    }

    @Test(arguments: broadcastCases)
    func multiplication(a: [Int], b: [Int]) {
        checkArenaGradients([testTensor(a, seed: 5), testTensor(b, seed: 6)], reference: Self.referenceIfSupported(a, b, *)) { $0[0] * $0[1] }
    }

    @Test(arguments: broadcastCases)
    func division(a: [Int], b: [Int]) {
        checkArenaGradients([testTensor(a, seed: 7), testTensor(b, seed: 8, magnitude: 2, awayFromZero: 1)],
                            reference: Self.referenceIfSupported(a, b, /)) { $0[0] / $0[1] }
    }

    @Test func scalingAndNegation() {
        checkArenaGradients([testTensor([3, 4], seed: 9)], reference: { $0[0] * 2.5 }) { $0[0] * 2.5 }
        checkArenaGradients([testTensor([3, 4], seed: 10)], reference: { -$0[0] }) { -$0[0] }
    }

    // MARK: unary operations

    @Test func unaryOperations() {
        let signed = testTensor([4, 5], seed: 12, magnitude: 2, awayFromZero: 0.1)
        checkArenaGradients([signed], reference: { relu($0[0]) }) { relu($0[0]) }
        checkArenaGradients([signed], reference: { tanh($0[0]) }) { tanh($0[0]) }
        checkArenaGradients([signed], reference: { sigmoid($0[0]) }) { sigmoid($0[0]) }
        checkArenaGradients([signed], reference: { exp($0[0]) }) { exp($0[0]) }
        checkArenaGradients([signed], reference: { square($0[0]) }) { square($0[0]) }
        let positive = testTensor([3, 4], seed: 16, magnitude: 2, awayFromZero: 0.5, positive: true)
        checkArenaGradients([positive], reference: { log($0[0]) }) { log($0[0]) }
    }

    @Test(arguments: Activation.allCases)
    func activateByName(_ activation: Activation) {
        let input = testTensor([3, 4], seed: 18, magnitude: 2, awayFromZero: 0.1)
        checkArenaGradients([input], reference: { activate($0[0], activation) }) { activate($0[0], activation) }
    }

    // MARK: reductions, softmax, losses

    @Test func reductions() {
        checkArenaGradients([testTensor([3, 4], seed: 19)], reference: { sum($0[0]) }) { sum($0[0]) }
        checkArenaGradients([testTensor([3, 4], seed: 20)], reference: { mean($0[0]) }) { mean($0[0]) }
    }

    @Test func softmaxOperation() {
        checkArenaGradients([testTensor([3, 5], seed: 23, magnitude: 3)], reference: { softmax($0[0]) }) { softmax($0[0]) }
    }

    @Test func sparseSoftmaxCrossEntropyOperation() {
        let labels: [Float] = [2, 0, 1, 2]
        checkArenaGradients([testTensor([4, 3], seed: 24, magnitude: 2)],
                            reference: { sparseSoftmaxCrossEntropy(logits: $0[0], labels: labels.map { Int($0) }) }) {
            sparseSoftmaxCrossEntropy(logits: $0[0], labels: labels)
        }
        // Averaged over a global batch of 10 (this replica's 4 rows are part of it): the loss and gradient scale by 4/10.
        checkArenaGradients([testTensor([4, 3], seed: 24, magnitude: 2)],
                            reference: { sparseSoftmaxCrossEntropy(logits: $0[0], labels: labels.map { Int($0) }) * 0.4 }) {
            sparseSoftmaxCrossEntropy(logits: $0[0], labels: labels, globalBatchSize: 10)
        }
    }

    @Test func sparseSoftmaxCrossEntropyReportsLossSumAndHits() {
        let variables = ParameterArena(shapes: ["logits": [3, 3]])
        variables.assign(variables["logits"], Tensor(shape: [3, 3], scalars: [5, 0, 0, 0, 5, 0, 0, 5, 0]))
        let tape = ArenaTape(variables: variables)
        var statistics = LossStatistics(lossSum: 1, correct: 1, count: 1)
        let loss = sparseSoftmaxCrossEntropy(logits: tape.variable(variables["logits"]), labels: [0, 1, 2], statistics: &statistics)
        // Rows 0 and 1 are right, row 2 wrong; the statistics add to what was there.
        #expect(statistics.count == 4 && statistics.correct == 3)
        #expect(abs(statistics.lossSum - 1 - 3 * Double(loss.scalar)) < 1e-5)
    }

    @Test func meanSquaredErrorOperation() {
        checkArenaGradients([testTensor([3, 2], seed: 25), testTensor([3, 2], seed: 26)], reference: { meanSquaredError($0[0], $0[1]) }) {
            meanSquaredError($0[0], $0[1])
        }
    }

    // MARK: matmul and the fused dense operations

    @Test(arguments: [(3, 4, 2), (1, 5, 1), (4, 1, 3), (2, 3, 5)])
    func matmulOperation(m: Int, k: Int, n: Int) {
        checkArenaGradients([testTensor([m, k], seed: 21), testTensor([k, n], seed: 22)], reference: { matmul($0[0], $0[1]) }) {
            matmul($0[0], $0[1])
        }
    }

    /// The transposes are flags to the GEMMs, forward and backward (the Tensor tape has none: finite differences
    /// check the gradients, and the product is compared with one of explicitly transposed copies).
    @Test(arguments: [(false, true), (true, false), (true, true)])
    func matmulWithTransposes(transposeA: Bool, transposeB: Bool) {
        let (m, k, n) = (3, 4, 2)
        let a = testTensor(transposeA ? [k, m] : [m, k], seed: 31), b = testTensor(transposeB ? [n, k] : [k, n], seed: 32)
        checkArenaGradients([a, b], reference: nil) { matmul($0[0], $0[1], transposeA: transposeA, transposeB: transposeB) }
        let variables = ParameterArena(shapes: ["a": a.shape, "b": b.shape])
        variables.assign(variables["a"], a)
        variables.assign(variables["b"], b)
        let tape = ArenaTape(variables: variables)
        let product = matmul(tape.variable(variables["a"]), tape.variable(variables["b"]), transposeA: transposeA, transposeB: transposeB)
        let plain = GradientTape()
        let expected = matmul(plain.constant(transposeA ? transposedCopy(a) : a), plain.constant(transposeB ? transposedCopy(b) : b)).value
        #expect(product.rows == m && product.columns == n)
        #expect(maxAbsDifference(Array(product.values), expected.scalars) <= 1e-6)
    }

    @Test(arguments: [Activation.identity, .relu, .tanh, .sigmoid])
    func addBiasWithActivation(_ activation: Activation) {
        let x = testTensor([4, 3], seed: 33, magnitude: 2), bias = testTensor([3], seed: 34, magnitude: 0.5)
        checkArenaGradients([x, bias], reference: { activate($0[0] + $0[1], activation) }) {
            addBias($0[0], $0[1], activation: activation)
        }
    }

    @Test func compositeNetworkGradient() {
        let x = testTensor([4, 3], seed: 27)
        let parameters = [testTensor([3, 5], seed: 28), testTensor([5], seed: 29), testTensor([5, 2], seed: 30), testTensor([2], seed: 31)]
        let labels: [Float] = [0, 1, 1, 0]
        checkArenaGradients(parameters, reference: { p in
            let tape = p[0].tape
            let logits = matmul(tanh(matmul(tape.constant(x), p[0]) + p[1]), p[2]) + p[3]
            return sparseSoftmaxCrossEntropy(logits: logits, labels: [0, 1, 1, 0]) + mean(square(p[0])) * 0.01
        }) { p in
            let tape = p[0].tape
            let logits = addBias(matmul(addBias(matmul(tape.constant(x), p[0]), p[1], activation: .tanh), p[2]), p[3])
            return sparseSoftmaxCrossEntropy(logits: logits, labels: labels) + mean(square(p[0])) * 0.01
        }
    }

    // MARK: the tape itself

    @Test func reusedValueAccumulatesGradient() {
        let variables = ParameterArena(shapes: ["x": [3]])
        variables.assign(variables["x"], Tensor([1.5, -2, 3]))
        let tape = ArenaTape(variables: variables)
        let x = tape.variable(variables["x"])
        tape.backward(from: sum(x * x + x * 3))
        #expect(variables.gradient(of: variables["x"]) == Tensor([6, -1, 9]))
    }

    @Test func constantsAndIntermediates() {
        let variables = ParameterArena(shapes: ["x": [2], "unused": [2, 2]])
        variables.assign(variables["x"], Tensor([1, 2]))
        let tape = ArenaTape(variables: variables)
        let input = FlatArena(count: 2)
        input[0] = 3
        input[1] = 4
        let data = tape.constant(input.base, rows: 1, columns: 2)
        let doubled = tape.variable(variables["x"]) * 2
        let loss = sum(square(doubled) * data)
        tape.backward(from: loss)
        #expect(variables.gradient(of: variables["x"]) == Tensor([24, 64]))   // d/dx Σ 4x²·c = 8xc
        #expect(variables.gradient(of: variables["unused"]) == Tensor(zeros: [2, 2]))
        #expect(Array(doubled.gradient!) == [12, 32])                         // d/dd Σ d²·c = 2dc
        #expect(data.gradient == nil)                                          // no gradient flows into data
        withExtendedLifetime(input) {} // the tape read it in place until here
    }

    /// A step recorded again after `reset()` reuses the same storage: the same addresses, the same capacity. The
    /// first step of a size may outgrow the scratch space (it then gets one block for the whole step at the next
    /// reset); a larger batch grows it once more, and smaller ones fit in it.
    @Test func resetReusesStorage() {
        let variables = ParameterArena(shapes: ["w": [8, 4], "b": [4]])
        let tape = ArenaTape(variables: variables)
        let batch = FlatArena(count: 100 * 8)
        func step(rows: Int) -> UnsafePointer<Float> {
            tape.reset()
            let x = tape.constant(batch.base, rows: rows, columns: 8)
            let hidden = addBias(matmul(x, tape.variable(variables["w"])), tape.variable(variables["b"]), activation: .relu)
            variables.zeroGradients()
            tape.backward(from: mean(hidden))
            return hidden.values.baseAddress!
        }
        _ = step(rows: 10)
        let second = step(rows: 10), capacity = tape.scratchCapacity
        #expect(step(rows: 10) == second && tape.scratchCapacity == capacity)
        _ = step(rows: 100)
        let grown = step(rows: 100), grownCapacity = tape.scratchCapacity
        #expect(grownCapacity > capacity)
        _ = step(rows: 7)
        #expect(step(rows: 100) == grown && tape.scratchCapacity == grownCapacity)
    }

    @Test func backwardSumsIntoExistingGradients() {
        let variables = ParameterArena(shapes: ["w": [2]])
        variables.assign(variables["w"], Tensor([1, -1]))
        let tape = ArenaTape(variables: variables)
        for _ in 0..<3 {
            tape.reset()
            tape.backward(from: sum(tape.variable(variables["w"]) * 2))
        }
        #expect(variables.gradient(of: variables["w"]) == Tensor([6, 6]))
    }
}
