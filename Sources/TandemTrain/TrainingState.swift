import Foundation
import TandemCore
import TandemData
import TandemNN

/// A model and its optimizer as a checkpoint, and back.
public enum TrainingState {
    public static let version = "0.1.0"

    /// Captures parameters and optimizer state (none without an optimizer: parameters for evaluation and
    /// prediction only); `epoch` is the number of completed epochs.
    /// `scaling` is stored too, so `predict` and `evaluate` feed inputs exactly as training did.
    public static func checkpoint(model: Sequential, optimizer: Optimizer?, epoch: Int, seed: UInt64, config: JobConfig?,
                                  scaling: FeatureScaling? = nil) -> Checkpoint {
        var entries: [Checkpoint.Entry] = model.parameterViews.map { view in
            Checkpoint.Entry(name: view.name, shape: view.shape,
                             values: Array(UnsafeBufferPointer(start: model.parameters.base + view.offset, count: view.count)))
        }
        for (stateName, arena) in optimizer?.state ?? [] {
            for view in model.parameterViews {
                entries.append(Checkpoint.Entry(name: "optimizer/\(stateName)/\(view.name)", shape: view.shape,
                                                values: Array(UnsafeBufferPointer(start: arena.base + view.offset, count: view.count))))
            }
        }
        if let scaling {
            entries.append(Checkpoint.Entry(name: scaleName, shape: [scaling.scale.count], values: scaling.scale))
            entries.append(Checkpoint.Entry(name: shiftName, shape: [scaling.shift.count], values: scaling.shift))
        }
        return Checkpoint(entries: entries, metadata: metadata(model: model.spec, epoch: epoch, step: optimizer?.iterations ?? 0,
                                                               seed: seed, config: config))
    }

    /// The checkpoint's `__metadata__`: version, counters, the model description and the job config.
    static func metadata(model: ModelSpec, epoch: Int, step: Int, seed: UInt64, config: JobConfig?) -> [String: String] {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        var metadata = [
            "format": "tandem",
            "tandem_version": version,
            "epoch": String(epoch),
            "step": String(step),
            "seed": String(seed),
            "model": String(decoding: (try? encoder.encode(model)) ?? Data(), as: UTF8.self),
        ]
        if let config {
            metadata["config"] = config.canonicalJSON()
            metadata["name"] = config.name ?? ""
            if let source = config.sourcePath {
                metadata["config_path"] = URL(fileURLWithPath: source).standardizedFileURL.path
            }
        }
        return metadata
    }

    /// The header a checkpoint of `config`'s job would have at its largest counters (the tensors' names and shapes
    /// with the optimizer's `optimizerSlots` copies, and the input scaling of `features`).
    static func largestHeaderBytes(config: JobConfig, optimizerSlots: Int) throws -> Int {
        let parameters = try config.model.parameterTensors()
        var tensors = parameters
        for slot in 0..<optimizerSlots {
            tensors += parameters.map { ("optimizer/slot\(slot)/\($0.name)", $0.shape) }
        }
        tensors += [(scaleName, [config.model.inputSize]), (shiftName, [config.model.inputSize])]
        let metadata = metadata(model: config.model, epoch: Int.max, step: Int.max, seed: UInt64.max, config: config)
        return Checkpoint.header(metadata: metadata, tensors: tensors).utf8.count
    }

    static let scaleName = "input_scaling/scale", shiftName = "input_scaling/shift"

    /// The input scaling a checkpoint was trained with (identity when it has none).
    public static func scaling(in checkpoint: Checkpoint, features: Int) -> FeatureScaling {
        guard let scale = checkpoint.entry(named: scaleName), let shift = checkpoint.entry(named: shiftName),
              scale.values.count == features, shift.values.count == features else { return .identity(features: features) }
        return FeatureScaling(scale: scale.values, shift: shift.values)
    }

