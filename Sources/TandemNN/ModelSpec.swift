import TandemCore

/// The JSON description of a model: `{"input_size": 784, "layers": [{"units": 20, "activation": "relu"}, ...]}`.
/// It is stored in every checkpoint, so a checkpoint can be loaded without its config.
public struct ModelSpec: Codable, Sendable, Equatable {
    public struct Layer: Codable, Sendable, Equatable {
        public var type: String?
        public var units: Int
        public var activation: String?

        public init(units: Int, activation: Activation) {
            type = "dense"
            self.units = units
            self.activation = activation.rawValue
        }
    }

    public var inputSize: Int
    public var layers: [Layer]

    enum CodingKeys: String, CodingKey { case inputSize = "input_size", layers }

    public init(inputSize: Int, layers: [Layer]) {
        self.inputSize = inputSize
        self.layers = layers
    }

    /// Checks what JSON decoding cannot — sizes, layer types, activation names, softmax placement — and returns
    /// the layers the description names (unbuilt: `Sequential` places them).
    public func validated() throws -> [any TandemNN.Layer] {
        guard inputSize > 0, inputSize <= Self.maximumWidth else {
            throw TandemError(.badConfig, "model.input_size must be between 1 and \(Self.maximumWidth), found \(inputSize)")
        }
        guard !layers.isEmpty else { throw TandemError(.badConfig, "model.layers is empty: a model needs at least one layer") }
        return try layers.enumerated().map { index, layer in
            guard layer.units > 0, layer.units <= Self.maximumUnits else {
                throw TandemError(.badConfig, "model.layers[\(index)].units must be between 1 and \(Self.maximumUnits), found \(layer.units)")
            }
            let made = try layer.makeLayer(index: index)
            if made.activation == .softmax && index != layers.count - 1 {
                throw TandemError(.badConfig, "model.layers[\(index)].activation: softmax is only supported on the last layer")
            }
            return made
        }
    }

    public var outputSize: Int { layers.last?.units ?? 0 }

    /// Largest `input_size` (2^24 features: a 4096 × 4096 image) and largest layer width; with them no single
    /// layer's size overflows, and `floatsNeeded` bounds the whole model.
    public static let maximumWidth = 1 << 24, maximumUnits = 1 << 20

    /// The name of layer `index`'s tensors (`dense_0/kernel`, `dense_0/bias`): checkpoints store them so.
    public static func layerName(_ index: Int) -> String { "dense_\(index)" }

    /// Every parameter tensor in arena order, by name and shape: what a checkpoint of this model holds.
    public var parameterTensors: [(name: String, shape: [Int])] {
        var inputs = inputSize
        return layers.enumerated().flatMap { index, layer -> [(name: String, shape: [Int])] in
            defer { inputs = layer.units }
            return [(Self.layerName(index) + "/kernel", [inputs, layer.units]), (Self.layerName(index) + "/bias", [layer.units])]
        }
    }

    /// Parameters (saturating at `Int.max`, to be refused by `MemoryBudget`).
    public var parameterCount: Int { SaturatingSize.sum(parameterTensors.map { SaturatingSize.product($0.shape) }) }

    /// Float32 values a replica allocates for this model: parameters, gradients, `optimizerSlots` more arenas of the
    /// parameters' size (optimizer state, reduction groups' gradients), and two activation buffers per layer for
    /// batches of `maxBatchSize` rows.
    public func floatsNeeded(maxBatchSize: Int, optimizerSlots: Int) -> Int {
        let activations = SaturatingSize.product(2, maxBatchSize, SaturatingSize.sum(layers.map(\.units)))
        return SaturatingSize.sum([SaturatingSize.product(parameterCount, 2 + optimizerSlots), activations])
    }

    /// Throws `.resources` naming the model when it cannot fit in this machine's memory; call before allocating.
    public func checkFitsInMemory(maxBatchSize: Int, optimizerSlots: Int) throws {
        let widths = layers.map { String($0.units) }
        let shape = "\(inputSize) → " + (widths.count > 6 ? widths.prefix(5).joined(separator: " → ") + " → … (\(widths.count) layers)" : widths.joined(separator: " → "))
        try MemoryBudget.require(
            floats: floatsNeeded(maxBatchSize: maxBatchSize, optimizerSlots: optimizerSlots),
            for: "model.layers: the model \(shape) (\(parameterCount == Int.max ? "too many" : String(parameterCount)) parameters) with its gradients, optimizer state, reduction-group gradients and activations for batches of \(maxBatchSize)")
    }
}
