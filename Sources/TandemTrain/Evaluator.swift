import TandemCollectives
import TandemCore
import TandemData
import TandemNN

/// Loss, accuracy and predictions of a model on examples held in memory, converted batch by batch with the
/// training scaling into buffers allocated once.
public final class Evaluator {
    public let model: Sequential
    public let loss: Loss
    public let scaling: FeatureScaling
    private let features: FlatArena
    private let targets: FlatArena
    /// The example indices of the batch being converted.
    private var batchRows: [Int32]

    public init(model: Sequential, loss: Loss, scaling: FeatureScaling, targetWidth: Int = 1) {
        self.model = model
        self.loss = loss
        self.scaling = scaling
        features = FlatArena(count: model.maxBatchSize * model.inputSize)
        targets = FlatArena(count: model.maxBatchSize * targetWidth)
        batchRows = [Int32](repeating: 0, count: model.maxBatchSize)
    }

    /// Statistics over `rows` of `examples` (all when nil). The rows are split across the communicator's replicas
    /// and the sums combined, so every replica returns the same figures.
    public func evaluate(_ examples: Examples, rows: [Int32]? = nil, communicator: Communicator = LocalCommunicator()) throws -> LossStatistics {
        precondition(examples.targetWidth * model.maxBatchSize <= targets.count, "target width exceeds the evaluator's buffer")
        let total = rows?.count ?? examples.count
        let end = total * (communicator.rank + 1) / communicator.size
        var statistics = LossStatistics()
        var start = total * communicator.rank / communicator.size
        while start < end {
            let count = min(model.maxBatchSize, end - start)
            for i in 0..<count { batchRows[i] = rows?[start + i] ?? Int32(start + i) }
            batchRows.withUnsafeBufferPointer { batch in
                examples.gather(UnsafeBufferPointer(rebasing: batch[..<count]), scaling: scaling,
                                features: features.base, targets: targets.base)
            }
            let output = try model.forward(features.base, rows: count)
            statistics += loss.compute(outputs: output, targets: targets.base, rows: count, columns: model.outputSize,
                                       dOutputs: nil, gradientScale: 1)
            start += count
        }
        var sums: [Float] = [Float(statistics.lossSum), Float(statistics.correct), Float(statistics.count)]
        try sums.withUnsafeMutableBufferPointer { try communicator.allreduceSum($0.baseAddress!, count: 3) }
        return LossStatistics(lossSum: Double(sums[0]), correct: Int(sums[1].rounded()), count: Int(sums[2].rounded()))
    }

    /// The model's outputs (probabilities for a softmax model) for raw, unscaled feature rows.
    public func predict(rawRows: [[Float]]) throws -> [[Float]] {
        try rawRows.map { raw in
            precondition(raw.count == model.inputSize, "a row of \(raw.count) features for a model of \(model.inputSize)")
            for c in 0..<raw.count { features.base[c] = raw[c] * scaling.scale[c] + scaling.shift[c] }
            let result = FlatArena(count: model.outputSize)
            try model.predict(features.base, rows: 1, into: result.base)
            return Array(UnsafeBufferPointer(start: result.base, count: model.outputSize))
        }
    }
}
