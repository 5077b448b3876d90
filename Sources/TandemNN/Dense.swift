import TandemCore

/// A fully connected layer y = activation(x · W + b). It owns no storage: its kernel [in, out] and bias [out] are
/// views into the model's parameter arena, and the same offsets address its gradients in the gradient arena.
public struct Dense: Sendable {
    public let name: String
    public let inputSize: Int
    public let outputSize: Int
    public let activation: Activation
    public let kernel: ArenaView
    public let bias: ArenaView

    public init(name: String, inputSize: Int, outputSize: Int, activation: Activation, offset: Int) {
        self.name = name
        self.inputSize = inputSize
        self.outputSize = outputSize
        self.activation = activation
        kernel = ArenaView(name: "\(name)/kernel", offset: offset, shape: [inputSize, outputSize])
        bias = ArenaView(name: "\(name)/bias", offset: offset + inputSize * outputSize, shape: [outputSize])
    }

    public var parameterCount: Int { kernel.count + bias.count }

    /// output = activation(input · W + b) for `rows` rows.
    @inline(__always)
    public func forward(parameters: UnsafePointer<Float>, input: UnsafePointer<Float>, output: UnsafeMutablePointer<Float>, rows: Int) {
        gemm(.none, .none, m: rows, n: outputSize, k: inputSize, a: input, lda: inputSize,
             b: parameters + kernel.offset, ldb: outputSize, beta: 0, c: output, ldc: outputSize)
        biasActivationForward(output, bias: parameters + bias.offset, rows: rows, columns: outputSize, activation: activation)
    }

    /// Given dOutput (the loss gradient w.r.t. this layer's output, overwritten with dZ), accumulates dW and db into
    /// `gradients` and, when `dInput` is given, writes the gradient w.r.t. the input.
    @inline(__always)
    public func backward(
        parameters: UnsafePointer<Float>, gradients: UnsafeMutablePointer<Float>,
        input: UnsafePointer<Float>, output: UnsafePointer<Float>, dOutput: UnsafeMutablePointer<Float>,
        dInput: UnsafeMutablePointer<Float>?, rows: Int, activationIsFused: Bool
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
