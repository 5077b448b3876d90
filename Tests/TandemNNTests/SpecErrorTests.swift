import Foundation
import Testing
import TandemCore
import TandemNN

/// Bad model, optimizer and loss descriptions fail with a TandemError naming the field and the bad value.
@Suite struct SpecErrorTests {
    static func expectError(_ code: TandemError.Code = .badConfig, mentioning fragments: [String],
                            sourceLocation: SourceLocation = #_sourceLocation, _ body: () throws -> Void) {
        do {
            try body()
            Issue.record("expected a TandemError mentioning \(fragments)", sourceLocation: sourceLocation)
        } catch let error as TandemError {
            #expect(error.code == code, sourceLocation: sourceLocation)
            for fragment in fragments {
                #expect(error.message.contains(fragment), "\"\(error.message)\" does not mention \(fragment)", sourceLocation: sourceLocation)
            }
        } catch {
            Issue.record("expected a TandemError, got \(error)", sourceLocation: sourceLocation)
        }
    }

    static func layer(_ units: Int, _ activation: String?, type: String? = nil) throws -> ModelSpec.Layer {
        var json = "{\"units\": \(units)"
        if let activation { json += ", \"activation\": \"\(activation)\"" }
        if let type { json += ", \"type\": \"\(type)\"" }
        return try JSONDecoder().decode(ModelSpec.Layer.self, from: Data((json + "}").utf8))
    }

    @Test func unknownActivation() throws {
        let model = ModelSpec(inputSize: 4, layers: [try Self.layer(3, "relu"), try Self.layer(2, "swish")])
        Self.expectError(mentioning: ["model.layers[1].activation", "\"swish\""]) { _ = try model.validated() }
        Self.expectError(mentioning: ["model.layers[1].activation", "\"swish\""]) {
            _ = try Sequential(spec: model, seed: 0, maxBatchSize: 1)
        }
    }

    @Test func otherBadModels() throws {
        Self.expectError(mentioning: ["model.layers[0].type", "\"lstm\"", "\"conv2d\", \"max_pool2d\""]) {
            _ = try ModelSpec(inputSize: 4, layers: [Self.layer(3, "relu", type: "lstm")]).validated()
        }
        Self.expectError(mentioning: ["model.layers[0].units", "does not apply to a conv2d layer"]) {
            _ = try ModelSpec(inputSize: 4, layers: [Self.layer(3, "relu", type: "conv2d")]).validated()
        }
        Self.expectError(mentioning: ["model.layers[0].units", "0"]) {
            _ = try ModelSpec(inputSize: 4, layers: [Self.layer(0, "relu")]).validated()
        }
        Self.expectError(mentioning: ["model.layers[0].activation", "softmax"]) {
            _ = try ModelSpec(inputSize: 4, layers: [Self.layer(3, "softmax"), Self.layer(2, "relu")]).validated()
        }
        Self.expectError(mentioning: ["model.input_size", "-1"]) {
            _ = try ModelSpec(inputSize: -1, layers: [Self.layer(3, "relu")]).validated()
        }
        Self.expectError(mentioning: ["model.layers"]) { _ = try ModelSpec(inputSize: 4, layers: []).validated() }
    }

    @Test func validModelsDecodeAndValidate() throws {
        let json = #"{"input_size": 4, "layers": [{"type": "Dense", "units": 3, "activation": "ReLU"}, {"units": 2}]}"#
        let model = try JSONDecoder().decode(ModelSpec.self, from: Data(json.utf8))
        let layers = try model.validated()
        #expect(layers.map(\.specification.units) == [3, 2])
        #expect(layers.map(\.activation) == [.relu, .identity])
        #expect(try model.outputSize == 2)
        let roundTrip = try JSONDecoder().decode(ModelSpec.self, from: JSONEncoder().encode(model))
        #expect(roundTrip == model)
    }

    @Test func unknownOptimizer() {
        Self.expectError(mentioning: ["optimizer.name", "\"rmsprop\""]) {
            _ = try OptimizerSpec(name: "rmsprop", learningRate: 0.1).makeOptimizer(parameterCount: 1)
        }
    }

    @Test func badOptimizerSettings() {
        Self.expectError(mentioning: ["optimizer.learning_rate", "0"]) {
            _ = try OptimizerSpec(name: "sgd", learningRate: 0).makeOptimizer(parameterCount: 1)
        }
        Self.expectError(mentioning: ["optimizer.learning_rate", "nan"]) {
            _ = try OptimizerSpec(name: "adam", learningRate: .nan).makeOptimizer(parameterCount: 1)
        }
        Self.expectError(mentioning: ["optimizer.momentum", "1"]) {
            _ = try OptimizerSpec(name: "sgd", learningRate: 0.1, momentum: 1).makeOptimizer(parameterCount: 1)
        }
        Self.expectError(mentioning: ["optimizer.decay", "-0.5"]) {
            _ = try OptimizerSpec(name: "sgd", learningRate: 0.1, decay: -0.5).makeOptimizer(parameterCount: 1)
        }
    }

    @Test func lossNames() throws {
        #expect(try Loss(name: "MSE") == .meanSquaredError)
        #expect(try Loss(name: "mean_squared_error") == .meanSquaredError)
        #expect(try Loss(name: "crossentropy") == .sparseCategoricalCrossentropy)
        #expect(try Loss(name: "sparse_categorical_crossentropy") == .sparseCategoricalCrossentropy)
        #expect(Loss.sparseCategoricalCrossentropy.fusesSoftmax && Loss.sparseCategoricalCrossentropy.reportsAccuracy)
        #expect(!Loss.meanSquaredError.fusesSoftmax && !Loss.meanSquaredError.reportsAccuracy)
        Self.expectError(mentioning: ["loss", "\"hinge\""]) { _ = try Loss(name: "hinge") }
    }
}
