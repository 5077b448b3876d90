import TandemCore

/// The training losses. Both report sums (see `LossStatistics`) and write the gradient w.r.t. the model's output,
/// already divided by the global batch size via `gradientScale`, so shard gradients add up to the batch gradient.
public enum Loss: String, Sendable, CaseIterable {
    case sparseCategoricalCrossentropy = "sparse_categorical_crossentropy"
    case meanSquaredError = "mean_squared_error"

    public init(name: String) throws {
        switch name.lowercased() {
        case "sparse_categorical_crossentropy", "sparse_categorical_cross_entropy", "crossentropy": self = .sparseCategoricalCrossentropy
        case "mean_squared_error", "mse": self = .meanSquaredError
        default:
            throw TandemError(.badConfig, "loss: unknown loss \"\(name)\" (expected one of: \(Loss.allCases.map(\.rawValue).joined(separator: ", ")))")
        }
    }

    /// True when the loss consumes logits and so replaces the model's last (softmax or identity) activation.
    public var fusesSoftmax: Bool { self == .sparseCategoricalCrossentropy }

    /// Whether accuracy means anything for this loss.
    public var reportsAccuracy: Bool { self == .sparseCategoricalCrossentropy }

    public func compute(
        outputs: UnsafePointer<Float>, targets: UnsafePointer<Float>, rows: Int, columns: Int,
        dOutputs: UnsafeMutablePointer<Float>?, gradientScale: Float
    ) -> LossStatistics {
        switch self {
        case .sparseCategoricalCrossentropy:
            return softmaxCrossEntropy(logits: outputs, labels: targets, rows: rows, classes: columns,
                                       dLogits: dOutputs, gradientScale: gradientScale)
        case .meanSquaredError:
            return TandemCore.meanSquaredError(outputs: outputs, targets: targets, rows: rows, columns: columns,
                                               dOutputs: dOutputs, gradientScale: gradientScale)
        }
    }
}
