import TandemCore

/// A layer of a ``Sequential`` model. It owns no parameter storage: once built, its tensors are named views into the
/// model's flat parameter arena, and the same offsets address their gradients in the gradient arena, so an
/// all-reduce of the gradients is one call on one buffer. Forward and backward run on buffers the model allocated
/// once for its largest batch.
///
/// A new kind of layer is a new conformance (its file, its kernels, its test); `Sequential`, the trainer and the
/// strategies do not change.
///
/// ```swift
/// let model = try Sequential(inputSize: 784) {
///     Dense(50, activation: .tanh)
///     Dense(10, activation: .softmax)
/// }
/// ```
public protocol Layer: AnyObject, Sendable {
    /// The layer as a config names it (`{"type": "dense", "units": 50, "activation": "tanh"}`), so a model built in
    /// code and one built from a config are the same model, and checkpoints of one load in the other.
    var specification: ModelSpec.Layer { get }

    /// The activation of the layer's output (the loss may fuse the last layer's softmax).
    var activation: Activation { get }

    /// Places the layer after a layer whose output has `inputShape` (one example, no batch dimension): checks that
    /// shape, names its tensors `name/...` at `parameterOffset` in the arena, and returns its output shape.
    /// Throws a `TandemError` naming the layer and both shapes when the input does not fit.
    func build(name: String, inputShape: [Int], parameterOffset: Int) throws -> [Int]

    /// The layer's tensors in the arena, in order (empty for a layer without parameters).
    var parameterViews: [ArenaView] { get }

    /// Writes the initial values of the layer's parameters (Keras's defaults) into `parameters`.
    func initializeParameters(_ parameters: UnsafeMutablePointer<Float>, generator: inout SeededGenerator)

    /// `output` ← the layer on `rows` examples of `input`.
    func forward(parameters: UnsafePointer<Float>, input: UnsafePointer<Float>, output: UnsafeMutablePointer<Float>, rows: Int)

    /// Given `dOutput` (the loss gradient w.r.t. this layer's output; the layer may overwrite it), accumulates the
    /// parameters' gradients into `gradients` and, when `dInput` is given, writes the gradient w.r.t. the input.
    /// `activationIsFused`: `dOutput` is already the gradient before the activation (softmax + cross-entropy).
    func backward(parameters: UnsafePointer<Float>, gradients: UnsafeMutablePointer<Float>,
                  input: UnsafePointer<Float>, output: UnsafePointer<Float>, dOutput: UnsafeMutablePointer<Float>,
                  dInput: UnsafeMutablePointer<Float>?, rows: Int, activationIsFused: Bool)
}

extension Layer {
    /// Floats the layer takes in the arena.
    public var parameterCount: Int { parameterViews.reduce(0) { $0 + $1.count } }
}

/// Builds the layer list of a ``Sequential`` model from a block of layer expressions.
@resultBuilder
public enum LayerBuilder {
    public static func buildExpression(_ layer: any Layer) -> [any Layer] { [layer] }
    public static func buildExpression(_ layers: [any Layer]) -> [any Layer] { layers }
    public static func buildBlock(_ parts: [any Layer]...) -> [any Layer] { parts.flatMap { $0 } }
    public static func buildOptional(_ layers: [any Layer]?) -> [any Layer] { layers ?? [] }
    public static func buildEither(first layers: [any Layer]) -> [any Layer] { layers }
    public static func buildEither(second layers: [any Layer]) -> [any Layer] { layers }
    public static func buildArray(_ parts: [[any Layer]]) -> [any Layer] { parts.flatMap { $0 } }
}

extension ModelSpec.Layer {
    /// The layer this description names (`type` defaults to dense).
    public func makeLayer(index: Int) throws -> any Layer {
        switch (type ?? "dense").lowercased() {
        case "dense":
            let activation: Activation
            do { activation = try Activation(name: self.activation ?? "identity") } catch let error as TandemError {
                throw TandemError(.badConfig, "model.layers[\(index)].activation: \(error.message)")
            }
            return Dense(units, activation: activation)
        default:
            throw TandemError(.badConfig, "model.layers[\(index)].type: unknown layer type \(TandemError.quoted(type ?? "")) (expected \"dense\")")
        }
    }
}
