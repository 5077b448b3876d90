import TandemCore

/// The JSON description of an optimizer: `{"name": "sgd", "learning_rate": 0.1, "momentum": 0.9, ...}`.
public struct OptimizerSpec: Codable, Sendable, Equatable {
    public var name: String
    public var learningRate: Float
    public var momentum: Float?
    public var nesterov: Bool?
    public var decay: Float?
    public var beta1: Float?
    public var beta2: Float?
    public var epsilon: Float?

    public init(name: String, learningRate: Float, momentum: Float? = nil, nesterov: Bool? = nil, decay: Float? = nil) {
        self.name = name
        self.learningRate = learningRate
        self.momentum = momentum
        self.nesterov = nesterov
        self.decay = decay
    }

    enum CodingKeys: String, CodingKey {
        case name, learningRate = "learning_rate", momentum, nesterov, decay
        case beta1 = "beta_1", beta2 = "beta_2", epsilon
    }

    /// Builds the optimizer for `parameterCount` parameters, with its state arenas zeroed. `trainableCount`: the
    /// parameters it trains, at the start of the arena (default: all); past them are statistics (see
    /// ``ArenaLayout``), to which `apply` subtracts their gradient slot as it is.
    public func makeOptimizer(parameterCount: Int, trainableCount: Int? = nil) throws -> Optimizer {
        let optimizer = try makeOptimizer(parameterCount)
        optimizer.trainableCount = min(trainableCount ?? parameterCount, parameterCount)
        return optimizer
    }

    private func makeOptimizer(_ parameterCount: Int) throws -> Optimizer {
        guard learningRate.isFinite, learningRate > 0 else {
            throw TandemError(.badConfig, "optimizer.learning_rate must be a positive number, found \(learningRate)")
        }
        let decay = decay ?? 0
        guard decay >= 0 else { throw TandemError(.badConfig, "optimizer.decay must be ≥ 0, found \(decay)") }
        switch name.lowercased() {
        case "sgd":
            let momentum = momentum ?? 0
            guard (0..<1).contains(momentum) else {
                throw TandemError(.badConfig, "optimizer.momentum must be in [0, 1), found \(momentum)")
            }
            return SGD(parameterCount: parameterCount, learningRate: learningRate, decay: decay,
                       momentum: momentum, nesterov: nesterov ?? false)
        case "adam":
            return Adam(parameterCount: parameterCount, learningRate: learningRate, decay: decay,
                        beta1: beta1 ?? 0.9, beta2: beta2 ?? 0.999, epsilon: epsilon ?? 1e-7)
        default:
            throw TandemError(.badConfig, "optimizer.name: unknown optimizer \"\(name)\" (expected sgd or adam)")
        }
    }
}

/// Base of the optimizers: one update pass over the flat parameter arena, with any state in flat arenas of the same
/// layout. A subclass declares its state (`stateNames`) and overrides `update`.
/// The learning rate follows Keras's time-based decay: lr / (1 + decay · iterations).
open class Optimizer: @unchecked Sendable {
    public let parameterCount: Int
    public let learningRate: Float
    public let decay: Float
    /// Updates applied so far; saved in checkpoints so a resumed run continues the same schedule.
    public var iterations: Int = 0
    /// The parameters this optimizer trains, [0, trainableCount); the rest of the arena, statistics, take their
    /// gradient slot as their change: `w −= g`.
    public var trainableCount: Int
    /// Named state arenas (e.g. "momentum"), each `parameterCount` long.
    public let state: [(name: String, arena: FlatArena)]

    public init(parameterCount: Int, learningRate: Float, decay: Float, stateNames: [String]) {
        self.parameterCount = parameterCount
        trainableCount = parameterCount
        self.learningRate = learningRate
        self.decay = decay
        state = stateNames.map { ($0, FlatArena(count: parameterCount)) }
    }

    /// A multiplier the trainer sets from its schedule (linear scaling with warm-up across replicas); 1 by default.
    public var learningRateScale: Float = 1

    public var currentLearningRate: Float { learningRate * learningRateScale / (1 + decay * Float(iterations)) }

    /// parameters −= step(gradients) over the trainable parameters, statistics −= their slots, then counts the
    /// iteration.
    public final func apply(parameters: UnsafeMutablePointer<Float>, gradients: UnsafePointer<Float>) {
        update(parameters: parameters, gradients: gradients, count: trainableCount, learningRate: currentLearningRate)
        for i in trainableCount..<parameterCount { parameters[i] -= gradients[i] }
        iterations += 1
    }

    open func update(parameters: UnsafeMutablePointer<Float>, gradients: UnsafePointer<Float>, count: Int, learningRate: Float) {
        fatalError("subclasses implement update")
    }
}

/// Stochastic gradient descent with optional (Nesterov) momentum, as Keras defines it:
/// v = μ·v − lr·g; w += v, or w += μ·v − lr·g with Nesterov.
public final class SGD: Optimizer, @unchecked Sendable {
    public let momentum: Float
    public let nesterov: Bool

    public init(parameterCount: Int, learningRate: Float, decay: Float = 0, momentum: Float = 0, nesterov: Bool = false) {
        self.momentum = momentum
        self.nesterov = nesterov
        super.init(parameterCount: parameterCount, learningRate: learningRate, decay: decay,
                   stateNames: momentum > 0 ? ["momentum"] : [])
    }

    override public func update(parameters w: UnsafeMutablePointer<Float>, gradients g: UnsafePointer<Float>, count: Int, learningRate lr: Float) {
        guard momentum > 0 else {
            for i in 0..<count { w[i] -= lr * g[i] }
            return
        }
        let v = state[0].arena.base, mu = momentum
        if nesterov {
            for i in 0..<count {
                v[i] = mu * v[i] - lr * g[i]
                w[i] += mu * v[i] - lr * g[i]
            }
        } else {
            for i in 0..<count {
                v[i] = mu * v[i] - lr * g[i]
                w[i] += v[i]
            }
        }
    }
}

/// Adam (Kingma & Ba), with Keras's defaults and its bias correction folded into the step size.
public final class Adam: Optimizer, @unchecked Sendable {
    public let beta1: Float, beta2: Float, epsilon: Float

    public init(parameterCount: Int, learningRate: Float, decay: Float = 0, beta1: Float = 0.9, beta2: Float = 0.999, epsilon: Float = 1e-7) {
        self.beta1 = beta1
        self.beta2 = beta2
        self.epsilon = epsilon
        super.init(parameterCount: parameterCount, learningRate: learningRate, decay: decay, stateNames: ["m", "v"])
    }

    override public func update(parameters w: UnsafeMutablePointer<Float>, gradients g: UnsafePointer<Float>, count: Int, learningRate lr: Float) {
        let t = Float(iterations + 1)
        let step = lr * (1 - powf(beta2, t)).squareRoot() / (1 - powf(beta1, t))
        let m = state[0].arena.base, v = state[1].arena.base
        let b1 = beta1, b2 = beta2, eps = epsilon
        for i in 0..<count {
            m[i] = b1 * m[i] + (1 - b1) * g[i]
            v[i] = b2 * v[i] + (1 - b2) * g[i] * g[i]
            w[i] -= step * m[i] / (v[i].squareRoot() + eps)
        }
    }
}

#if canImport(Glibc)
import Glibc
#endif
