import TandemCore

/// What `compile` sets for training: the optimizer, the loss and the metrics reported.
public struct Compilation: Sendable, Equatable {
    public var optimizer: OptimizerSpec
    public var loss: Loss
    public var metrics: [Metric]
}

/// Metrics the progress line and the metrics file report beside the loss.
public enum Metric: String, Sendable, CaseIterable {
    /// The fraction of examples whose largest output is the label (classification losses).
    case accuracy
}

extension OptimizerSpec {
    /// Stochastic gradient descent (Keras's `SGD`): `momentum`, Nesterov momentum, and time-based `decay`
    /// (lr / (1 + decay · iterations)).
    public static func sgd(learningRate: Float = 0.01, momentum: Float = 0, nesterov: Bool = false, decay: Float = 0) -> OptimizerSpec {
        OptimizerSpec(name: "sgd", learningRate: learningRate, momentum: momentum, nesterov: nesterov, decay: decay)
    }

    /// Adam (Keras's defaults: β₁ 0.9, β₂ 0.999, ε 1e-7).
    public static func adam(learningRate: Float = 0.001, beta1: Float = 0.9, beta2: Float = 0.999, epsilon: Float = 1e-7) -> OptimizerSpec {
        var spec = OptimizerSpec(name: "adam", learningRate: learningRate)
        spec.beta1 = beta1
        spec.beta2 = beta2
        spec.epsilon = epsilon
        return spec
    }
}

extension Sequential {
    /// Chooses how `fit` trains the model, as Keras's `compile`.
    ///
    /// ```swift
    /// try model.compile(optimizer: .sgd(learningRate: 0.001, momentum: 0.9, decay: 1e-7),
    ///                   loss: .sparseCategoricalCrossentropy, metrics: [.accuracy])
    /// ```
    public func compile(optimizer: OptimizerSpec, loss: Loss, metrics: [Metric] = []) throws {
        _ = try optimizer.makeOptimizer(parameterCount: 0)
        if metrics.contains(.accuracy) && !loss.reportsAccuracy {
            throw TandemError(.usage, "metric accuracy needs a classification loss (sparse_categorical_crossentropy), not \(loss.rawValue)")
        }
        if lastActivation == .softmax && !loss.fusesSoftmax {
            throw TandemError(.usage, "a softmax output layer needs loss sparse_categorical_crossentropy, not \(loss.rawValue)")
        }
        compilation = Compilation(optimizer: optimizer, loss: loss, metrics: metrics)
    }
}