    /// The model description stored in a checkpoint, after checking that the checkpoint holds every tensor it
    /// describes: the description is a few bytes of text, and a model built from it alone could need gigabytes the
    /// file does not back.
    public static func modelSpec(in checkpoint: Checkpoint, path: String) throws -> ModelSpec {
        guard let json = checkpoint.metadata["model"] else {
            throw TandemError(.badCheckpoint, "\(path): no model description in __metadata__ (not written by Tandem?)")
        }
        let spec = try decodeJSON(ModelSpec.self, from: Data(json.utf8), path: "\(path) (__metadata__.model)")
        do { _ = try spec.validated() } catch let error as TandemError {
            throw TandemError(.badCheckpoint, "\(path) (__metadata__.model): \(error.message)")
        }
        for tensor in try spec.parameterTensors() {
            guard let entry = checkpoint.entry(named: tensor.name) else {
                throw TandemError(.badCheckpoint, "\(path): has no tensor \(tensor.name), which its model description needs")
            }
            guard entry.shape == tensor.shape else {
                throw TandemError(.badCheckpoint, "\(path): tensor \(tensor.name) has shape \(entry.shape) but its model description says \(tensor.shape)")
            }
        }
        return spec
    }

    /// Loads parameters (and, when given, optimizer state and iteration count) after checking that every tensor's
    /// name and shape matches the model. Returns the number of completed epochs recorded (checked when resuming,
    /// that is with an optimizer; 0 when a checkpoint read for its parameters alone records none).
    @discardableResult
    public static func restore(_ checkpoint: Checkpoint, path: String, into model: Sequential, optimizer: Optimizer?) throws -> Int {
        func load(_ name: String, _ shape: [Int], into destination: UnsafeMutablePointer<Float>) throws {
            guard let entry = checkpoint.entry(named: name) else {
                throw TandemError(.badCheckpoint, "\(path): has no tensor \(name), which the model needs (it has: \(checkpoint.entries.prefix(6).map(\.name).joined(separator: ", ")))")
            }
            guard entry.shape == shape else {
                throw TandemError(.badCheckpoint, "\(path): tensor \(name) has shape \(entry.shape) but the model expects \(shape)")
            }
            entry.values.withUnsafeBufferPointer { destination.update(from: $0.baseAddress!, count: $0.count) }
        }
        for view in model.parameterViews {
            try load(view.name, view.shape, into: model.parameters.base + view.offset)
        }
        if let optimizer {
            for (stateName, arena) in optimizer.state {
                for view in model.parameterViews {
                    try load("optimizer/\(stateName)/\(view.name)", view.shape, into: arena.base + view.offset)
                }
            }
            optimizer.iterations = try counter("step", in: checkpoint, path: path)
            return try counter("epoch", in: checkpoint, path: path)
        }
        // Evaluation and prediction need only the parameters: a checkpoint from elsewhere may lack the counters.
        return (try? counter("epoch", in: checkpoint, path: path)) ?? 0
    }

    /// The largest epoch or step count a checkpoint may record (far beyond any run, far below overflow).
    public static let maximumCounter = 1 << 48

    /// A counter of `__metadata__` ("epoch", "step"): a whole number from 0 to `maximumCounter`, or an error naming
    /// it. Resuming from a wrong count would silently restart or skip training.
    public static func counter(_ key: String, in checkpoint: Checkpoint, path: String) throws -> Int {
        guard let text = checkpoint.metadata[key] else {
            throw TandemError(.badCheckpoint, "\(path): __metadata__ has no \(key) (not written by tandem train?)")
        }
        guard text.count <= 20, let value = Int(text), (0...maximumCounter).contains(value) else {
            throw TandemError(.badCheckpoint, "\(path): __metadata__.\(key) is \(TandemError.quoted(text)); expected a whole number from 0 to \(maximumCounter)")
        }
        return value
    }
}

