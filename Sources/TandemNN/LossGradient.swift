import TandemCore

extension Loss {
    /// Whether `compute` already gives the gradient before the model's last activation (softmax + cross-entropy
    /// fused; identity trivially), so backward must not apply that activation's derivative again.
    public func fuses(lastActivation: Activation) -> Bool {
        fusesSoftmax && (lastActivation == .softmax || lastActivation == .identity)
    }
}

extension Sequential {
    /// The gradient of `loss` on `rows` rows: forward, loss, backward, accumulated into `target` (default: the
    /// gradient arena) with every row weighted by `gradientScale`. Returns the rows' loss sum and hits. `context`:
    /// what the layers need while training (default: these rows alone, example indices 0..<rows).
    public func accumulateGradient(
        of loss: Loss, features: UnsafePointer<Float>, targets: UnsafePointer<Float>, rows: Int, gradientScale: Float,
        into target: UnsafeMutablePointer<Float>? = nil, context: LayerContext? = nil
    ) throws -> LossStatistics {
        let output = try forward(features, rows: rows, context: context ?? LayerContext(training: true, globalRows: rows))
        let statistics = loss.compute(outputs: output, targets: targets, rows: rows, columns: outputSize,
                                      dOutputs: dOutput, gradientScale: gradientScale)
        try backward(lossFusesLastActivation: loss.fuses(lastActivation: lastActivation), into: target)
        return statistics
    }
}
