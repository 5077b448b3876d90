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

        enum CodingKeys: String, CodingKey {
            case batchSize = "batch_size", epochs, seed, scaleLearningRate = "scale_learning_rate", warmupEpochs = "warmup_epochs"
            case reductionGroups = "reduction_groups", maxStaleness = "max_staleness"
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
        guard training.batchSize > 0 else { throw fail("training.batch_size", "must be positive, found \(training.batchSize)") }
        guard training.epochs > 0 else { throw fail("training.epochs", "must be positive, found \(training.epochs)") }
        if let groups = training.reductionGroups {
            guard groups >= 1, groups & (groups - 1) == 0 else { throw fail("training.reduction_groups", "must be a power of two, found \(groups)") }
            guard training.batchSize % groups == 0 else {
                throw fail("training.reduction_groups", "\(groups) does not divide training.batch_size \(training.batchSize)")
            }
        }
        if let staleness = training.maxStaleness, staleness < 0 {
            throw fail("training.max_staleness", "must be ≥ 0, found \(staleness)")
        }
        if let warmup = training.warmupEpochs, warmup < 0 { throw fail("training.warmup_epochs", "must be ≥ 0, found \(warmup)") }
        guard ["idx", "csv"].contains(data.format.lowercased()) else {
            throw fail("data.format", "must be \"idx\" or \"csv\", found \"\(data.format)\"")
        }
        if let split = data.validationSplit, !(0..<1).contains(split) {
            throw fail("data.validation_split", "must be in [0, 1), found \(split)")
        }
        if let scaling = data.scaling, !["unit", "standardize", "none"].contains(scaling) {
            throw fail("data.scaling", "must be \"unit\", \"standardize\" or \"none\", found \"\(scaling)\"")
        }
        do {
            _ = try model.validated()
            _ = try Loss(name: loss)
            _ = try optimizer.makeOptimizer(parameterCount: 0)
        } catch let error as TandemError {
            throw TandemError(.badConfig, "\(path): \(error.message)")
        }
        if let strategy, ClusterSpec.Strategy(rawValue: strategy) == nil {
            throw fail("strategy", "must be \"mirrored\" or \"parameter_server\", found \"\(strategy)\"")
        }
        if let cluster {
            try ClusterSpec(cluster: cluster, task: nil, source: path).validate(for: clusterStrategy)
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
        if let names = classNames, names.count != model.outputSize, try Loss(name: loss) == .sparseCategoricalCrossentropy {
            throw fail("class_names", "has \(names.count) names but the model has \(model.outputSize) outputs")
        }
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

/// Decodes JSON, turning Foundation's decoding errors into one line naming the field and the expected type.
public func decodeJSON<T: Decodable>(_ type: T.Type, from data: Data, path: String) throws -> T {
    do {
        return try JSONDecoder().decode(type, from: data)
    } catch let error as DecodingError {
        func field(_ codingPath: [CodingKey], _ last: CodingKey? = nil) -> String {
            let keys = (codingPath + (last.map { [$0] } ?? [])).map { key in
                key.intValue.map { "[\($0)]" } ?? ".\(key.stringValue)"
            }
            let joined = keys.joined()
            return joined.hasPrefix(".") ? String(joined.dropFirst()) : joined
        }
        func describe(_ type: Any.Type) -> String {
            switch type {
            case is Int.Type, is UInt64.Type: return "an integer"
            case is Float.Type, is Double.Type: return "a number"
            case is String.Type: return "a string"
            case is Bool.Type: return "true or false"
            case is [Any].Type: return "an array"
            default: return String(describing: type).hasPrefix("Array") ? "an array" : "an object"
            }
        }
        switch error {
        case .typeMismatch(let expected, let context):
            throw TandemError(.badConfig, "\(path): field \(field(context.codingPath)) must be \(describe(expected))")
        case .valueNotFound(let expected, let context):
            throw TandemError(.badConfig, "\(path): field \(field(context.codingPath)) is null, expected \(describe(expected))")
        case .keyNotFound(let key, let context):
            throw TandemError(.badConfig, "\(path): missing field \(field(context.codingPath, key))")
        case .dataCorrupted(let context):
            if context.codingPath.isEmpty {
                let underlying = (context.underlyingError as NSError?)?.userInfo[NSDebugDescriptionErrorKey] as? String
                throw TandemError(.badConfig, "\(path): malformed JSON (\(underlying ?? context.debugDescription))")
            }
            throw TandemError(.badConfig, "\(path): field \(field(context.codingPath)): \(context.debugDescription)")
        @unknown default:
            throw TandemError(.badConfig, "\(path): \(error)")
        }
    }
}
