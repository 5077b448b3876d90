import TandemCore
import TandemNN

func testValues(_ count: Int, seed: UInt64, magnitude: Float = 1) -> [Float] {
    var generator = SeededGenerator(seed: seed, stream: 11)
    return (0..<count).map { _ in (2 * generator.nextUnitFloat() - 1) * magnitude }
}

func spec(_ inputSize: Int, _ layers: [(Int, Activation)]) -> ModelSpec {
    ModelSpec(inputSize: inputSize, layers: layers.map { ModelSpec.Layer(units: $0.0, activation: $0.1) })
}

extension Sequential {
    var parameterArray: [Float] { Array(parameters.buffer) }
    var gradientArray: [Float] { Array(UnsafeBufferPointer(start: gradients.base, count: parameterCount)) }

    /// Mean loss of `rows` rows, evaluated through `Loss.compute` with no gradient, in Double.
    func meanLoss(_ input: [Float], targets: [Float], rows: Int, loss: Loss, context: LayerContext = .inference) -> Double {
        input.withUnsafeBufferPointer { x in
            let output = try! forward(x.baseAddress!, rows: rows, context: context)
            return loss.compute(outputs: output, targets: targets, rows: rows, columns: outputSize, dOutputs: nil,
                                gradientScale: 1).lossSum / Double(rows)
        }
    }

    /// One forward, loss and backward, as a training step does, with gradients accumulated (not zeroed) at
    /// `gradientScale`.
    @discardableResult
    func accumulateGradients(_ input: [Float], targets: [Float], rows: Int, loss: Loss, gradientScale: Float,
                             context: LayerContext? = nil) -> LossStatistics {
        input.withUnsafeBufferPointer { x in
            let output = try! forward(x.baseAddress!, rows: rows, context: context ?? LayerContext(training: true, globalRows: rows))
            let statistics = loss.compute(outputs: output, targets: targets, rows: rows, columns: outputSize,
                                          dOutputs: dOutput, gradientScale: gradientScale)
            try! backward(lossFusesLastActivation: loss.fusesSoftmax && [.softmax, .identity].contains(lastActivation))
            return statistics
        }
    }
}

extension Sequential {
    /// The layers as the Dense layers the tests build.
    var denseLayers: [Dense] { layers.compactMap { $0 as? Dense } }
}
