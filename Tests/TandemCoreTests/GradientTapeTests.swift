import Testing
import TandemCore
#if canImport(Glibc)
import Glibc
#endif

/// Every differentiable operation, checked against central finite differences (and its forward value against a
/// direct computation).
@Suite struct GradientTapeTests {
    // MARK: binary element-wise operations, same shape and broadcast

    /// (shape of a, shape of b): the smaller operand's shape is a suffix of the larger's, on either side.
    static let broadcastCases: [([Int], [Int])] = [
        ([3, 4], [3, 4]), ([3, 4], [4]), ([4], [3, 4]), ([2, 3, 4], [3, 4]), ([3, 4], []), ([], [3, 4]), ([3, 4], [1]),
    ]

    @Test(arguments: broadcastCases)
    func addition(a: [Int], b: [Int]) {
        checkGradients([testTensor(a, seed: 1), testTensor(b, seed: 2)]) { $0[0] + $0[1] }
    }

    @Test(arguments: broadcastCases)
    func subtraction(a: [Int], b: [Int]) {
        checkGradients([testTensor(a, seed: 3), testTensor(b, seed: 4)]) { $0[0] - $0[1] }
    }

    @Test(arguments: broadcastCases)
    func multiplication(a: [Int], b: [Int]) {
        checkGradients([testTensor(a, seed: 5), testTensor(b, seed: 6)]) { $0[0] * $0[1] }
    }

    @Test(arguments: broadcastCases)
    func division(a: [Int], b: [Int]) {
        // Denominators of magnitude 1...2 keep the finite differences far from the pole.
        checkGradients([testTensor(a, seed: 7), testTensor(b, seed: 8, magnitude: 2, awayFromZero: 1)]) { $0[0] / $0[1] }
    }

    @Test func broadcastForwardValues() {
        let tape = GradientTape()
        let a = tape.constant(Tensor(shape: [2, 3], scalars: [1, 2, 3, 4, 5, 6]))
        let row = tape.constant(Tensor([10, 20, 30]))
        #expect((a + row).value == Tensor(shape: [2, 3], scalars: [11, 22, 33, 14, 25, 36]))
        #expect((row + a).value == Tensor(shape: [2, 3], scalars: [11, 22, 33, 14, 25, 36]))
        #expect((a - row).value == Tensor(shape: [2, 3], scalars: [-9, -18, -27, -6, -15, -24]))
        #expect((row - a).value == Tensor(shape: [2, 3], scalars: [9, 18, 27, 6, 15, 24]))
        #expect((a * row).value == Tensor(shape: [2, 3], scalars: [10, 40, 90, 40, 100, 180]))
        #expect((row / a).value.scalars == [10, 10, 10, 2.5, 4, 5])
        #expect((a * 0.5).value == Tensor(shape: [2, 3], scalars: [0.5, 1, 1.5, 2, 2.5, 3]))
    }

    @Test func broadcastGradientSumsOverRepeatedPositions() {
        let tape = GradientTape()
        let a = tape.variable(Tensor(shape: [2, 3], scalars: [1, 2, 3, 4, 5, 6]))
        let bias = tape.variable(Tensor([10, 20, 30]))
        let (da, dbias) = tape.gradient(of: sum(a * bias), withRespectTo: a, bias)
        #expect(da == Tensor(shape: [2, 3], scalars: [10, 20, 30, 10, 20, 30]))
        #expect(dbias == Tensor([5, 7, 9]))
    }

    @Test func scalarMultiplication() {
        checkGradients([testTensor([3, 4], seed: 9)]) { $0[0] * 2.5 }
        checkGradients([testTensor([5], seed: 10)]) { $0[0] * -0.75 }
    }

    @Test func negation() {
        let tape = GradientTape()
        #expect((-tape.constant(Tensor([1, -2, 3]))).value == Tensor([-1, 2, -3]))
        checkGradients([testTensor([3, 4], seed: 11)]) { -$0[0] }
    }

    // MARK: unary operations

