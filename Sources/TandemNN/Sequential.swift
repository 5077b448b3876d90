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

    /// One example's shape: [features], or [height, width, channels] for images.
    public let inputShape: [Int]
    public let layers: [any Layer]
    /// Each layer's output shape for one example.
    public let outputShapes: [[Int]]
    /// Each layer's output floats per example (the row width of its output buffer).
    private let outputWidths: [Int]
    /// Every float of the parameter arena: trainable parameters, then statistics (see ``ArenaLayout``).
    public let parameterCount: Int
    /// The trainable parameters, at the start of the arena: what the optimizer updates.
    public let trainableCount: Int
    public let parameters: FlatArena
    public let gradients: FlatArena
    /// The seed the parameters were initialized from (Glorot-uniform kernels in layer order).
    public let seed: UInt64
    /// The first layer of each pair of layers that runs as one pass (a convolution and the max pooling after it:
    /// see ``FusingLayer``), in order.
    public var fusedPairs: [Int] { pairedWithNext.indices.filter { pairedWithNext[$0] != nil } }
    /// The most rows one forward may take (grown by `reserve`, never per step).
    public private(set) var maxBatchSize = 0
    /// The optimizer and loss `compile(optimizer:loss:metrics:)` chose, for `fit`.
    public internal(set) var compilation: Compilation?
    /// The input scaling `fit` trained with (fitted on its training rows, without the validation rows), which
    /// `evaluate` and `save` use after it; nil before any `fit`.
    public var inputScaling: FeatureScaling?

    /// outputs[l] is layer l's output; dOutputs[l] is the loss gradient w.r.t. it.
    private var outputs: [FlatArena] = []
    private var dOutputs: [FlatArena] = []
    private var lastInput: UnsafePointer<Float>?
    private var lastRows = 0
    private var lastContext = LayerContext.inference
    /// pairedWithNext[l]: layer l when it runs fused with layer l + 1 (see `FusingLayer`); nobody writes its output.
    private let pairedWithNext: [(any FusingLayer)?]
    /// Where the layers were placed when the model was built: what `reserve` checks memory against.
    private let placement: ModelSpec.Placement
    /// activationTakenOver[l]: layer l + 1's backward applies layer l's activation derivative.
    private let activationTakenOver: [Bool]

    /// Builds `layers` on examples of `inputShape` ([features], or [height, width, channels]): checks every
    /// layer's input shape, lays their parameters out in one arena and initializes them from `seed`.
    /// `maxBatchSize`: rows to allocate the activation buffers for now (`fit` reserves what it needs).
    public init(inputShape: [Int], seed: UInt64 = 42, maxBatchSize: Int = 0, @LayerBuilder _ layers: () -> [any Layer]) throws {
        let layers = layers()
        let spec = ModelSpec(inputShape: inputShape, layers: layers.map(\.specification))
        // The fields of layers built in code get the checks a config's get (ranges, softmax only last).
        _ = try spec.validated()
        let placement = try ModelSpec.Placement(layers: layers, inputShape: inputShape)
        try placement.checkFitsInMemory(maxBatchSize: max(maxBatchSize, 1), optimizerSlots: 0)
        self.inputShape = inputShape
        self.layers = layers
        self.seed = seed
        self.placement = placement
        outputShapes = placement.outputShapes
        outputWidths = placement.outputShapes.map { $0.reduce(1, *) }
        parameterCount = placement.parameterCount
        trainableCount = placement.trainableCount
        var paired = [(any FusingLayer)?](repeating: nil, count: layers.count)
        var index = 0
        while index + 1 < layers.count {
            if let layer = layers[index] as? any FusingLayer, layer.fuse(with: layers[index + 1], needsInputGradient: index > 0) {
                paired[index] = layer
                index += 2
            } else {
                index += 1
            }
        }
        pairedWithNext = paired
        activationTakenOver = layers.indices.map { $0 + 1 < layers.count && layers[$0 + 1].absorbsActivationBackward(of: layers[$0].activation) }
        parameters = FlatArena(count: parameterCount)
        gradients = FlatArena(count: parameterCount + Self.statisticsSlots)
        var generator = SeededGenerator(seed: seed, stream: 0x1417)
        for layer in layers { layer.initializeParameters(parameters.base, generator: &generator) }
        try reserve(maxBatchSize: maxBatchSize)
    }

    /// Builds `layers` on flat inputs of `inputSize` features.
    public convenience init(inputSize: Int, seed: UInt64 = 42, maxBatchSize: Int = 0, @LayerBuilder _ layers: () -> [any Layer]) throws {
        try self.init(inputShape: [inputSize], seed: seed, maxBatchSize: maxBatchSize, layers)
    }

    /// The model a config describes (its layers from `spec.validated()`, so every field problem names its field).
    public convenience init(spec: ModelSpec, seed: UInt64, maxBatchSize: Int) throws {
        let layers = try spec.validated()
        guard maxBatchSize >= 1 else { throw TandemError(.usage, "a model needs batches of at least 1 row, found \(maxBatchSize)") }
        try self.init(inputShape: spec.inputShape, seed: seed, maxBatchSize: maxBatchSize) { layers }
    }

    /// A model of the same layers with its own arenas and buffers, holding a copy of these parameters: what
    /// each replica of a strategy trains.
    public func replica(maxBatchSize: Int) throws -> Sequential {
        let copy = try Sequential(spec: spec, seed: seed, maxBatchSize: maxBatchSize)
        copy.parameters.copy(from: parameters)
        return copy
    }

    /// The model as a config describes it: stored in checkpoints, compared between replicas.
    public var spec: ModelSpec { ModelSpec(inputShape: inputShape, layers: layers.map(\.specification)) }

    /// Features of one example.
    public var inputSize: Int { inputShape.reduce(1, *) }

    /// Makes the activation buffers (and what layers keep for backward) hold batches of `rows` rows, allocating
    /// only when that is more than before.
    public func reserve(maxBatchSize rows: Int) throws {
        guard rows > maxBatchSize else { return }
        try placement.checkFitsInMemory(maxBatchSize: rows, optimizerSlots: 0)
        maxBatchSize = rows
        // A fused pair never writes its first layer's output nor its gradient: no buffers for them.
        let kept = outputWidths.indices.map { pairedWithNext[$0] == nil ? rows * outputWidths[$0] : 0 }
        outputs = kept.map { FlatArena(count: $0) }
        dOutputs = kept.map { FlatArena(count: $0) }
        for layer in layers { layer.reserve(maxBatchSize: rows) }
    }

    public var outputSize: Int { outputWidths.last! }
    public var lastActivation: Activation { layers.last!.activation }
    /// Whether a layer sums statistics across replicas while training (a strategy then gives the context its
    /// replicas, and every replica must run the same layers on every step).
    public var synchronizesReplicas: Bool { layers.contains { $0.synchronizesReplicas } }

    /// Every named tensor of the model in arena order: what checkpoints store.
    public var parameterViews: [ArenaView] { layers.flatMap(\.parameterViews).sorted { $0.offset < $1.offset } }

    /// Runs the layers on `rows` rows of `input` ([rows, inputSize]) and returns the last layer's output. A softmax
    /// last layer returns logits here (the loss fuses the softmax); `predict` applies it. `context`: training or
    /// inference (the default), and what dropout and synchronized layers need; `backward` uses the same.
    /// With `context.groups` (see ``LockstepGroups``), the replica's reduction groups go through the layers together.
    @discardableResult
    public func forward(_ input: UnsafePointer<Float>, rows: Int, context: LayerContext = .inference) throws -> UnsafeMutablePointer<Float> {
        precondition(rows <= maxBatchSize, "batch of \(rows) rows exceeds the model's \(maxBatchSize)")
        lastInput = input
        lastRows = rows
        lastContext = context
        var current = input, width = inputSize, index = 0
        while index < layers.count {
            let pair = pairedWithNext[index], first = index
            if pair != nil { index += 1 }
            let output = outputs[index].base, outputWidth = outputWidths[index]
            let slices = slicing(rows: rows, context: context, synchronized: layers[first].synchronizesReplicas)
            for slice in 0..<slices.count {
                let start = slice * slices.rows, sliceContext = context.rows(from: start)
                if let pair {
                    try pair.forward(fusedWith: layers[index], parameters: parameters.base, input: current + start * width,
                                     output: output + start * outputWidth, rows: slices.rows, context: sliceContext)
                } else {
                    try layers[index].forward(parameters: parameters.base, input: current + start * width, output: output + start * outputWidth,
                                              rows: slices.rows, context: sliceContext)
                }
            }
            current = UnsafePointer(output)
            width = outputWidth
            index += 1
        }
        return outputs[layers.count - 1].base
    }

    /// How one layer runs on a pass's `rows`: at once, or — in a lockstep pass of reduction groups — once per group on
    /// its slice, except a layer that synchronizes replicas, which takes every row and keeps the groups apart itself.
    private func slicing(rows: Int, context: LayerContext, synchronized: Bool) -> (count: Int, rows: Int) {
        guard let groups = context.groups, !synchronized else { return (1, rows) }
        return (groups.localCount, groups.rowsPerGroup)
    }

    /// Where the loss writes its gradient w.r.t. the model's output before `backward()`.
    public var dOutput: UnsafeMutablePointer<Float> { dOutputs[layers.count - 1].base }

    /// Back-propagates `dOutput` through the layers of the last forward, accumulating into `gradients`.
    /// `lossFusesLastActivation`: the loss already gave the gradient w.r.t. the pre-activation (softmax + CE).
    public func backward(lossFusesLastActivation: Bool, into target: UnsafeMutablePointer<Float>? = nil) throws {
        try backward(lossFusesLastActivation: lossFusesLastActivation, into: target, afterLayer: { _ in })
    }

    /// `afterLayer(l)` runs as soon as layer l's gradients are final (last layer first): where a strategy starts
    /// sending them while the earlier layers are still being differentiated.
    /// `target`: a gradient buffer of the arena's layout to accumulate into instead of `gradients` (in a lockstep
    /// pass, each group accumulates into its own: `LockstepGroups.gradients`).
    public func backward(lossFusesLastActivation: Bool, into target: UnsafeMutablePointer<Float>? = nil,
                         afterLayer: (Int) throws -> Void) throws {
        let gradientBase = target ?? gradients.base
        guard let input = lastInput else { preconditionFailure("backward() before forward()") }
        var index = layers.count - 1
        while index >= 0 {
            // The layers this pass differentiates: index alone, or first = index - 1 fused with it.
            let pair = index > 0 ? pairedWithNext[index - 1] : nil, first = pair == nil ? index : index - 1
            let inputWidth = first == 0 ? inputSize : outputWidths[first - 1], outputWidth = outputWidths[index]
            let layerInput = first == 0 ? input : UnsafePointer(outputs[first - 1].base), dInput = first == 0 ? nil : dOutputs[first - 1].base
            let slices = slicing(rows: lastRows, context: lastContext, synchronized: layers[first].synchronizesReplicas)
            for slice in 0..<slices.count {
                let start = slice * slices.rows, context = lastContext.rows(from: start)
                let sliceGradients = lastContext.groups.map { layers[first].synchronizesReplicas ? gradientBase : $0.gradients[slice] } ?? gradientBase
                if let pair {
                    try pair.backward(fusedWith: layers[index], parameters: parameters.base, gradients: sliceGradients,
                                      input: layerInput + start * inputWidth, output: outputs[index].base + start * outputWidth,
                                      dOutput: dOutputs[index].base + start * outputWidth, dInput: dInput.map { $0 + start * inputWidth },
                                      rows: slices.rows, context: context)
                } else {
                    try layers[index].backward(
                        parameters: parameters.base, gradients: sliceGradients, input: layerInput + start * inputWidth,
                        output: outputs[index].base + start * outputWidth, dOutput: dOutputs[index].base + start * outputWidth,
                        dInput: dInput.map { $0 + start * inputWidth }, rows: slices.rows,
                        activationIsFused: index == layers.count - 1 ? lossFusesLastActivation : activationTakenOver[index], context: context)
                }
            }
            try afterLayer(index)
            if pair != nil { try afterLayer(first) }
            index = first - 1
        }
    }

    /// Forward in chunks of at most `maxBatchSize` rows, returning the output with the last activation applied
    /// (probabilities for a softmax model).
    public func predict(_ input: UnsafePointer<Float>, rows: Int, into result: UnsafeMutablePointer<Float>) throws {
        var start = 0
        while start < rows {
            let chunk = min(maxBatchSize, rows - start)
            let output = try forward(input + start * inputSize, rows: chunk)
            if lastActivation == .softmax { softmaxRows(output, rows: chunk, columns: outputSize) }
            (result + start * outputSize).update(from: output, count: chunk * outputSize)
            start += chunk
        }
    }
}
