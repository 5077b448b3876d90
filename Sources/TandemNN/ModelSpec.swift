import TandemCore

/// The JSON description of a model: `{"input_size": 784, "layers": [{"units": 20, "activation": "relu"}, ...]}`, or
/// for images `{"input_shape": [28, 28, 1], "layers": [{"type": "conv2d", "filters": 32, "kernel_size": 3}, ...]}`
/// (NHWC, as Keras). It is stored in every checkpoint, so a checkpoint can be loaded without its config.
public struct ModelSpec: Codable, Sendable, Equatable {
    /// One layer, as a config writes it. `type` names the kind (dense when absent); each kind reads its own fields.
    public struct Layer: Codable, Sendable, Equatable {
        public var type: String?
        /// dense
        public var units: Int?
        /// dense, conv2d
        public var activation: String?
        /// conv2d
        public var filters: Int?
        /// conv2d (the window), pooling (`pool_size`): square windows and strides
        public var kernelSize: Int?
        public var poolSize: Int?
        public var strides: Int?
        /// "valid" (default) or "same"
        public var padding: String?
        /// dropout
        public var rate: Float?
        /// batch_normalization
        public var momentum: Float?
        public var epsilon: Float?
        public var synchronized: Bool?

        enum CodingKeys: String, CodingKey {
            case type, units, activation, filters, kernelSize = "kernel_size", poolSize = "pool_size", strides, padding
            case rate, momentum, epsilon, synchronized
        }

        public init(type: String, units: Int? = nil, activation: String? = nil, filters: Int? = nil, kernelSize: Int? = nil,
                    poolSize: Int? = nil, strides: Int? = nil, padding: String? = nil, rate: Float? = nil,
                    momentum: Float? = nil, epsilon: Float? = nil, synchronized: Bool? = nil) {
            self.type = type
            self.units = units
            self.activation = activation
            self.filters = filters
            self.kernelSize = kernelSize
            self.poolSize = poolSize
            self.strides = strides
            self.padding = padding
            self.rate = rate
            self.momentum = momentum
            self.epsilon = epsilon
            self.synchronized = synchronized
        }

        /// A dense layer.
        public init(units: Int, activation: Activation) {
            self.init(type: "dense", units: units, activation: activation.rawValue)
        }

        /// The layer's kind as tensor names spell it (`dense`, `conv2d`, ...).
        public var kind: String { (type ?? "dense").lowercased() }
    }

    /// One example's shape: [features] for flat data, [height, width, channels] for images.
    public var inputShape: [Int]
    public var layers: [Layer]

    enum CodingKeys: String, CodingKey { case inputSize = "input_size", inputShape = "input_shape", layers }

    public init(inputShape: [Int], layers: [Layer]) {
        self.inputShape = inputShape
        self.layers = layers
    }

