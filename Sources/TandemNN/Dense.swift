import TandemCore

/// A fully connected layer y = activation(x · W + b) on a flat input, as Keras's `Dense`: its kernel [in, out] and
/// bias [out] are views into the model's parameter arena.
///
/// ```swift
/// Dense(50, activation: .tanh)
/// ```
public final class Dense: Layer, @unchecked Sendable {
    public let outputSize: Int
    public let activation: Activation
    // Set once by `build`, before any forward; read-only afterwards (hence @unchecked Sendable).
    public private(set) var inputSize = 0
    public private(set) var kernel = ArenaView(name: "kernel", offset: 0, shape: [0, 0])
    public private(set) var bias = ArenaView(name: "bias", offset: 0, shape: [0])

    /// A layer of `units` outputs; its input size comes from the layer before it when the model is built.
    public init(_ units: Int, activation: Activation = .identity) {
        outputSize = units
        self.activation = activation
    }

    public var specification: ModelSpec.Layer { ModelSpec.Layer(units: outputSize, activation: activation) }

    public func build(name: String, inputShape: [Int], layout: inout ArenaLayout) throws -> [Int] {
        guard inputShape.count == 1, let inputs = inputShape.first, inputs > 0 else {
            throw TandemError(.badConfig, "\(name) (Dense) expects a flat input [features], found \(inputShape); add Flatten() before it")
        }
        guard inputs <= ModelSpec.maximumWidth else {
            throw TandemError(.badConfig, "\(name) (Dense): its input of \(inputs) features is more than \(ModelSpec.maximumWidth)")
        }
        guard outputSize > 0, outputSize <= ModelSpec.maximumUnits else {
            throw TandemError(.badConfig, "\(name) (Dense): units must be between 1 and \(ModelSpec.maximumUnits), found \(outputSize)")
        }
        inputSize = inputs
        kernel = layout.parameter("\(name)/kernel", shape: [inputSize, outputSize])
        bias = layout.parameter("\(name)/bias", shape: [outputSize])
        return [outputSize]
    }

    public var parameterViews: [ArenaView] { [kernel, bias] }

    /// Glorot-uniform kernel, zero bias (Keras's defaults).
    public func initializeParameters(_ parameters: UnsafeMutablePointer<Float>, generator: inout SeededGenerator) {
        let values = Tensor.glorotUniform(fanIn: inputSize, fanOut: outputSize, generator: &generator)
        values.scalars.withUnsafeBufferPointer { (parameters + kernel.offset).update(from: $0.baseAddress!, count: $0.count) }
    }

    /// output = activation(input · W + b) for `rows` rows.
    public func forward(parameters: UnsafePointer<Float>, input: UnsafePointer<Float>, output: UnsafeMutablePointer<Float>, rows: Int, context: LayerContext) {
        gemm(.none, .none, m: rows, n: outputSize, k: inputSize, a: input, lda: inputSize,
             b: parameters + kernel.offset, ldb: outputSize, beta: 0, c: output, ldc: outputSize)
        biasActivationForward(output, bias: parameters + bias.offset, rows: rows, columns: outputSize, activation: activation)
    }

    /// Given dOutput (overwritten with dZ), accumulates dW and db into `gradients` and, when `dInput` is given,
    /// writes the gradient w.r.t. the input.
    public func backward(
        parameters: UnsafePointer<Float>, gradients: UnsafeMutablePointer<Float>,
        input: UnsafePointer<Float>, output: UnsafePointer<Float>, dOutput: UnsafeMutablePointer<Float>,
        dInput: UnsafeMutablePointer<Float>?, rows: Int, activationIsFused: Bool, context: LayerContext
    ) {
        if !activationIsFused {
            activationBackward(dOutput, output: output, count: rows * outputSize, activation: activation)
        }
        gemm(.transposed, .none, m: inputSize, n: outputSize, k: rows, a: input, lda: inputSize,
             b: dOutput, ldb: outputSize, beta: 1, c: gradients + kernel.offset, ldc: outputSize)
        columnSumAccumulate(gradients + bias.offset, dOutput, rows: rows, columns: outputSize)
        if let dInput {
            gemm(.none, .transposed, m: rows, n: inputSize, k: outputSize, a: dOutput, lda: outputSize,
                 b: parameters + kernel.offset, ldb: outputSize, beta: 0, c: dInput, ldc: inputSize)
        }
    }
}
