import Foundation
import TandemCore
import TandemData
import TandemNN

/// The data a job trains and tests on, loaded as its config describes, with the scaling fitted on the training rows.
public struct DataSource: Sendable {
    public let train: Examples
    /// Training rows and held-out validation rows (Keras's validation_split: the last fraction, before shuffling).
    public let trainRows: [Int32]
    public let validationRows: [Int32]
    public let test: Examples?
    public let scaling: FeatureScaling

    /// Loads the data a config describes (its `data` section), checks it against the model, holds out the
    /// validation rows and fits the scaling on the training rows.
    public static func load(config: JobConfig, dataDirectoryOverride: String? = nil) throws -> DataSource {
        let dataset = try Dataset.load(config.data, relativeTo: config.sourcePath, dataDirectoryOverride: dataDirectoryOverride)
        try check(dataset.train, against: config, what: "training data")
        if let test = dataset.test {
            try check(test, against: config, what: "test data")
        }
        return DataSource(dataset, validationSplit: config.data.validationSplit ?? 0)
    }

    /// `dataset` with the last `validationSplit` of its training rows held out (Keras's validation_split) and its
    /// scaling fitted on the remaining training rows.
    public init(_ dataset: Dataset, validationSplit: Double) {
        let train = dataset.train
        let validationCount = Int((Double(train.count) * min(max(validationSplit, 0), 1)).rounded(.down))
        trainRows = (0..<Int32(train.count - validationCount)).map { $0 }
        validationRows = (Int32(train.count - validationCount)..<Int32(train.count)).map { $0 }
        switch dataset.scaling {
        case .unit: scaling = .unit(features: train.featureCount)
        case .standardize: scaling = .standardized(on: train, rows: trainRows)
        case .none: scaling = .identity(features: train.featureCount)
        }
        self.train = train
        test = dataset.test
    }

    /// Checks `examples` against the job's model and loss: feature count, and class labels that index its outputs.
    public static func check(_ examples: Examples, against config: JobConfig, what: String) throws {
        guard examples.featureCount == config.model.inputSize else {
            throw TandemError(.badInput, "\(what) has \(examples.featureCount) features per example but model.input_size is \(config.model.inputSize)")
        }
        if (try? Loss(name: config.loss)) == .sparseCategoricalCrossentropy {
            // Class labels index the model's outputs: anything else would read and write outside a row.
            // Checked before anything converts a label to an index (Int(1e30) would trap).
            if let bad = examples.targets.firstIndex(where: { !($0 >= 0 && $0 == $0.rounded()) }) {
                throw TandemError(.badInput, "\(what): example \(bad + 1) has label \(examples.targets[bad]); class labels must be whole numbers from 0")
            }
            let outputCount = try config.model.outputSize
            let outputs = Float(outputCount)
            if let bad = examples.targets.firstIndex(where: { $0 >= outputs }) {
                throw TandemError(.badInput, "\(what): example \(bad + 1) has label \(examples.targets[bad]) but the model has only \(outputCount) outputs (labels 0 to \(outputCount - 1))")
            }
        }
    }
}

/// Results written by concurrent tasks, one slot each.
final class ConcurrentResults<Value>: @unchecked Sendable {
    private var slots: [Result<Value, Error>?]
    private let lock = NSLock()

    init(count: Int) { slots = Array(repeating: nil, count: count) }

    func set(_ index: Int, _ result: Result<Value, Error>) { lock.withLock { slots[index] = result } }

    func get(_ index: Int) throws -> Value { try lock.withLock { slots[index]! }.get() }
}
