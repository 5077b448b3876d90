import Foundation
import Testing
import TandemCore
import TandemNN

/// Optimizer updates against the Keras formulas evaluated in Double.
@Suite struct OptimizerTests {
    static let initial: [Float] = [1, -2, 0.5, 0]
    static let steps: [[Float]] = [[0.5, -1, 2, 0], [-0.25, 3, 1, 0.75], [1, 1, -4, -0.5]]

    /// Applies `steps` gradients to `initial` parameters.
    static func run(_ optimizer: Optimizer, steps count: Int) -> [Float] {
        var w = initial
        for g in steps.prefix(count) {
            w.withUnsafeMutableBufferPointer { optimizer.apply(parameters: $0.baseAddress!, gradients: g) }
        }
        return w
    }

    static func expectClose(_ actual: [Float], _ expected: [Double], sourceLocation: SourceLocation = #_sourceLocation) {
        #expect(actual.count == expected.count, sourceLocation: sourceLocation)
        for (a, e) in zip(actual, expected) {
            #expect(abs(Double(a) - e) <= 1e-6 * max(1, abs(e)), "got \(a), Keras formula gives \(e)", sourceLocation: sourceLocation)
        }
    }

    @Test func plainSGDWithDecay() {
        let lr = 0.1, decay = 0.5
        let optimizer = SGD(parameterCount: 4, learningRate: Float(lr), decay: Float(decay))
        #expect(optimizer.state.isEmpty)
        let w = Self.run(optimizer, steps: 3)
        var expected = Self.initial.map(Double.init)
        for (t, g) in Self.steps.enumerated() {
            let rate = lr / (1 + decay * Double(t))
            for i in 0..<4 { expected[i] -= rate * Double(g[i]) }
        }
        Self.expectClose(w, expected)
        #expect(optimizer.iterations == 3)
        #expect(abs(Double(optimizer.currentLearningRate) - lr / (1 + decay * 3)) < 1e-7)
    }

    @Test func plainSGDSingleStep() {
        let w = Self.run(SGD(parameterCount: 4, learningRate: 0.1), steps: 1)
        let lr: Float = 0.1
        let expected: [Float] = [1 - lr * 0.5, -2 - lr * -1, 0.5 - lr * 2, 0]
        #expect(w == expected)
    }

    @Test(arguments: [false, true])
    func momentumSGD(nesterov: Bool) {
        let lr = 0.05, mu = 0.9, decay = 0.01
        let optimizer = SGD(parameterCount: 4, learningRate: Float(lr), decay: Float(decay), momentum: Float(mu), nesterov: nesterov)
        #expect(optimizer.state.map(\.name) == ["momentum"])
        let w = Self.run(optimizer, steps: 3)
        var expected = Self.initial.map(Double.init), velocity = [Double](repeating: 0, count: 4)
        for (t, g) in Self.steps.enumerated() {
            let rate = lr / (1 + decay * Double(t))
            for i in 0..<4 {
                velocity[i] = mu * velocity[i] - rate * Double(g[i])
                expected[i] += nesterov ? mu * velocity[i] - rate * Double(g[i]) : velocity[i]
            }
        }
        Self.expectClose(w, expected)
        Self.expectClose(optimizer.state[0].arena.array, velocity)
    }

    @Test func nesterovFirstStepByHand() {
        // v = −lr g = −0.05; w = 1 + 0.9 · (−0.05) − 0.1 · 0.5 = 0.905
        let optimizer = SGD(parameterCount: 1, learningRate: 0.1, momentum: 0.9, nesterov: true)
        var w: [Float] = [1]
        w.withUnsafeMutableBufferPointer { optimizer.apply(parameters: $0.baseAddress!, gradients: [0.5]) }
        #expect(abs(w[0] - 0.905) < 1e-7)
        #expect(abs(optimizer.state[0].arena[0] - -0.05) < 1e-8)
    }

    @Test(arguments: [0.0, 0.1])
    func adam(decay: Double) {
        let lr = 0.01, b1 = 0.9, b2 = 0.999, eps = 1e-7
        let optimizer = Adam(parameterCount: 4, learningRate: Float(lr), decay: Float(decay))
        #expect(optimizer.beta1 == 0.9 && optimizer.beta2 == 0.999 && optimizer.epsilon == 1e-7)
        #expect(optimizer.state.map(\.name) == ["m", "v"])
        let w = Self.run(optimizer, steps: 3)
        var expected = Self.initial.map(Double.init)
        var m = [Double](repeating: 0, count: 4), v = [Double](repeating: 0, count: 4)
        for (index, g) in Self.steps.enumerated() {
            let t = Double(index + 1)
            let rate = lr / (1 + decay * Double(index))
            let step = rate * (1 - pow(b2, t)).squareRoot() / (1 - pow(b1, t))
            for i in 0..<4 {
                m[i] = b1 * m[i] + (1 - b1) * Double(g[i])
                v[i] = b2 * v[i] + (1 - b2) * Double(g[i]) * Double(g[i])
                expected[i] -= step * m[i] / (v[i].squareRoot() + eps)
            }
        }
        Self.expectClose(w, expected)
        Self.expectClose(optimizer.state[0].arena.array, m)
        Self.expectClose(optimizer.state[1].arena.array, v)
        #expect(optimizer.iterations == 3)
    }

    @Test func adamFirstStepMovesEachWeightByAboutTheLearningRate() {
        // With bias correction the first step is lr · g / (|g| + ε·…) ≈ lr · sign(g).
        let optimizer = Adam(parameterCount: 4, learningRate: 0.001)
        let w = Self.run(optimizer, steps: 1)
        let moved = zip(w, Self.initial).map { Double($0 - $1) }
        let expected: [Double] = [-0.001, 0.001, -0.001, 0]
        for i in 0..<4 { #expect(abs(moved[i] - expected[i]) < 1e-6) }
    }

    @Test func specBuildsTheOptimizerItNames() throws {
        let sgd = try OptimizerSpec(name: "SGD", learningRate: 0.1, momentum: 0.5, nesterov: true, decay: 0.01)
            .makeOptimizer(parameterCount: 7)
        let typed = try #require(sgd as? SGD)
        #expect(typed.momentum == 0.5 && typed.nesterov && typed.decay == 0.01 && typed.learningRate == 0.1)
        #expect(typed.parameterCount == 7 && typed.state[0].arena.count == 7)

        let json = #"{"name": "adam", "learning_rate": 0.002, "beta_1": 0.8, "beta_2": 0.99, "epsilon": 1e-8}"#
        let spec = try JSONDecoder().decode(OptimizerSpec.self, from: Data(json.utf8))
        let adam = try #require(try spec.makeOptimizer(parameterCount: 3) as? Adam)
        #expect(adam.learningRate == 0.002 && adam.beta1 == 0.8 && adam.beta2 == 0.99 && adam.epsilon == 1e-8)
        #expect(adam.decay == 0)
    }
}
