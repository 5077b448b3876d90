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
    /// shape, takes its tensors `name/...` from `layout`, and returns its output shape.
    /// Throws a `TandemError` naming the layer and both shapes when the input does not fit.
    func build(name: String, inputShape: [Int], layout: inout ArenaLayout) throws -> [Int]

    /// The layer's tensors in the arena (trainable parameters, then statistics; empty for a layer without any).
    var parameterViews: [ArenaView] { get }

    /// Writes the initial values of the layer's parameters (Keras's defaults) into `parameters`.
    func initializeParameters(_ parameters: UnsafeMutablePointer<Float>, generator: inout SeededGenerator)

    /// Whether this layer's backward also applies the derivative of `activation`, the preceding layer's (which then
    /// skips it). Asked once, when the model is built; a layer answering true must then apply it.
    func absorbsActivationBackward(of activation: Activation) -> Bool

    /// Whether the layer sums statistics across replicas while training (synchronized batch normalization): every
    /// replica must then run it on every step, and the strategy gives the context its replicas.
    var synchronizesReplicas: Bool { get }

    /// Allocates what the layer keeps between forward and backward (pooling indices, dropout masks, unfolded
    /// images) for batches of up to `rows` rows. Called when the model grows its buffers, never per step.
    func reserve(maxBatchSize rows: Int)

    /// `output` ← the layer on `rows` examples of `input`. Throws only when a collective the layer needs fails.
    func forward(parameters: UnsafePointer<Float>, input: UnsafePointer<Float>, output: UnsafeMutablePointer<Float>,
                 rows: Int, context: LayerContext) throws

    /// Given `dOutput` (the loss gradient w.r.t. this layer's output; the layer may overwrite it), accumulates the
    /// parameters' gradients into `gradients` and, when `dInput` is given, writes the gradient w.r.t. the input.
    /// `activationIsFused`: `dOutput` is already the gradient before the activation (softmax + cross-entropy).
    func backward(parameters: UnsafePointer<Float>, gradients: UnsafeMutablePointer<Float>,
                  input: UnsafePointer<Float>, output: UnsafePointer<Float>, dOutput: UnsafeMutablePointer<Float>,
                  dInput: UnsafeMutablePointer<Float>?, rows: Int, activationIsFused: Bool, context: LayerContext) throws
}

/// A layer that can run together with the layer after it, as one pass that never writes its own output: a
/// convolution and the max pooling after it, where that output is the model's largest tensor. `Sequential` asks
/// each such layer once, when the model is built; from then on the pair runs through the two methods below, with
/// the second layer's output and output gradient.
public protocol FusingLayer: Layer {
    /// Asks the layer to run fused with `next` from now on; returns whether it will (it then prepares for it, and
    /// `reserve` allocates what the pair keeps). `needsInputGradient`: whether the pair owes the gradient w.r.t. its
    /// input (false for a model's first layer).
    func fuse(with next: any Layer, needsInputGradient: Bool) -> Bool

    /// `output` (the next layer's output) ← the next layer on this layer on `rows` examples of `input`.
    func forward(fusedWith next: any Layer, parameters: UnsafePointer<Float>, input: UnsafePointer<Float>,
                 output: UnsafeMutablePointer<Float>, rows: Int, context: LayerContext) throws

    /// Given `dOutput`, the loss gradient w.r.t. the next layer's `output`, accumulates both layers' parameter
    /// gradients into `gradients` and, when `dInput` is given, writes the gradient w.r.t. the pair's input.
    func backward(fusedWith next: any Layer, parameters: UnsafePointer<Float>, gradients: UnsafeMutablePointer<Float>,
                  input: UnsafePointer<Float>, output: UnsafePointer<Float>, dOutput: UnsafePointer<Float>,
                  dInput: UnsafeMutablePointer<Float>?, rows: Int, context: LayerContext) throws
}

extension Layer {
    /// Floats the layer takes in the arena.
    public var parameterCount: Int { parameterViews.reduce(0) { $0 + $1.count } }

    public func reserve(maxBatchSize rows: Int) {}
    public var synchronizesReplicas: Bool { false }
    public func absorbsActivationBackward(of activation: Activation) -> Bool { false }
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
    /// The layer types a config may name, as `type` spells them (Keras's class names, lower-cased with
    /// underscores; `max_pooling2d` and `average_pooling2d` are accepted too).
    public static let typeNames = ["dense", "conv2d", "max_pool2d", "average_pool2d", "flatten", "dropout", "batch_normalization"]

