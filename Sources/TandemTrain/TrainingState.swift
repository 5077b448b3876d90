import Foundation
import TandemCore
import TandemData
import TandemNN

/// A model and its optimizer as a checkpoint, and back.
public enum TrainingState {
    public static let version = "0.1.0"

    /// Captures parameters and optimizer state; `epoch` is the number of completed epochs.
    /// `scaling` is stored too, so `predict` and `evaluate` feed inputs exactly as training did.
    public static func checkpoint(model: Sequential, optimizer: Optimizer, epoch: Int, seed: UInt64, config: JobConfig?,
                                  scaling: FeatureScaling? = nil) -> Checkpoint {
        var entries: [Checkpoint.Entry] = model.parameterViews.map { view in
            Checkpoint.Entry(name: view.name, shape: view.shape,
                             values: Array(UnsafeBufferPointer(start: model.parameters.base + view.offset, count: view.count)))
        }
        for (stateName, arena) in optimizer.state {
            for view in model.parameterViews {
                entries.append(Checkpoint.Entry(name: "optimizer/\(stateName)/\(view.name)", shape: view.shape,
                                                values: Array(UnsafeBufferPointer(start: arena.base + view.offset, count: view.count))))
            }
        }
        if let scaling {
            entries.append(Checkpoint.Entry(name: scaleName, shape: [scaling.scale.count], values: scaling.scale))
            entries.append(Checkpoint.Entry(name: shiftName, shape: [scaling.shift.count], values: scaling.shift))
        }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        var metadata = [
            "format": "tandem",
            "tandem_version": version,
            "epoch": String(epoch),
            "step": String(optimizer.iterations),
            "seed": String(seed),
            "model": String(decoding: (try? encoder.encode(model.spec)) ?? Data(), as: UTF8.self),
        ]
        if let config {
            metadata["config"] = config.canonicalJSON()
            metadata["name"] = config.name ?? ""
            if let source = config.sourcePath {
                metadata["config_path"] = URL(fileURLWithPath: source).standardizedFileURL.path
            }
        }
        return Checkpoint(entries: entries, metadata: metadata)
    }

    static let scaleName = "input_scaling/scale", shiftName = "input_scaling/shift"

    /// The input scaling a checkpoint was trained with (identity when it has none).
    public static func scaling(in checkpoint: Checkpoint, features: Int) -> FeatureScaling {
        guard let scale = checkpoint.entry(named: scaleName), let shift = checkpoint.entry(named: shiftName),
              scale.values.count == features, shift.values.count == features else { return .identity(features: features) }
        return FeatureScaling(scale: scale.values, shift: shift.values)
    }

    /// The model description stored in a checkpoint.
    public static func modelSpec(in checkpoint: Checkpoint, path: String) throws -> ModelSpec {
        guard let json = checkpoint.metadata["model"] else {
            throw TandemError(.badCheckpoint, "\(path): no model description in __metadata__ (not written by Tandem?)")
        }
        return try decodeJSON(ModelSpec.self, from: Data(json.utf8), path: "\(path) (__metadata__.model)")
    }

    /// Loads parameters (and, when given, optimizer state and iteration count) after checking that every tensor's
    /// name and shape matches the model. Returns the number of completed epochs recorded.
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
            optimizer.iterations = Int(checkpoint.metadata["step"] ?? "0") ?? 0
        }
        return Int(checkpoint.metadata["epoch"] ?? "0") ?? 0
    }
}

/// A folder of `epoch-NNNN.safetensors` files: saves one per epoch, keeps the newest `keep`.
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
    }

    public func fileName(epoch: Int) -> String { String(format: "epoch-%04d.safetensors", epoch) }

    /// Paths of the checkpoints present, oldest first.
    public func existing() -> [String] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: path)) ?? []
        return names.filter { $0.hasPrefix("epoch-") && $0.hasSuffix(".safetensors") }.sorted().map { path + "/" + $0 }
    }

    public var newest: String? { existing().last }

    /// Saves and then removes all but the newest `keep`. Returns the path written.
    @discardableResult
    public func save(_ checkpoint: Checkpoint, epoch: Int) throws -> String {
        let target = path + "/" + fileName(epoch: epoch)
        try checkpoint.write(to: target)
        for old in existing().dropLast(keep) { try? FileManager.default.removeItem(atPath: old) }
        return target
    }
}
