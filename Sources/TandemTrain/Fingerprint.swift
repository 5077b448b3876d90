import Foundation
import TandemCollectives
import TandemCore
import TandemNN

/// What every replica of a job must agree on before step 1: the Tandem version, the job config after command-line
/// overrides (every field), the model layout, the data sizes and steps per epoch. Replicas exchange their
/// fingerprints and all stop with the same message if any differs, naming the rank, the field and both values —
/// instead of training a silently different job or hanging in a collective of the wrong size.
public struct Fingerprint: Equatable, Sendable {
    public let fields: [(name: String, value: String)]

    public static func == (a: Fingerprint, b: Fingerprint) -> Bool {
        a.fields.map(\.name) == b.fields.map(\.name) && a.fields.map(\.value) == b.fields.map(\.value)
    }

    init(fields: [(name: String, value: String)]) { self.fields = fields }

    /// Beyond the config: how this replica will reduce gradients (bucket size, wire type), which must match or the
    /// collectives of different replicas do not pair up, and the cluster in effect (TF_CONFIG wins over the config,
    /// so the config's fields alone do not show it).
    public init(trainer: Trainer) {
        var extra: [(String, String)] = [("gradient_buckets", trainer.gradientBucketFloats.map { "\($0) floats" } ?? "fused")]
        extra += trainer.communicator.agreementFields.map { ($0.name, $0.value) }
        let cluster: String
        do { cluster = try ClusterSpec.resolve(config: trainer.config)?.clusterJSON ?? "none" } catch { cluster = "invalid (\(error))" }
        extra.append(("cluster", cluster))
        self.init(config: trainer.config, model: trainer.model, data: trainer.data,
                  stepsPerEpoch: trainer.pipeline.stepsPerEpoch, replicas: trainer.communicator.size, extra: extra)
    }

    /// `stepsPerEpoch` and `replicas` are the strategy's: a replica's steps and the replica count when mirrored,
    /// the job's pushes per epoch and the worker count for a parameter-server job.
    public init(config: JobConfig, model: Sequential, data: DataSource, stepsPerEpoch: Int, replicas: Int, extra: [(String, String)] = []) {
        var fields: [(String, String)] = [("tandem_version", TrainingState.version)]
        if let json = config.canonicalJSON().data(using: .utf8), let object = try? JSONSerialization.jsonObject(with: json) {
            Self.flatten(object, path: "", into: &fields)
        }
        fields.append(("model.layout", model.parameterViews.map { "\($0.name)\($0.shape)" }.joined(separator: " ")))
        fields.append(("model.parameters", String(model.parameterCount)))
        fields.append(("data.training_rows", String(data.trainRows.count)))
        fields.append(("data.validation_rows", String(data.validationRows.count)))
        fields.append(("data.test_rows", String(data.test?.count ?? 0)))
        fields.append(("steps_per_epoch", String(stepsPerEpoch)))
        fields.append(("replicas", String(replicas)))
        self.fields = fields + extra
    }

    static func flatten(_ value: Any, path: String, into fields: inout [(String, String)]) {
        if let object = value as? [String: Any] {
            for key in object.keys.sorted() { flatten(object[key]!, path: path.isEmpty ? key : path + "." + key, into: &fields) }
        } else if let array = value as? [Any], array.contains(where: { $0 is [String: Any] }) {
            for (index, element) in array.enumerated() { flatten(element, path: "\(path)[\(index)]", into: &fields) }
        } else if let array = value as? [Any] {
            fields.append((path, "[" + array.map { "\($0)" }.joined(separator: ", ") + "]"))
        } else {
            fields.append((path, "\(value)"))
        }
    }

    public var encoded: [UInt8] { Array(fields.map { "\($0.name)\u{1F}\($0.value)" }.joined(separator: "\u{1E}").utf8) }

    public init(encoded: [UInt8]) {
        fields = String(decoding: encoded, as: UTF8.self).split(separator: "\u{1E}", omittingEmptySubsequences: false).compactMap { line in
            let parts = line.split(separator: "\u{1F}", maxSplits: 1, omittingEmptySubsequences: false)
            return parts.count == 2 ? (String(parts[0]), String(parts[1])) : nil
        }
    }

    /// The first field where `other` (`who`, e.g. "rank 1") differs from `self` (`reference`, e.g. "rank 0"), as a
    /// message; nil when they agree.
    public func disagreement(of other: Fingerprint, who: String, reference: String = "rank 0") -> String? {
        let mine = Dictionary(fields, uniquingKeysWith: { first, _ in first })
        let theirs = Dictionary(other.fields, uniquingKeysWith: { first, _ in first })
        for (name, value) in fields where theirs[name] != value {
            return "\(who) disagrees with \(reference) on \(name): \(theirs[name] ?? "(missing)") vs \(value)"
        }
        for (name, value) in other.fields where mine[name] == nil {
            return "\(who) disagrees with \(reference) on \(name): \(value) vs (missing)"
        }
        return nil
    }
}

extension Trainer {
    /// Exchanges fingerprints; every replica throws the same `AgreedFailure` naming each rank that differs.
    public func checkAgreement() throws {
        guard communicator.size > 1 else { return }
        let fingerprints = try communicator.allgather(Fingerprint(trainer: self).encoded).map(Fingerprint.init(encoded:))
        let problems = fingerprints.indices.dropFirst().compactMap { fingerprints[0].disagreement(of: fingerprints[$0], who: "rank \($0)") }
        if !problems.isEmpty { throw AgreedFailure(message: problems.joined(separator: "; ")) }
    }
}
