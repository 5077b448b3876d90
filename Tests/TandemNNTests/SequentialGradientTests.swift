import Testing
import TandemCore
import TandemNN
#if canImport(Glibc)
import Glibc
#endif

/// Sequential's hand-written backward pass against central finite differences of the loss computed by
/// `Loss.compute`, for every parameter of small models.
@Suite struct SequentialGradientTests {
    struct Case: Sendable, CustomTestStringConvertible {
        let name: String
        let layers: [(Int, Activation)]
        let loss: Loss
        var testDescription: String { name }
    }

    static let cases: [Case] = [
        Case(name: "5-4 tanh-3 softmax, cross-entropy", layers: [(4, .tanh), (3, .softmax)], loss: .sparseCategoricalCrossentropy),
        Case(name: "5-4 relu-3 identity, cross-entropy", layers: [(4, .relu), (3, .identity)], loss: .sparseCategoricalCrossentropy),
        Case(name: "5-4 relu-3 tanh-2 identity, MSE", layers: [(4, .relu), (3, .tanh), (2, .identity)], loss: .meanSquaredError),
        Case(name: "5-4 sigmoid-3 sigmoid, MSE", layers: [(4, .sigmoid), (3, .sigmoid)], loss: .meanSquaredError),
        Case(name: "5-3 identity, MSE", layers: [(3, .identity)], loss: .meanSquaredError),
    ]

    static func targets(for testCase: Case, rows: Int, outputs: Int) -> [Float] {
        switch testCase.loss {
        case .sparseCategoricalCrossentropy: return (0..<rows).map { Float(($0 * 2 + 1) % outputs) }
        case .meanSquaredError: return testValues(rows * outputs, seed: 77, magnitude: 0.8)
        }
    }

    @Test(arguments: cases)
    func backwardMatchesFiniteDifferences(_ testCase: Case) throws {
        let rows = 6
        let model = try Sequential(spec: spec(5, testCase.layers), seed: 3, maxBatchSize: rows)
        // Non-zero biases, so their gradients flow through every activation's non-trivial region.
        for view in model.parameterViews where view.name.hasSuffix("bias") {
            for (i, value) in testValues(view.count, seed: UInt64(view.offset), magnitude: 0.3).enumerated() {
                model.parameters[view.offset + i] = value
            }
        }
        let input = testValues(rows * 5, seed: 5, magnitude: 1.5)
        let targets = Self.targets(for: testCase, rows: rows, outputs: model.outputSize)

        model.gradients.zero()
        model.accumulateGradients(input, targets: targets, rows: rows, loss: testCase.loss, gradientScale: 1 / Float(rows))
        let analytic = model.gradientArray
        #expect(analytic.map(abs).max()! > 1e-3, "gradients are all tiny: the check would be vacuous")

        let epsilon: Float = 2e-3
        for view in model.parameterViews {
            for k in 0..<view.count {
                let index = view.offset + k
                let original = model.parameters[index]
                model.parameters[index] = original + epsilon
                let plus = model.meanLoss(input, targets: targets, rows: rows, loss: testCase.loss)
                let step = Double(model.parameters[index])
                model.parameters[index] = original - epsilon
                let minus = model.meanLoss(input, targets: targets, rows: rows, loss: testCase.loss)
                let width = step - Double(model.parameters[index])
                model.parameters[index] = original
                let numeric = (plus - minus) / width
                #expect(abs(Double(analytic[index]) - numeric) <= 5e-4 + 1e-2 * abs(numeric),
                        "\(view.name)[\(k)]: backward \(analytic[index]), finite difference \(numeric)")
            }
        }
    }

    @Test func forwardMatchesADirectComputation() throws {
        let rows = 4
        let model = try Sequential(spec: spec(5, [(4, .tanh), (3, .relu), (2, .sigmoid)]), seed: 11, maxBatchSize: rows)
        for i in 0..<model.parameterCount where model.parameters[i] == 0 { model.parameters[i] = 0.1 }  // biases
        let input = testValues(rows * 5, seed: 6, magnitude: 2)
        let output = try input.withUnsafeBufferPointer { Array(UnsafeBufferPointer(start: try model.forward($0.baseAddress!, rows: rows), count: rows * 2)) }

        let p = model.parameterArray
        var current = input.map(Double.init)
        var width = 5
        for layer in model.denseLayers {
            var next = [Double](repeating: 0, count: rows * layer.outputSize)
            for r in 0..<rows {
                for o in 0..<layer.outputSize {
                    var z = Double(p[layer.bias.offset + o])
                    for i in 0..<width { z += current[r * width + i] * Double(p[layer.kernel.offset + i * layer.outputSize + o]) }
                    switch layer.activation {
                    case .tanh: z = Glibc.tanh(z)
                    case .relu: z = max(z, 0)
                    case .sigmoid: z = 1 / (1 + Glibc.exp(-z))
                    case .identity, .softmax: break
                    }
                    next[r * layer.outputSize + o] = z
                }
            }
            current = next
            width = layer.outputSize
        }
        for i in 0..<rows * 2 { #expect(abs(Double(output[i]) - current[i]) < 1e-5) }
    }

    @Test func gradientsOfTwoHalfBatchesAddUpToTheFullBatch() throws {
        // What data-parallel shards rely on: backward accumulates, and gradientScale = 1 / global batch.
        let model = try Sequential(spec: spec(5, [(4, .tanh), (3, .softmax)]), seed: 4, maxBatchSize: 8)
        let input = testValues(8 * 5, seed: 8)
        let targets: [Float] = [0, 1, 2, 0, 1, 2, 2, 1]
        model.gradients.zero()
        model.accumulateGradients(input, targets: targets, rows: 8, loss: .sparseCategoricalCrossentropy, gradientScale: 1 / 8)
        let full = model.gradientArray
        model.gradients.zero()
        model.accumulateGradients(Array(input[0..<20]), targets: Array(targets[0..<4]), rows: 4,
                                  loss: .sparseCategoricalCrossentropy, gradientScale: 1 / 8)
        model.accumulateGradients(Array(input[20..<40]), targets: Array(targets[4..<8]), rows: 4,
                                  loss: .sparseCategoricalCrossentropy, gradientScale: 1 / 8)
        let halves = model.gradientArray
        for i in 0..<full.count { #expect(abs(full[i] - halves[i]) < 1e-6) }
    }

    @Test func predictAppliesSoftmaxAndChunksLargeInputs() throws {
        let model = try Sequential(spec: spec(3, [(5, .relu), (4, .softmax)]), seed: 9, maxBatchSize: 3)
        let rows = 7
        let input = testValues(rows * 3, seed: 10, magnitude: 2)
        var result = [Float](repeating: .nan, count: rows * 4)
        try input.withUnsafeBufferPointer { try model.predict($0.baseAddress!, rows: rows, into: &result) }
        for r in 0..<rows {
            let probabilities = Array(result[r * 4..<(r + 1) * 4])
            #expect(abs(probabilities.reduce(0, +) - 1) < 1e-6)
            let logits = try Array(input[r * 3..<(r + 1) * 3]).withUnsafeBufferPointer {
                Array(UnsafeBufferPointer(start: try model.forward($0.baseAddress!, rows: 1), count: 4))
            }
            let largest = logits.max()!
            let e = logits.map { Double(Glibc.exp($0 - largest)) }
            for c in 0..<4 { #expect(abs(Double(probabilities[c]) - e[c] / e.reduce(0, +)) < 1e-6) }
        }
    }
}
