import TandemCore

/// A stack of layers over one parameter arena and one gradient arena of the same layout, with every activation
/// buffer allocated once for the largest batch, so forward and backward never allocate.
///
/// Built in code with a result builder, or from a config's ``ModelSpec`` — the same layers either way:
///
/// ```swift
/// let model = try Sequential(inputSize: 784, seed: 1) {
///     Dense(50, activation: .tanh)
///     Dense(50, activation: .tanh)
///     Dense(10, activation: .softmax)
/// }
/// ```
///
/// The gradient arena has `statisticsSlots` extra floats after the parameters' gradients: the trainer puts the
/// step's loss sum and hit count there, so one all-reduce of the arena also combines them, and every replica sees
/// the same loss (a NaN stops every replica at the same step).
public final class Sequential: @unchecked Sendable {
    public static let statisticsSlots = 2

    public let inputSize: Int
    public let layers: [any Layer]
    /// Each layer's output shape for one example.
    public let outputShapes: [[Int]]
    public let parameterCount: Int
    public let parameters: FlatArena
    public let gradients: FlatArena
    /// The seed the parameters were initialized from (Glorot-uniform kernels in layer order).
    public let seed: UInt64
    /// The most rows one forward may take (grown by `reserve`, never per step).
    public private(set) var maxBatchSize = 0
    /// The optimizer and loss `compile(optimizer:loss:metrics:)` chose, for `fit`.
    public internal(set) var compilation: Compilation?

    /// outputs[l] is layer l's output; dOutputs[l] is the loss gradient w.r.t. it.
    private var outputs: [FlatArena] = []
    private var dOutputs: [FlatArena] = []
    private var lastInput: UnsafePointer<Float>?
    private var lastRows = 0

    /// Builds `layers` on inputs of `inputSize` features: checks every layer's input shape, lays their
    /// parameters out in one arena and initializes them from `seed`. `maxBatchSize`: rows to allocate the
    /// activation buffers for now (`fit` reserves what it needs).
    public init(inputSize: Int, seed: UInt64 = 42, maxBatchSize: Int = 0, @LayerBuilder _ layers: () -> [any Layer]) throws {
        let layers = layers()
        guard inputSize > 0, inputSize <= ModelSpec.maximumWidth else {
            throw TandemError(.badConfig, "model.input_size must be between 1 and \(ModelSpec.maximumWidth), found \(inputSize)")
        }
        guard !layers.isEmpty else { throw TandemError(.badConfig, "model.layers is empty: a model needs at least one layer") }
        for (index, layer) in layers.enumerated() where layer.activation == .softmax && index != layers.count - 1 {
            throw TandemError(.badConfig, "model.layers[\(index)].activation: softmax is only supported on the last layer")
        }
        let spec = ModelSpec(inputSize: inputSize, layers: layers.map(\.specification))
        try spec.checkFitsInMemory(maxBatchSize: max(maxBatchSize, 1), optimizerSlots: 0)
        var shapes: [[Int]] = []
        var shape = [inputSize]
        var offset = 0
        for (index, layer) in layers.enumerated() {
            shape = try layer.build(name: ModelSpec.layerName(index), inputShape: shape, parameterOffset: offset)
            shapes.append(shape)
            offset += layer.parameterCount
        }
        self.inputSize = inputSize
        self.layers = layers
        self.seed = seed
        outputShapes = shapes
        parameterCount = offset
        parameters = FlatArena(count: offset)
        gradients = FlatArena(count: offset + Self.statisticsSlots)
        var generator = SeededGenerator(seed: seed, stream: 0x1417)
        for layer in layers { layer.initializeParameters(parameters.base, generator: &generator) }
        try reserve(maxBatchSize: maxBatchSize)
    }

    /// The model a config describes (its layers from `spec.validated()`, so every field problem names its field).
    public convenience init(spec: ModelSpec, seed: UInt64, maxBatchSize: Int) throws {
        let layers = try spec.validated()
        guard maxBatchSize >= 1 else { throw TandemError(.usage, "a model needs batches of at least 1 row, found \(maxBatchSize)") }
        try self.init(inputSize: spec.inputSize, seed: seed, maxBatchSize: maxBatchSize) { layers }
    }

    /// A model of the same layers with its own arenas and buffers, holding a copy of these parameters: what
    /// each replica of a strategy trains.
    public func replica(maxBatchSize: Int) throws -> Sequential {
        let copy = try Sequential(spec: spec, seed: seed, maxBatchSize: maxBatchSize)
        copy.parameters.copy(from: parameters)
        return copy
    }

    /// The model as a config describes it: stored in checkpoints, compared between replicas.
    public var spec: ModelSpec { ModelSpec(inputSize: inputSize, layers: layers.map(\.specification)) }

    /// Makes the activation buffers hold batches of `rows` rows (allocating only when that is more than before).
    public func reserve(maxBatchSize rows: Int) throws {
        guard rows > maxBatchSize else { return }
        try spec.checkFitsInMemory(maxBatchSize: rows, optimizerSlots: 0)
        maxBatchSize = rows
        outputs = outputShapes.map { FlatArena(count: rows * $0.reduce(1, *)) }
        dOutputs = outputShapes.map { FlatArena(count: rows * $0.reduce(1, *)) }
    }

    public var outputSize: Int { outputShapes.last!.reduce(1, *) }
    public var lastActivation: Activation { layers.last!.activation }

    /// Every named tensor of the model in arena order: what checkpoints store.
    public var parameterViews: [ArenaView] { layers.flatMap(\.parameterViews) }

    /// Runs the layers on `rows` rows of `input` ([rows, inputSize]) and returns the last layer's output. A softmax
    /// last layer returns logits here (the loss fuses the softmax); `predict` applies it.
    @discardableResult
    public func forward(_ input: UnsafePointer<Float>, rows: Int) -> UnsafeMutablePointer<Float> {
        precondition(rows <= maxBatchSize, "batch of \(rows) rows exceeds the model's \(maxBatchSize)")
        lastInput = input
        lastRows = rows
        var current = input
        for index in layers.indices {
            layers[index].forward(parameters: parameters.base, input: current, output: outputs[index].base, rows: rows)
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
