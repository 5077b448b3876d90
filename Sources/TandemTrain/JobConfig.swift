import Foundation
import TandemCore
import TandemNN

/// A training job as described by its JSON file (see configs/). Command-line options override fields after loading.
public struct JobConfig: Codable, Sendable, Equatable {
    public struct DataSection: Codable, Sendable, Equatable {
        /// "idx" (MNIST-style image + label files, plain or .gz) or "csv" (numeric table).
        public var format: String
        /// Folder the data files are relative to; for IDX defaults to Debian's dataset-fashion-mnist folder.
        public var dir: String?
        public var trainImages: String?
        public var trainLabels: String?
        public var testImages: String?
        public var testLabels: String?
        /// CSV: the training table, an optional test table and the target column (name or index).
        public var train: String?
        public var test: String?
        public var target: String?
        /// "unit" (x / 255), "standardize" (per-feature training mean removed, divided by the overall std) or "none".
        public var scaling: String?
        /// Fraction of the training rows held out for validation (the last ones, as Keras's validation_split).
        public var validationSplit: Double?
        public var prefetch: Bool?

        /// A data section naming `format` ("idx", "csv"; "memory" for data handed to `fit` in code) and `dir`.
        public init(format: String, dir: String? = nil, scaling: String? = nil, validationSplit: Double? = nil) {
            self.format = format
            self.dir = dir
            self.scaling = scaling
            self.validationSplit = validationSplit
        }

        enum CodingKeys: String, CodingKey {
            case format, dir, trainImages = "train_images", trainLabels = "train_labels"
            case testImages = "test_images", testLabels = "test_labels", train, test, target, scaling
            case validationSplit = "validation_split", prefetch
        }
    }

    public struct TrainingSection: Codable, Sendable, Equatable {
        /// The global batch: split evenly among all replicas.
        public var batchSize: Int
        public var epochs: Int
        public var seed: UInt64?
        /// Goyal et al. (2017): with N replicas train at N × learning_rate, reached linearly over `warmup_epochs`.
        public var scaleLearningRate: Bool?
        public var warmupEpochs: Double?
        /// Cut every global batch into this many fixed groups and sum their gradients in one fixed binary tree, so
        /// that any power-of-two replica count dividing it trains bit-identically (nil: the fastest path).
        public var reductionGroups: Int?
        /// Parameter-server jobs: a worker more than this many steps ahead of the slowest live worker waits for it
        /// (stale synchronous parallel; 0 = synchronous). nil: fully asynchronous.
        public var maxStaleness: Int?
        /// Steps per epoch when fewer than the data holds (Keras's `steps_per_epoch`): the first N global batches of
        /// every epoch's shuffle. nil: every full global batch.
        public var stepsPerEpoch: Int?

        public init(batchSize: Int, epochs: Int, seed: UInt64? = nil, reductionGroups: Int? = nil) {
            self.batchSize = batchSize
            self.epochs = epochs
            self.seed = seed
            self.reductionGroups = reductionGroups
        }

        enum CodingKeys: String, CodingKey {
            case batchSize = "batch_size", epochs, seed, scaleLearningRate = "scale_learning_rate", warmupEpochs = "warmup_epochs"
            case reductionGroups = "reduction_groups", maxStaleness = "max_staleness", stepsPerEpoch = "steps_per_epoch"
        }
    }

    /// Mutual TLS for a parameter-server job's gRPC traffic: every task presents `certificate` (with `key`) and
    /// accepts only peers whose certificates `ca` signed. PEM files; relative paths are from the config's folder.
    public struct TLSSection: Codable, Sendable, Equatable {
        public var certificate: String
        public var key: String
        public var ca: String
    }

    public var name: String?
    public var data: DataSection
    public var model: ModelSpec
    public var loss: String
    public var optimizer: OptimizerSpec
    public var training: TrainingSection
    public var classNames: [String]?
    /// Cluster jobs: the strategy ("mirrored" or "parameter_server") and the cluster, in TF_CONFIG's shape.
    public var strategy: String?
    public var cluster: [String: [String]]?
    public var tls: TLSSection?

