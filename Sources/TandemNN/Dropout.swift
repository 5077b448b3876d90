import TandemCore

/// Sets a fraction `rate` of its inputs to zero while training and scales the rest by 1 / (1 − rate) (Keras's
/// `Dropout`); passes its input through at evaluation and prediction.
///
/// Each example's mask depends only on the run's seed, the layer, the epoch and the example's index in the data set
/// (``DropoutMask``), so a run trains the same parameters whether its batch is split over 1, 2 or 8 replicas.
///
/// ```swift
/// Dropout(rate: 0.5)
/// ```
public final class Dropout: Layer, @unchecked Sendable {
    public let rate: Float
    private let mask: DropoutMask
    private var features = 0
    /// Identifies the layer in the mask's key (from its name, so the same layer of every replica draws alike).
    private var layerKey: UInt64 = 0
    private var multipliers = FlatArena(count: 0)

    public init(rate: Float) {
        self.rate = rate
        mask = DropoutMask(rate: rate)
    }

    public var specification: ModelSpec.Layer { ModelSpec.Layer(type: "dropout", rate: rate) }
    public var activation: Activation { .identity }

    public func build(name: String, inputShape: [Int], layout: inout ArenaLayout) throws -> [Int] {
        guard rate >= 0, rate < 1 else { throw TandemError(.badConfig, "\(name) (Dropout): rate must be in [0, 1), found \(rate)") }
        features = SaturatingSize.product(inputShape)
        layerKey = name.utf8.reduce(0xcbf2_9ce4_8422_2325) { ($0 ^ UInt64($1)) &* 0x100_0000_01b3 }
        return inputShape
    }

    public var parameterViews: [ArenaView] { [] }
    public func initializeParameters(_ parameters: UnsafeMutablePointer<Float>, generator: inout SeededGenerator) {}

    public func reserve(maxBatchSize rows: Int) { multipliers = FlatArena(count: rows * features) }

    public func forward(parameters: UnsafePointer<Float>, input: UnsafePointer<Float>, output: UnsafeMutablePointer<Float>,
                        rows: Int, context: LayerContext) {
        guard context.training, rate > 0 else {
            output.update(from: input, count: rows * features)
            return
        }
        for row in 0..<rows {
            let key = DropoutMask.exampleKey(seed: context.seed, layer: layerKey, epoch: context.epoch, example: context.exampleIndex(row))
            let m = multipliers.base + (context.firstRow + row) * features, x = input + row * features, y = output + row * features
            mask.fill(m, count: features, key: key)
            for i in 0..<features { y[i] = x[i] * m[i] }
        }
    }

    public func backward(parameters: UnsafePointer<Float>, gradients: UnsafeMutablePointer<Float>,
                         input: UnsafePointer<Float>, output: UnsafePointer<Float>, dOutput: UnsafeMutablePointer<Float>,
                         dInput: UnsafeMutablePointer<Float>?, rows: Int, activationIsFused: Bool, context: LayerContext) {
        guard let dInput else { return }
        guard context.training, rate > 0 else {
            dInput.update(from: dOutput, count: rows * features)
            return
        }
        let m = multipliers.base + context.firstRow * features
        for i in 0..<rows * features { dInput[i] = dOutput[i] * m[i] }
    }
}
