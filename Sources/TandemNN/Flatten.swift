import TandemCore

/// Flattens each example to one row of features (Keras's `Flatten`): NHWC images are already stored row by row, so
/// forward and backward are copies.
///
/// ```swift
/// Flatten()
/// ```
public final class Flatten: Layer, @unchecked Sendable {
    public private(set) var features = 0

    public init() {}

    public var specification: ModelSpec.Layer { ModelSpec.Layer(type: "flatten") }
    public var activation: Activation { .identity }

    public func build(name: String, inputShape: [Int], layout: inout ArenaLayout) throws -> [Int] {
        features = SaturatingSize.product(inputShape)
        return [features]
    }

    public var parameterViews: [ArenaView] { [] }
    public func initializeParameters(_ parameters: UnsafeMutablePointer<Float>, generator: inout SeededGenerator) {}

    public func forward(parameters: UnsafePointer<Float>, input: UnsafePointer<Float>, output: UnsafeMutablePointer<Float>,
                        rows: Int, context: LayerContext) {
        output.update(from: input, count: rows * features)
    }

    public func backward(parameters: UnsafePointer<Float>, gradients: UnsafeMutablePointer<Float>,
                         input: UnsafePointer<Float>, output: UnsafePointer<Float>, dOutput: UnsafeMutablePointer<Float>,
                         dInput: UnsafeMutablePointer<Float>?, rows: Int, activationIsFused: Bool, context: LayerContext) {
        dInput?.update(from: dOutput, count: rows * features)
    }
}
