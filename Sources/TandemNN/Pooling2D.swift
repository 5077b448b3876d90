import TandemCore

/// 2-D pooling over NHWC images, as Keras's `MaxPooling2D` and `AveragePooling2D`: each channel's window of
/// `poolSize` × `poolSize` becomes its maximum (`MaxPool2D`, which keeps where each maximum came from for backward)
/// or its mean (`AveragePool2D`). No parameters. Strides default to the pool size, padding to "valid".
///
/// ```swift
/// MaxPool2D(poolSize: 2)
/// ```
public class Pooling2D: Layer, @unchecked Sendable {
    enum Kind: String { case max = "max_pool2d", average = "average_pool2d" }

    let kind: Kind
    public let poolSize: Int
    public let strides: Int
    public let padding: WindowGeometry.Padding
    public private(set) var geometry: WindowGeometry?
    /// Per output value, the index within its example's input of the maximum (max pooling only).
    private var argmax: UnsafeMutableBufferPointer<Int32> = .allocate(capacity: 0)
    /// Whether backward also applies the derivative of a ReLU before this layer (see `absorbsActivationBackward`).
    private var appliesReLUDerivative = false

    init(kind: Kind, poolSize: Int, strides: Int?, padding: WindowGeometry.Padding) {
        self.kind = kind
        self.poolSize = poolSize
        self.strides = strides ?? poolSize
        self.padding = padding
    }

    deinit { argmax.deallocate() }

    public var activation: Activation { .identity }

    public var specification: ModelSpec.Layer {
        ModelSpec.Layer(type: kind.rawValue, poolSize: poolSize, strides: strides == poolSize ? nil : strides,
                        padding: padding == .valid ? nil : padding.rawValue)
    }

    public func build(name: String, inputShape: [Int], layout: inout ArenaLayout) throws -> [Int] {
        let title = kind == .max ? "MaxPool2D" : "AveragePool2D"
        let g = try windowGeometry(layer: "\(name) (\(title))", inputShape: inputShape, window: poolSize, strides: strides, padding: padding)
        geometry = g
        return [g.outputHeight, g.outputWidth, g.channels]
    }

    public var parameterViews: [ArenaView] { [] }

    public func initializeParameters(_ parameters: UnsafeMutablePointer<Float>, generator: inout SeededGenerator) {}

    /// Max pooling takes over a preceding ReLU's derivative: its gradient reaches only each window's maximum, where
    /// the ReLU's derivative is (maximum > 0) — one test per pooled value instead of a pass over the larger input.
    public func absorbsActivationBackward(of activation: Activation) -> Bool {
        appliesReLUDerivative = kind == .max && activation == .relu
        return appliesReLUDerivative
    }

    public func reserve(maxBatchSize rows: Int) {
        guard kind == .max, let g = geometry else { return }
        argmax.deallocate()
        argmax = .allocate(capacity: rows * g.outputPixels * g.channels)
    }

    public func forward(parameters: UnsafePointer<Float>, input: UnsafePointer<Float>, output: UnsafeMutablePointer<Float>,
                        rows: Int, context: LayerContext) {
        guard let g = geometry else { preconditionFailure("pooling forward before build") }
        switch kind {
        case .max: maxPoolForward(input, g, samples: rows, output: output, argmax: argmax.baseAddress! + context.firstRow * g.outputPixels * g.channels)
        case .average: averagePool(g, samples: rows, backward: false, image: UnsafeMutablePointer(mutating: input), pooled: output)
        }
    }

    public func backward(parameters: UnsafePointer<Float>, gradients: UnsafeMutablePointer<Float>,
                         input: UnsafePointer<Float>, output: UnsafePointer<Float>, dOutput: UnsafeMutablePointer<Float>,
                         dInput: UnsafeMutablePointer<Float>?, rows: Int, activationIsFused: Bool, context: LayerContext) {
        guard let g = geometry, let dInput else { return }
        switch kind {
        case .max:
            maxPoolBackward(dOutput, output: output, argmax: argmax.baseAddress! + context.firstRow * g.outputPixels * g.channels, g, samples: rows,
                            positiveOnly: appliesReLUDerivative, dInput: dInput)
        case .average:
            dInput.update(repeating: 0, count: rows * g.inputCount)
            averagePool(g, samples: rows, backward: true, image: dInput, pooled: dOutput)
        }
    }
}

/// Max pooling (Keras's `MaxPooling2D`). See ``Pooling2D``.
public final class MaxPool2D: Pooling2D, @unchecked Sendable {
    public init(poolSize: Int = 2, strides: Int? = nil, padding: WindowGeometry.Padding = .valid) {
        super.init(kind: .max, poolSize: poolSize, strides: strides, padding: padding)
    }
}

/// Average pooling (Keras's `AveragePooling2D`; padded cells are not counted). See ``Pooling2D``.
public final class AveragePool2D: Pooling2D, @unchecked Sendable {
    public init(poolSize: Int = 2, strides: Int? = nil, padding: WindowGeometry.Padding = .valid) {
        super.init(kind: .average, poolSize: poolSize, strides: strides, padding: padding)
    }
}