    enum CodingKeys: String, CodingKey {
        case name, data, model, loss, optimizer, training, classNames = "class_names", strategy, cluster, tls
    }

    public static let defaultFashionMNISTDirectory = "/usr/share/datasets/fashion-mnist"

    /// A job described in code (what `fit` builds from a compiled model); `validate(path:)` checks it.
    public init(name: String?, data: DataSection, model: ModelSpec, loss: String, optimizer: OptimizerSpec, training: TrainingSection) {
        self.name = name
        self.data = data
        self.model = model
        self.loss = loss
        self.optimizer = optimizer
        self.training = training
    }

    /// Loads and checks a job config; every problem is reported as one line naming the file and the field.
    public static func load(path: String) throws -> JobConfig {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw TandemError(.io, "\(path): cannot read the config file (missing or unreadable)")
        }
        var config = try decodeJSON(JobConfig.self, from: data, path: path)
        config.sourcePath = path
        try config.validate(path: path)
        return config
    }

    /// Where the config was read from (not part of the JSON); relative data paths resolve against its folder.
    public var sourcePath: String? = nil

    public var seed: UInt64 { training.seed ?? 42 }

    public func validate(path: String) throws {
        func fail(_ field: String, _ problem: String) -> TandemError { TandemError(.badConfig, "\(path): \(field) \(problem)") }
        guard (1...Self.maximumBatchSize).contains(training.batchSize) else {
            throw fail("training.batch_size", "must be between 1 and \(Self.maximumBatchSize), found \(training.batchSize)")
        }
        guard (1...Self.maximumEpochs).contains(training.epochs) else {
            throw fail("training.epochs", "must be between 1 and \(Self.maximumEpochs), found \(training.epochs)")
        }
        if let groups = training.reductionGroups {
            guard groups >= 1, groups & (groups - 1) == 0 else { throw fail("training.reduction_groups", "must be a power of two, found \(groups)") }
            guard training.batchSize % groups == 0 else {
                throw fail("training.reduction_groups", "\(groups) does not divide training.batch_size \(training.batchSize)")
            }
        }
        if let steps = training.stepsPerEpoch {
            guard (1...Self.maximumEpochs).contains(steps) else {
                throw fail("training.steps_per_epoch", "must be between 1 and \(Self.maximumEpochs), found \(steps)")
            }
            guard strategy?.lowercased() != "parameter_server" else {
                throw fail("training.steps_per_epoch", "applies to synchronous training; a parameter-server job's epoch is every worker's pass over its shard")
            }
        }
        if let staleness = training.maxStaleness, !(0...Self.maximumEpochs).contains(staleness) {
            throw fail("training.max_staleness", "must be between 0 and \(Self.maximumEpochs), found \(staleness)")
        }
        if let warmup = training.warmupEpochs, !(0...Double(Self.maximumEpochs)).contains(warmup) {
            throw fail("training.warmup_epochs", "must be between 0 and \(Self.maximumEpochs), found \(warmup)")
        }
        guard ["idx", "csv"].contains(data.format.lowercased()) || (data.format == "memory" && sourcePath == nil) else {
            throw fail("data.format", "must be \"idx\" or \"csv\", found \"\(data.format)\"")
        }
        if let split = data.validationSplit, !(0..<1).contains(split) {
            throw fail("data.validation_split", "must be in [0, 1), found \(split)")
        }
        if let scaling = data.scaling, !["unit", "standardize", "none"].contains(scaling) {
            throw fail("data.scaling", "must be \"unit\", \"standardize\" or \"none\", found \"\(scaling)\"")
        }
        let optimizerSlots: Int
        do {
            _ = try model.validated()
            _ = try Loss(name: loss)
            optimizerSlots = try optimizer.makeOptimizer(parameterCount: 0).state.count
            // Before anything is allocated: each layer may be within bounds and the whole still beyond the machine.
            // Each reduction group beyond the first has a gradient arena of its own.
            try model.checkFitsInMemory(maxBatchSize: training.batchSize, optimizerSlots: optimizerSlots + (training.reductionGroups ?? 1) - 1)
        } catch let error as TandemError {
            throw TandemError(error.code == .resources ? .resources : .badConfig, "\(path): \(error.message)")
        }
        try checkCheckpointHeaderFits(path: path, optimizerSlots: optimizerSlots)
        if let strategy, ClusterSpec.Strategy(rawValue: strategy) == nil {
            throw fail("strategy", "must be \"mirrored\" or \"parameter_server\", found \"\(strategy)\"")
        }
        if let cluster {
            try ClusterSpec(cluster: cluster, task: nil, source: path).validate(for: clusterStrategy)
        }
        if clusterStrategy == .parameterServer {
            // The learning rate has one owner: a parameter server applies each push as it comes, at the optimizer's
            // rate; scaling it for N synchronous replicas would silently mean something else here.
            if training.scaleLearningRate == true {
                throw fail("training.scale_learning_rate", "applies to the mirrored strategies (N replicas summing one global batch); a parameter_server job applies every worker's push at optimizer.learning_rate")
            }
            if training.warmupEpochs != nil {
                throw fail("training.warmup_epochs", "applies with training.scale_learning_rate to the mirrored strategies, not to a parameter_server job")
            }
            if training.reductionGroups != nil {
                throw fail("training.reduction_groups", "applies to the mirrored strategies (a fixed order of summing one global batch); a parameter_server job applies every push on its own")
            }
        }
        if let tls {
            guard clusterStrategy == .parameterServer else {
                throw fail("tls", "applies to parameter_server jobs (gRPC); a mirrored job's MPI traffic is not encrypted")
            }
            for (field, file) in [("certificate", tls.certificate), ("key", tls.key), ("ca", tls.ca)] {
                let resolved = resolvedPath(file)
                guard FileManager.default.isReadableFile(atPath: resolved) else {
                    throw fail("tls.\(field)", "names \(resolved), which cannot be read")
                }
            }
        }
        if let names = classNames, try names.count != model.outputSize, try Loss(name: loss) == .sparseCategoricalCrossentropy {
            throw fail("class_names", "has \(names.count) names but the model has \(try model.outputSize) outputs")
        }
    }

    /// The largest global batch and epoch count a config may ask for (far beyond any real job; they bound the sizes
    /// computed from them).
    public static let maximumBatchSize = 1 << 24, maximumEpochs = 1_000_000_000

    /// Every checkpoint stores this config: if its header would be more than a checkpoint reader accepts (a
    /// 50 MB name, thousands of class names), the config is refused now, naming its longest field, rather than
    /// written into checkpoints that cannot be read back.
    private func checkCheckpointHeaderFits(path: String, optimizerSlots: Int) throws {
        let bytes = try TrainingState.largestHeaderBytes(config: self, optimizerSlots: optimizerSlots)
        guard bytes > Checkpoint.maximumHeaderBytes else { return }
        var fields: [(String, String)] = []
        if let json = canonicalJSON().data(using: .utf8), let object = try? JSONSerialization.jsonObject(with: json) {
            Fingerprint.flatten(object, path: "", into: &fields)
        }
        let longest = fields.max { $0.1.utf8.count < $1.1.utf8.count }
        let culprit = longest.map { "field \($0.0) is \($0.1.utf8.count) bytes long" } ?? "the config is too long"
        throw TandemError(.badConfig, "\(path): \(culprit): every checkpoint stores the config, and its header would be \(bytes) bytes, more than the \(Checkpoint.maximumHeaderBytes) a checkpoint reader accepts")
    }

    /// A path from the config as the process must open it: relative ones are from the config file's folder.
    public func resolvedPath(_ path: String) -> String {
        guard !path.hasPrefix("/"), let sourcePath else { return path }
        return URL(fileURLWithPath: sourcePath).deletingLastPathComponent().appendingPathComponent(path).path
    }

    /// The strategy of a cluster job (mirrored unless the config says otherwise).
    public var clusterStrategy: ClusterSpec.Strategy { strategy.flatMap(ClusterSpec.Strategy.init(rawValue:)) ?? .mirrored }

    /// The config as canonical JSON (sorted keys): stored in checkpoint metadata.
    public func canonicalJSON() -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        return String(decoding: (try? encoder.encode(self)) ?? Data(), as: UTF8.self)
    }
}