    /// The layer this description names (`type` defaults to dense), after checking each field it reads; a field
    /// that does not belong to its type is refused too, so a misplaced key is not silently ignored.
    public func makeLayer(index: Int) throws -> any Layer {
        let field = "model.layers[\(index)]"
        func fail(_ name: String, _ message: String) -> TandemError { TandemError(.badConfig, "\(field).\(name) \(message)") }
        func whole(_ value: Int?, _ name: String, default fallback: Int? = nil, range: ClosedRange<Int>) throws -> Int {
            guard let value = value ?? fallback else { throw fail(name, "is missing (a \(kind) layer needs it)") }
            guard range.contains(value) else { throw fail(name, "must be between \(range.lowerBound) and \(range.upperBound), found \(value)") }
            return value
        }
        func activationField() throws -> Activation {
            do { return try Activation(name: activation ?? "identity") } catch let error as TandemError {
                throw TandemError(.badConfig, "\(field).activation: \(error.message)")
            }
        }
        func paddingField() throws -> WindowGeometry.Padding {
            guard let padding else { return .valid }
            guard let parsed = WindowGeometry.Padding(rawValue: padding.lowercased()) else {
                throw fail("padding", "must be \"valid\" or \"same\", found \(TandemError.quoted(padding))")
            }
            return parsed
        }
        func refuseFields(except allowed: Set<String>) throws {
            let given: [(String, Bool)] = [("units", units != nil), ("activation", activation != nil), ("filters", filters != nil),
                                           ("kernel_size", kernelSize != nil), ("pool_size", poolSize != nil), ("strides", strides != nil),
                                           ("padding", padding != nil), ("rate", rate != nil), ("momentum", momentum != nil),
                                           ("epsilon", epsilon != nil), ("synchronized", synchronized != nil)]
            if let stray = given.first(where: { $0.1 && !allowed.contains($0.0) }) {
                throw fail(stray.0, "does not apply to a \(kind) layer")
            }
        }
        let window = 1...4096
        switch kind {
        case "dense":
            try refuseFields(except: ["units", "activation"])
            return Dense(try whole(units, "units", range: 1...ModelSpec.maximumUnits), activation: try activationField())
        case "conv2d":
            try refuseFields(except: ["filters", "kernel_size", "strides", "padding", "activation"])
            return Conv2D(try whole(filters, "filters", range: 1...ModelSpec.maximumUnits),
                          kernelSize: try whole(kernelSize, "kernel_size", range: window),
                          strides: try whole(strides, "strides", default: 1, range: window),
                          padding: try paddingField(), activation: try activationField())
        case "max_pool2d", "max_pooling2d", "average_pool2d", "average_pooling2d":
            try refuseFields(except: ["pool_size", "strides", "padding"])
            let size = try whole(poolSize, "pool_size", default: 2, range: window)
            let stride = try whole(strides, "strides", default: size, range: window)
            return kind.hasPrefix("max")
                ? MaxPool2D(poolSize: size, strides: stride, padding: try paddingField())
                : AveragePool2D(poolSize: size, strides: stride, padding: try paddingField())
        case "flatten":
            try refuseFields(except: [])
            return Flatten()
        case "dropout":
            try refuseFields(except: ["rate"])
            guard let rate else { throw fail("rate", "is missing (a dropout layer needs it)") }
            guard rate >= 0, rate < 1 else { throw fail("rate", "must be in [0, 1), found \(rate)") }
            return Dropout(rate: rate)
        case "batch_normalization":
            try refuseFields(except: ["momentum", "epsilon", "synchronized"])
            let momentum = momentum ?? 0.99, epsilon = epsilon ?? 1e-3
            guard momentum >= 0, momentum < 1 else { throw fail("momentum", "must be in [0, 1), found \(momentum)") }
            guard epsilon > 0, epsilon.isFinite else { throw fail("epsilon", "must be a positive number, found \(epsilon)") }
            return BatchNormalization(momentum: momentum, epsilon: epsilon, synchronized: synchronized ?? false)
        default:
            let expected = Self.typeNames.map { "\"\($0)\"" }.joined(separator: ", ")
            throw TandemError(.badConfig, "\(field).type: unknown layer type \(TandemError.quoted(type ?? "")) (expected one of \(expected))")
        }
    }
}