    @Test func reluAwayFromTheKink() {
        let input = testTensor([4, 5], seed: 12, awayFromZero: 0.1)
        #expect(input.scalars.contains { $0 < 0 } && input.scalars.contains { $0 > 0 })
        let gradient = checkGradients([input]) { relu($0[0]) }
        for (x, g) in zip(input.scalars, gradient[0].scalars) where x < 0 { #expect(g == 0) }
        let tape = GradientTape()
        #expect(relu(tape.constant(input)).value.scalars == input.scalars.map { max($0, 0) })
    }

    @Test func tanhOperation() {
        let input = testTensor([3, 4], seed: 13, magnitude: 2)
        checkGradients([input]) { tanh($0[0]) }
        let tape = GradientTape()
        #expect(tanh(tape.constant(input)).value.scalars == input.scalars.map { tanhf($0) })
    }

    @Test func sigmoidOperation() {
        let input = testTensor([3, 4], seed: 14, magnitude: 3)
        checkGradients([input]) { sigmoid($0[0]) }
        let tape = GradientTape()
        let expected = input.scalars.map { 1 / (1 + expf(-$0)) }
        #expect(maxAbsDifference(sigmoid(tape.constant(input)).value.scalars, expected) <= 1e-7)
    }

    @Test func expOperation() {
        let input = testTensor([3, 4], seed: 15)
        checkGradients([input]) { exp($0[0]) }
        let tape = GradientTape()
        #expect(exp(tape.constant(input)).value.scalars == input.scalars.map { expf($0) })
    }

    @Test func logOperation() {
        let input = testTensor([3, 4], seed: 16, magnitude: 2, awayFromZero: 0.5, positive: true)
        checkGradients([input]) { log($0[0]) }
        let tape = GradientTape()
        #expect(log(tape.constant(input)).value.scalars == input.scalars.map { logf($0) })
    }

    @Test func squareOperation() {
        let input = testTensor([3, 4], seed: 17, magnitude: 2)
        checkGradients([input]) { square($0[0]) }
        let tape = GradientTape()
        #expect(square(tape.constant(input)).value.scalars == input.scalars.map { $0 * $0 })
    }

    @Test(arguments: Activation.allCases)
    func activateByName(_ activation: Activation) {
        let input = testTensor([3, 4], seed: 18, magnitude: 2, awayFromZero: 0.1)
        checkGradients([input]) { activate($0[0], activation) }
        let tape = GradientTape(), x = tape.constant(input)
        let expected: Tensor
        switch activation {
        case .identity: expected = input
        case .relu: expected = relu(x).value
        case .tanh: expected = tanh(x).value
        case .sigmoid: expected = sigmoid(x).value
        case .softmax: expected = softmax(x).value
        }
        #expect(activate(x, activation).value == expected)
    }

    // MARK: reductions

    @Test func sumOperation() {
        let input = testTensor([3, 4], seed: 19)
        let gradient = checkGradients([input]) { sum($0[0]) }
        let tape = GradientTape()
        let total = sum(tape.constant(input))
        #expect(total.shape == [])
        #expect(abs(Double(total.value.scalar) - input.scalars.reduce(0.0) { $0 + Double($1) }) < 1e-6)
        // d sum / dx = 1 everywhere, scaled by the projection weight (a single scalar here).
        #expect(Set(gradient[0].scalars).count == 1)
    }

    @Test func meanOperation() {
        let input = testTensor([3, 4], seed: 20)
        checkGradients([input]) { mean($0[0]) }
        let tape = GradientTape()
        let x = tape.variable(input)
        let average = mean(x)
        #expect(abs(Double(average.value.scalar) - input.scalars.reduce(0.0) { $0 + Double($1) } / 12) < 1e-6)
        let gradient = tape.gradient(of: average, withRespectTo: [x])[0]
        #expect(gradient.scalars.allSatisfy { abs($0 - 1 / 12) < 1e-7 })
    }

    // MARK: matmul, softmax, losses

    @Test(arguments: [(3, 4, 2), (1, 5, 1), (4, 1, 3), (2, 3, 5)])
    func matmulOperation(m: Int, k: Int, n: Int) {
        let a = testTensor([m, k], seed: 21), b = testTensor([k, n], seed: 22)
        checkGradients([a, b]) { matmul($0[0], $0[1]) }
        let tape = GradientTape()
        let product = matmul(tape.constant(a), tape.constant(b)).value
        #expect(product.shape == [m, n])
        for i in 0..<m {
            for j in 0..<n {
                var expected = 0.0
                for p in 0..<k { expected += Double(a.scalars[i * k + p]) * Double(b.scalars[p * n + j]) }
                #expect(abs(Double(product.scalars[i * n + j]) - expected) < 1e-5)
            }
        }
    }

    @Test func softmaxOperation() {
        let input = testTensor([3, 5], seed: 23, magnitude: 3)
        checkGradients([input]) { softmax($0[0]) }
        let tape = GradientTape()
        let output = softmax(tape.constant(input)).value
        for r in 0..<3 {
            let row = input.scalars[r * 5..<(r + 1) * 5].map(Double.init)
            let total = row.map { referenceExp($0) }.reduce(0, +)
            for c in 0..<5 {
                #expect(abs(Double(output.scalars[r * 5 + c]) - referenceExp(row[c]) / total) < 1e-6)
            }
        }
    }

    @Test func sparseSoftmaxCrossEntropyOperation() {
        let logits = testTensor([4, 3], seed: 24, magnitude: 2)
        let labels = [2, 0, 1, 2]
        checkGradients([logits]) { sparseSoftmaxCrossEntropy(logits: $0[0], labels: labels) }
        let tape = GradientTape()
        let loss = sparseSoftmaxCrossEntropy(logits: tape.constant(logits), labels: labels)
        #expect(loss.shape == [])
        var expected = 0.0
        for r in 0..<4 {
            let row = logits.scalars[r * 3..<(r + 1) * 3].map(Double.init)
            expected += referenceLog(row.map { referenceExp($0) }.reduce(0, +)) - row[labels[r]]
        }
        #expect(abs(Double(loss.value.scalar) - expected / 4) < 1e-6)
    }

    @Test func meanSquaredErrorOperation() {
        let prediction = testTensor([3, 2], seed: 25), target = testTensor([3, 2], seed: 26)
        checkGradients([prediction, target]) { meanSquaredError($0[0], $0[1]) }
        let tape = GradientTape()
        let loss = meanSquaredError(tape.constant(prediction), tape.constant(target))
        let expected = zip(prediction.scalars, target.scalars).reduce(0.0) { $0 + Double($1.0 - $1.1) * Double($1.0 - $1.1) } / 6
        #expect(abs(Double(loss.value.scalar) - expected) < 1e-6)
    }

    // MARK: the tape itself

    @Test func compositeNetworkGradient() {
        // A two-layer network with every kind of operation in one graph.
        let x = testTensor([4, 3], seed: 27), w1 = testTensor([3, 5], seed: 28), b1 = testTensor([5], seed: 29)
        let w2 = testTensor([5, 2], seed: 30), b2 = testTensor([2], seed: 31)
        checkGradients([w1, b1, w2, b2]) { p in
            let tape = p[0].tape
            let hidden = tanh(matmul(tape.constant(x), p[0]) + p[1])
            let logits = matmul(hidden, p[2]) + p[3]
            return sparseSoftmaxCrossEntropy(logits: logits, labels: [0, 1, 1, 0]) + mean(square(p[0])) * 0.01
        }
    }

    @Test func reusedValueAccumulatesGradient() {
        let tape = GradientTape()
        let x = tape.variable(Tensor([1.5, -2, 3]))
        let y = x * x + x * 3
        let gradient = tape.gradient(of: sum(y), withRespectTo: [x])[0]
        #expect(gradient == Tensor([6, -1, 9]))
    }

    @Test func unusedVariableHasZeroGradientAndIntermediatesCanBeSources() {
        let tape = GradientTape()
        let x = tape.variable(Tensor([1, 2])), unused = tape.variable(Tensor(shape: [2, 2], scalars: [1, 2, 3, 4]))
        let doubled = x * 2
        let loss = sum(square(doubled))
        let gradients = tape.gradient(of: loss, withRespectTo: [x, unused, doubled])
        #expect(gradients[0] == Tensor([8, 16]))
        #expect(gradients[1] == Tensor(zeros: [2, 2]))
        #expect(gradients[2] == Tensor([4, 8]))
    }

    @Test func linearRegressionExampleFromTheDocumentation() {
        let xs: [Float] = [0, 1, 2, 3], ys: [Float] = [1, 3, 5, 7]
        let tape = GradientTape()
        let w = tape.variable(Tensor(0.5)), b = tape.variable(Tensor(0))
        let loss = meanSquaredError(w * tape.constant(Tensor(xs)) + b, tape.constant(Tensor(ys)))
        let (dw, db) = tape.gradient(of: loss, withRespectTo: w, b)
        // d/dw mean((w x + b − y)²) = 2 mean((w x + b − y) x), d/db = 2 mean(w x + b − y)
        let residuals = zip(xs, ys).map { 0.5 * $0 - $1 }
        let expectedW = 2 * zip(residuals, xs).map { $0 * $1 }.reduce(0, +) / 4
        let expectedB = 2 * residuals.reduce(0, +) / 4
        #expect(dw.shape == [] && db.shape == [])
        #expect(abs(dw.scalar - expectedW) < 1e-5)
        #expect(abs(db.scalar - expectedB) < 1e-5)
    }
}

// Double-precision references, named so they cannot resolve to the tape's exp/log overloads.
func referenceExp(_ x: Double) -> Double { Glibc.exp(x) }
func referenceLog(_ x: Double) -> Double { Glibc.log(x) }