/// A folder of `epoch-NNNN.safetensors` files: saves one per epoch, keeps the newest `keep`.
///
/// Checkpoints are ordered by the epoch number in their name, never by the name itself: `epoch-10000` sorts before
/// `epoch-9999` as text. Opening the folder removes temporary files that writers on this host left behind when
/// they died mid-write (see `temporaryPath(for:)`).
public struct CheckpointDirectory: Sendable {
    public let path: String
    public let keep: Int

    public init(path: String, keep: Int = 3) throws {
        self.path = path
        self.keep = max(keep, 1)
        do {
            try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        } catch {
            throw TandemError(.io, "\(path): cannot create checkpoint folder (\(error.localizedDescription))")
        }
        removeStaleTemporaryFiles()
    }

    public func fileName(epoch: Int) -> String { String(format: "epoch-%04d.safetensors", epoch) }

    /// The epoch in a checkpoint file name (`epoch-0012.safetensors` → 12); nil for any other name.
    public static func epoch(ofFileName name: String) -> Int? {
        guard name.hasPrefix("epoch-"), name.hasSuffix(".safetensors") else { return nil }
        let digits = name.dropFirst("epoch-".count).dropLast(".safetensors".count)
        guard !digits.isEmpty, digits.count <= 18, digits.allSatisfy({ $0.isASCII && $0.isNumber }) else { return nil }
        return Int(digits)
    }

    /// Checkpoint file names of `folder`, oldest epoch first.
    public static func checkpointNames(in folder: String) -> [String] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: folder)) ?? []
        return names.compactMap { name in epoch(ofFileName: name).map { (name, $0) } }
            .sorted { ($0.1, $0.0) < ($1.1, $1.0) }.map(\.0)
    }

    /// Paths of the checkpoints present, oldest epoch first.
    public func existing() -> [String] { Self.checkpointNames(in: path).map { path + "/" + $0 } }

    public var newest: String? { existing().last }

    /// Saves and then removes all but the newest `keep`. Returns the path written.
    @discardableResult
    public func save(_ checkpoint: Checkpoint, epoch: Int) throws -> String {
        let target = path + "/" + fileName(epoch: epoch)
        try checkpoint.write(to: target)
        for old in existing().dropLast(keep) { try? FileManager.default.removeItem(atPath: old) }
        return target
    }

    // MARK: temporary files

    /// Where a checkpoint is written before it is renamed into place: `NAME.tmp.HOST.PID`. The host and process
    /// name the writer, so a later run can tell a dead writer's leftover from a live writer's file on a folder
    /// that several hosts share.
    public static func temporaryPath(for path: String) -> String { "\(path).tmp.\(hostName).\(getpid())" }

    static let hostName: String = {
        var buffer = [CChar](repeating: 0, count: 256)
        guard gethostname(&buffer, buffer.count - 1) == 0 else { return "localhost" }
        let name = String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        return name.isEmpty ? "localhost" : name.replacingOccurrences(of: ".", with: "_")
    }()

    /// Removes `*.tmp.HOST.PID` files of this host whose process is gone, and `*.tmp.PID` files (the earlier
    /// naming, which did not say the host) whose process is gone here.
    /// Returns the names removed.
    @discardableResult
    public func removeStaleTemporaryFiles() -> [String] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: path)) ?? []
        var removed: [String] = []
        for name in names {
            guard let marker = name.range(of: ".safetensors.tmp.") else { continue }
            let writer = name[marker.upperBound...]  // "HOST.PID", or "PID" in the earlier naming
            let pidText = writer.split(separator: ".", omittingEmptySubsequences: false).last ?? ""
            let host = writer.dropLast(pidText.count).dropLast()
            guard host.isEmpty || host == Self.hostName, pidText.count <= 9, let pid = Int32(pidText), pid > 0,
                  kill(pid, 0) != 0, errno == ESRCH else { continue }
            if (try? FileManager.default.removeItem(atPath: path + "/" + name)) != nil { removed.append(name) }
        }
        return removed
    }
}
