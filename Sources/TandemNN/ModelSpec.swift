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

    /// Checks what JSON decoding cannot: sizes, layer types, activation names and softmax placement.
    public func validated() throws -> [(units: Int, activation: Activation)] {
        guard inputSize > 0 else { throw TandemError(.badConfig, "model.input_size must be positive, found \(inputSize)") }
        guard !layers.isEmpty else { throw TandemError(.badConfig, "model.layers is empty: a model needs at least one layer") }
        return try layers.enumerated().map { index, layer in
            if let type = layer.type, type.lowercased() != "dense" {
                throw TandemError(.badConfig, "model.layers[\(index)].type: unknown layer type \"\(type)\" (expected \"dense\")")
            }
            guard layer.units > 0, layer.units <= 1 << 20 else {
                throw TandemError(.badConfig, "model.layers[\(index)].units must be between 1 and 1048576, found \(layer.units)")
            }
            let activation: Activation
            do { activation = try Activation(name: layer.activation ?? "identity") } catch let error as TandemError {
                throw TandemError(.badConfig, "model.layers[\(index)].activation: \(error.message)")
            }
            if activation == .softmax && index != layers.count - 1 {
                throw TandemError(.badConfig, "model.layers[\(index)].activation: softmax is only supported on the last layer")
            }
            return (layer.units, activation)
        }
    }

    public var outputSize: Int { layers.last?.units ?? 0 }
}