    public init(inputSize: Int, layers: [Layer]) { self.init(inputShape: [inputSize], layers: layers) }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        layers = try container.decode([Layer].self, forKey: .layers)
        let size = try container.decodeIfPresent(Int.self, forKey: .inputSize)
        let shape = try container.decodeIfPresent([Int].self, forKey: .inputShape)
        switch (size, shape) {
        case let (size?, nil): inputShape = [size]
        case let (nil, shape?): inputShape = shape
        case (_?, _?):
            throw DecodingError.dataCorruptedError(forKey: .inputShape, in: container, debugDescription: "give input_size or input_shape, not both")
        case (nil, nil):
            throw DecodingError.keyNotFound(CodingKeys.inputSize, .init(codingPath: container.codingPath, debugDescription: "input_size (or input_shape) is missing"))
        }
    }

    /// A flat input is written as `input_size`, as before images existed, so older checkpoints and fingerprints match.
    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        if inputShape.count == 1 {
            try container.encode(inputShape[0], forKey: .inputSize)
        } else {
            try container.encode(inputShape, forKey: .inputShape)
        }
        try container.encode(layers, forKey: .layers)
    }

    /// Features of one example (the product of `inputShape`).
    public var inputSize: Int { SaturatingSize.product(inputShape) }

    /// Checks what JSON decoding cannot — sizes, layer types and their fields, activation names, softmax placement —
    /// and returns the layers the description names (unbuilt: `Sequential` places them).
    public func validated() throws -> [any TandemNN.Layer] {
        guard (1...3).contains(inputShape.count), inputShape.allSatisfy({ $0 > 0 }), inputSize <= Self.maximumWidth else {
            let field = inputShape.count == 1 ? "model.input_size" : "model.input_shape"
            throw TandemError(.badConfig, "\(field) must be 1 to 3 positive sizes (features, or height, width, channels) of at most \(Self.maximumWidth) values in all, found \(inputShape)")
        }
        guard !layers.isEmpty else { throw TandemError(.badConfig, "model.layers is empty: a model needs at least one layer") }
        return try layers.enumerated().map { index, layer in
            let made = try layer.makeLayer(index: index)
            if made.activation == .softmax && index != layers.count - 1 {
                throw TandemError(.badConfig, "model.layers[\(index)].activation: softmax is only supported on the last layer")
            }
            return made
        }
    }

    /// Largest input (2^24 values: a 4096 × 4096 image), largest output of any layer per example, and largest
    /// dense width; with them no single layer's size overflows, and `checkFitsInMemory` bounds the whole model.
    public static let maximumWidth = 1 << 24, maximumUnits = 1 << 20

    /// The name of layer `index`'s tensors (`dense_0/kernel`, `conv2d_1/bias`): checkpoints store them so.
    public static func layerName(_ index: Int, kind: String = "dense") -> String { "\(kind)_\(index)" }

    /// The model's layers placed on its input: shapes, sizes, tensors.
    public func placement() throws -> Placement { try Placement(layers: validated(), inputShape: inputShape) }

    /// Values the model outputs per example (its last layer's output size).
    public var outputSize: Int {
        get throws { try placement().outputShapes.last.map { SaturatingSize.product($0) } ?? 0 }
    }

    /// Every tensor of the model (trainable parameters, then statistics) in arena order, by name and shape: what a
    /// checkpoint of this model holds.
    public func parameterTensors() throws -> [(name: String, shape: [Int])] {
        try placement().views.map { ($0.name, $0.shape) }
    }

    /// Throws `.resources` naming the model when it cannot fit in this machine's memory; call before allocating.
    /// `optimizerSlots`: more arenas of the parameters' size (optimizer state, reduction groups' gradients).
    public func checkFitsInMemory(maxBatchSize: Int, optimizerSlots: Int) throws {
        try placement().checkFitsInMemory(maxBatchSize: maxBatchSize, optimizerSlots: optimizerSlots)
    }

    /// Layers placed on an input: each one built on its predecessor's output shape, trainable parameters laid out
    /// first and statistics after them (two passes: the first counts the trainable parameters).
    public struct Placement {
        public let inputShape: [Int]
        public let outputShapes: [[Int]]
        public let trainableCount: Int
        public let parameterCount: Int
        public let views: [ArenaView]

        public init(layers: [any TandemNN.Layer], inputShape: [Int]) throws {
            var shapes: [[Int]] = []
            var layout = ArenaLayout(statisticsBase: 0)
            for pass in 0..<2 {
                shapes = []
                layout = ArenaLayout(statisticsBase: layout.trainableCount)
                var shape = inputShape
                for (index, layer) in layers.enumerated() {
                    let name = ModelSpec.layerName(index, kind: layer.specification.kind)
                    shape = try layer.build(name: name, inputShape: shape, layout: &layout)
                    if pass == 0, SaturatingSize.product(shape) > ModelSpec.maximumWidth {
                        throw TandemError(.badConfig, "\(name): its output \(shape) has more than \(ModelSpec.maximumWidth) values per example")
                    }
                    shapes.append(shape)
                }
            }
            self.inputShape = inputShape
            outputShapes = shapes
            trainableCount = layout.trainableCount
            parameterCount = SaturatingSize.sum([layout.trainableCount, layout.statisticsCount])
            views = layers.flatMap(\.parameterViews).sorted { $0.offset < $1.offset }
        }

        /// Float32 values a replica allocates: parameters, gradients, `optimizerSlots` more arenas of the
        /// parameters' size, and two activation buffers per layer (plus one for what a layer keeps) per row.
        public func floatsNeeded(maxBatchSize: Int, optimizerSlots: Int) -> Int {
            let activations = SaturatingSize.product(3, maxBatchSize, SaturatingSize.sum(outputShapes.map { SaturatingSize.product($0) }))
            return SaturatingSize.sum([SaturatingSize.product(parameterCount, 2 + optimizerSlots), activations])
        }

        public func checkFitsInMemory(maxBatchSize: Int, optimizerSlots: Int) throws {
            let widths = outputShapes.map { $0.count == 1 ? String($0[0]) : $0.map(String.init).joined(separator: "×") }
            let input = inputShape.map(String.init).joined(separator: "×")
            let shape = "\(input) → " + (widths.count > 6 ? widths.prefix(5).joined(separator: " → ") + " → … (\(widths.count) layers)" : widths.joined(separator: " → "))
            try MemoryBudget.require(
                floats: floatsNeeded(maxBatchSize: maxBatchSize, optimizerSlots: optimizerSlots),
                for: "model.layers: the model \(shape) (\(parameterCount == Int.max ? "too many" : String(parameterCount)) parameters) with its gradients, optimizer state, reduction-group gradients and activations for batches of \(maxBatchSize)")
        }
    }
}
