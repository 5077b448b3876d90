import Testing
import TandemCore
import TandemNN

/// The custom-loop path and the fused path compute the same gradients: TensorFlow's tutorial model (784-20-10,
/// sparse softmax cross-entropy) recorded on the `ArenaTape` against `Sequential`'s hand-written forward and
/// backward, on the same parameters and batch.
@Suite struct ArenaTapeMatchesSequentialTests {
    @Test(arguments: [(Activation.relu, 64), (.relu, 37), (.tanh, 64), (.sigmoid, 16)])
    func tutorialModelGradientsMatchTheFusedTrainer(hiddenActivation: Activation, rows: Int) throws {
        let model = try Sequential(spec: spec(784, [(20, hiddenActivation), (10, .softmax)]), seed: 42, maxBatchSize: 64)
        // Non-zero biases, so every bias gradient passes through the activation's slope.
        for view in model.parameterViews where view.name.hasSuffix("bias") {
            for (i, value) in testValues(view.count, seed: UInt64(view.offset), magnitude: 0.2).enumerated() {
                model.parameters[view.offset + i] = value
            }
        }
        // Both paths keep pointers to the batch until backward: the buffer must outlive them, not just the calls.
        let images = FlatArena(count: rows * 784)
        for (i, value) in testValues(rows * 784, seed: 5).enumerated() { images[i] = abs(value) }
        let labels = (0..<rows).map { Float(($0 * 7 + 3) % 10) }

        // The fused path, as Trainer.step runs it.
        model.gradients.zero()
        let logits = try model.forward(images.base, rows: rows)
        let fused = softmaxCrossEntropy(logits: logits, labels: labels, rows: rows, classes: 10,
                                        dLogits: model.dOutput, gradientScale: 1 / Float(rows))
        try model.backward(lossFusesLastActivation: true)

        // The same model on the tape, over an arena of the same layout holding the same parameters.
        let variables = ParameterArena(shapes: ["dense_0/kernel": [784, 20], "dense_0/bias": [20], "dense_1/kernel": [20, 10], "dense_1/bias": [10]])
        #expect(variables.variables.map(\.view) == model.parameterViews)
        variables.parameters.base.update(from: model.parameters.base, count: model.parameterCount)
        let tape = ArenaTape(variables: variables)
        let x = tape.constant(images.base, rows: rows, columns: 784)
        let hidden = addBias(matmul(x, tape.variable(variables["dense_0/kernel"])), tape.variable(variables["dense_0/bias"]),
                             activation: hiddenActivation)
        let output = addBias(matmul(hidden, tape.variable(variables["dense_1/kernel"])), tape.variable(variables["dense_1/bias"]))
        var statistics = LossStatistics()
        let loss = sparseSoftmaxCrossEntropy(logits: output, labels: labels, statistics: &statistics)
        variables.zeroGradients()
        tape.backward(from: loss)

        #expect(statistics == fused)
        #expect(abs(Double(loss.scalar) - fused.meanLoss) < 1e-6)
        for view in model.parameterViews {
            var largest: Float = 0
            for i in view.offset..<view.offset + view.count {
                largest = max(largest, abs(variables.gradients[i] - model.gradients[i]))
            }
            #expect(largest <= 1e-5, "\(view.name): largest difference \(largest)")
        }
        // Not vacuous: every tensor's gradient is non-zero.
        for view in model.parameterViews {
            #expect((view.offset..<view.offset + view.count).contains { variables.gradients[$0] != 0 }, "\(view.name) has no gradient")
        }
        withExtendedLifetime(images) {}
    }
}
