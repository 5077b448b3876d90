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

    public static func load(config: JobConfig, dataDirectoryOverride: String? = nil) throws -> DataSource {
        let base = config.sourcePath.map { URL(fileURLWithPath: $0).deletingLastPathComponent().path } ?? "."
        func resolve(_ name: String?, field: String, directory: String?) throws -> String {
            guard let name else { throw TandemError(.badConfig, "\(config.sourcePath ?? "config"): missing field data.\(field)") }
            if name.hasPrefix("/") { return name }
            let folder = directory.map { $0.hasPrefix("/") ? $0 : base + "/" + $0 } ?? base
            return folder + "/" + name
        }
        let train: Examples
        let test: Examples?
        switch config.data.format.lowercased() {
        case "idx":
            let directory = dataDirectoryOverride ?? config.data.dir ?? JobConfig.defaultFashionMNISTDirectory
            let trainFiles = (try resolve(config.data.trainImages ?? "train-images-idx3-ubyte.gz", field: "train_images", directory: directory),
                              try resolve(config.data.trainLabels ?? "train-labels-idx1-ubyte.gz", field: "train_labels", directory: directory))
            let testFiles = (try resolve(config.data.testImages ?? "t10k-images-idx3-ubyte.gz", field: "test_images", directory: directory),
                             try resolve(config.data.testLabels ?? "t10k-labels-idx1-ubyte.gz", field: "test_labels", directory: directory))
            // gunzip is sequential, so the two sets are decoded side by side: start-up then costs the training set only.
            let loaded = ConcurrentResults<Examples>(count: 2)
            DispatchQueue.concurrentPerform(iterations: 2) { index in
                let files = index == 0 ? trainFiles : testFiles
                loaded.set(index, Result { try IDXReader.readLabelled(images: files.0, labels: files.1) })
            }
            train = try loaded.get(0)
            test = try loaded.get(1)
        default:
            let directory = dataDirectoryOverride ?? config.data.dir
            train = try CSVReader.read(path: try resolve(config.data.train, field: "train", directory: directory),
                                       targetColumn: config.data.target).examples
            test = try config.data.test.map {
                try CSVReader.read(path: try resolve($0, field: "test", directory: directory), targetColumn: config.data.target).examples
            }
        }
        try check(train, against: config, what: "training data")
        if let test {
            try check(test, against: config, what: "test data")
        }

        let validationCount = Int((Double(train.count) * (config.data.validationSplit ?? 0)).rounded(.down))
        let trainRows = (0..<Int32(train.count - validationCount)).map { $0 }
        let validationRows = (Int32(train.count - validationCount)..<Int32(train.count)).map { $0 }
        let scaling: FeatureScaling
        switch config.data.scaling ?? (config.data.format.lowercased() == "idx" ? "unit" : "none") {
        case "unit": scaling = .unit(features: train.featureCount)
        case "standardize": scaling = .standardized(on: train, rows: trainRows)
        default: scaling = .identity(features: train.featureCount)
        }
        return DataSource(train: train, trainRows: trainRows, validationRows: validationRows, test: test, scaling: scaling)
    }

    private static func check(_ examples: Examples, against config: JobConfig, what: String) throws {
        guard examples.featureCount == config.model.inputSize else {
            throw TandemError(.badInput, "\(what) has \(examples.featureCount) features per example but model.input_size is \(config.model.inputSize)")
        }
        if (try? Loss(name: config.loss)) == .sparseCategoricalCrossentropy {
            // Class labels index the model's outputs: anything else would read and write outside a row.
            // Checked before anything converts a label to an index (Int(1e30) would trap).
            if let bad = examples.targets.firstIndex(where: { !($0 >= 0 && $0 == $0.rounded()) }) {
                throw TandemError(.badInput, "\(what): example \(bad + 1) has label \(examples.targets[bad]); class labels must be whole numbers from 0")
            }
            let outputs = Float(config.model.outputSize)
            if let bad = examples.targets.firstIndex(where: { $0 >= outputs }) {
                throw TandemError(.badInput, "\(what): example \(bad + 1) has label \(examples.targets[bad]) but the model has only \(config.model.outputSize) outputs (labels 0 to \(config.model.outputSize - 1))")
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
