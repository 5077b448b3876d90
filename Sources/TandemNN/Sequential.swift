import TandemCore

/// A stack of Dense layers over one parameter arena and one gradient arena of the same layout, with every
/// activation buffer allocated once for `maxBatchSize` rows, so forward and backward never allocate.
///
/// The gradient arena has `statisticsSlots` extra floats after the parameters' gradients: the trainer puts the
/// step's loss sum and hit count there, so one all-reduce of the arena also combines them, and every replica sees
/// the same loss (a NaN stops every replica at the same step).
public final class Sequential: @unchecked Sendable {
    public static let statisticsSlots = 2

    public let spec: ModelSpec
    public let layers: [Dense]
    public let parameterCount: Int
    public let parameters: FlatArena
    public let gradients: FlatArena
    public let maxBatchSize: Int

    /// outputs[l] is layer l's output; dOutputs[l] is the loss gradient w.r.t. it.
    private let outputs: [FlatArena]
    private let dOutputs: [FlatArena]
    private var lastInput: UnsafePointer<Float>?
    private var lastRows = 0

    public init(spec: ModelSpec, seed: UInt64, maxBatchSize: Int) throws {
        let validated = try spec.validated()
        guard maxBatchSize >= 1 else { throw TandemError(.usage, "a model needs batches of at least 1 row, found \(maxBatchSize)") }
        try spec.checkFitsInMemory(maxBatchSize: maxBatchSize, optimizerSlots: 0)
        self.spec = spec
        self.maxBatchSize = maxBatchSize
        var layers: [Dense] = []
        var offset = 0
        var inputSize = spec.inputSize
        for (index, layer) in validated.enumerated() {
            let dense = Dense(name: ModelSpec.layerName(index), inputSize: inputSize, outputSize: layer.units,
                              activation: layer.activation, offset: offset)
            layers.append(dense)
            offset += dense.parameterCount
            inputSize = layer.units
        }
        self.layers = layers
        parameterCount = offset
        parameters = FlatArena(count: offset)
        gradients = FlatArena(count: offset + Self.statisticsSlots)
        outputs = layers.map { FlatArena(count: maxBatchSize * $0.outputSize) }
        dOutputs = layers.map { FlatArena(count: maxBatchSize * $0.outputSize) }

        var generator = SeededGenerator(seed: seed, stream: 0x1417)
        for layer in layers {
            let kernel = Tensor.glorotUniform(fanIn: layer.inputSize, fanOut: layer.outputSize, generator: &generator)
            kernel.scalars.withUnsafeBufferPointer { (parameters.base + layer.kernel.offset).update(from: $0.baseAddress!, count: $0.count) }
        }
    }

    public var inputSize: Int { spec.inputSize }
    public var outputSize: Int { layers.last!.outputSize }
    public var lastActivation: Activation { layers.last!.activation }

    /// Every named tensor of the model in arena order: what checkpoints store.
    public var parameterViews: [ArenaView] { layers.flatMap { [$0.kernel, $0.bias] } }

    /// Runs the layers on `rows` rows of `input` ([rows, inputSize]) and returns the last layer's output. A softmax
    /// last layer returns logits here (the loss fuses the softmax); `predict` applies it.
    @discardableResult
    public func forward(_ input: UnsafePointer<Float>, rows: Int) -> UnsafeMutablePointer<Float> {
        precondition(rows <= maxBatchSize, "batch of \(rows) rows exceeds the model's \(maxBatchSize)")
        lastInput = input
        lastRows = rows
        var current = input
        for (index, layer) in layers.enumerated() {
            layer.forward(parameters: parameters.base, input: current, output: outputs[index].base, rows: rows)
            current = UnsafePointer(outputs[index].base)
        }
        return outputs[layers.count - 1].base
    }

    /// Where the loss writes its gradient w.r.t. the model's output before `backward()`.
    public var dOutput: UnsafeMutablePointer<Float> { dOutputs[layers.count - 1].base }

    /// Back-propagates `dOutput` through the layers of the last forward, accumulating into `gradients`.
    /// `lossFusesLastActivation`: the loss already gave the gradient w.r.t. the pre-activation (softmax + CE).
    public func backward(lossFusesLastActivation: Bool, into target: UnsafeMutablePointer<Float>? = nil) {
        backward(lossFusesLastActivation: lossFusesLastActivation, into: target, afterLayer: { _ in })
    }

    /// `afterLayer(l)` runs as soon as layer l's gradients are final (last layer first): where a strategy starts
    /// sending them while the earlier layers are still being differentiated.
    /// `target`: a gradient buffer of the arena's layout to accumulate into instead of `gradients`.
    public func backward(lossFusesLastActivation: Bool, into target: UnsafeMutablePointer<Float>? = nil,
                         afterLayer: (Int) throws -> Void) rethrows {
        let gradientBase = target ?? gradients.base
        guard let input = lastInput else { preconditionFailure("backward() before forward()") }
        for index in stride(from: layers.count - 1, through: 0, by: -1) {
            let layerInput = index == 0 ? input : UnsafePointer(outputs[index - 1].base)
            layers[index].backward(
                parameters: parameters.base, gradients: gradientBase, input: layerInput,
                output: outputs[index].base, dOutput: dOutputs[index].base,
                dInput: index == 0 ? nil : dOutputs[index - 1].base, rows: lastRows,
                activationIsFused: index == layers.count - 1 && lossFusesLastActivation)
            try afterLayer(index)
        }
    }

    /// Forward in chunks of at most `maxBatchSize` rows, returning the output with the last activation applied
    /// (probabilities for a softmax model).
    public func predict(_ input: UnsafePointer<Float>, rows: Int, into result: UnsafeMutablePointer<Float>) {
        var start = 0
        while start < rows {
            let chunk = min(maxBatchSize, rows - start)
            let output = forward(input + start * inputSize, rows: chunk)
            if lastActivation == .softmax { softmaxRows(output, rows: chunk, columns: outputSize) }
            (result + start * outputSize).update(from: output, count: chunk * outputSize)
            start += chunk
        }
    }
}
