import ArgumentParser
import Foundation
import Tandem

struct Inspect: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Show what a checkpoint or a job config holds.",
        discussion: """
            A checkpoint: its metadata, its model layer by layer, and every tensor with shape and value statistics. A config: the model it builds, each layer's output shape and parameter count (as Keras's summary()), after checking every field.
            Examples:
              tandem inspect runs/mlp/epoch-0005.safetensors
              tandem inspect configs/fashion-mnist-tanh.json
              tandem inspect configs/fashion-mnist-cnn.json
            """)

    @Argument(help: "A .safetensors checkpoint or a .json job config.")
    var file: String

    func run() throws {
        if file.lowercased().hasSuffix(".json") {
            try inspectConfig()
        } else {
            try inspectCheckpoint()
        }
    }

    private func inspectConfig() throws {
        let config = try JobConfig.load(path: file)
        let model = try Sequential(spec: config.model, seed: config.seed, maxBatchSize: 1)
        print("\(file): \(config.name ?? "unnamed job")")
        describe(model)
        print("loss \(config.loss), optimizer \(config.optimizer.name) learning rate \(config.optimizer.learningRate)")
        print("batch \(config.training.batchSize), \(config.training.epochs) epochs, seed \(config.seed), data \(config.data.format)")
    }

    private func inspectCheckpoint() throws {
        let checkpoint = try Checkpoint.read(path: file)
        print("\(file)")
        for key in checkpoint.metadata.keys.sorted() where !["config", "model"].contains(key) {
            print("  \(key): \(checkpoint.metadata[key]!)")
        }
        if let spec = try? TrainingState.modelSpec(in: checkpoint, path: file),
           let model = try? Sequential(spec: spec, seed: 0, maxBatchSize: 1) {
            describe(model)
        }
        let nameWidth = checkpoint.entries.map(\.name.count).max() ?? 0
        for entry in checkpoint.entries {
            let values = entry.values
            let mean = values.reduce(0, +) / Float(max(values.count, 1))
            let variance = values.reduce(0) { $0 + ($1 - mean) * ($1 - mean) } / Float(max(values.count, 1))
            let name = entry.name.padding(toLength: nameWidth, withPad: " ", startingAt: 0)
            let shape = "[" + entry.shape.map(String.init).joined(separator: ", ") + "]"
            print("  \(name)  F32 \(shape.padding(toLength: 12, withPad: " ", startingAt: 0))  mean \(fixed(Double(mean), 5))  "
                  + "std \(fixed(Double(variance.squareRoot()), 5))  min \(fixed(Double(values.min() ?? 0), 5))  max \(fixed(Double(values.max() ?? 0), 5))")
        }
    }

    /// One line per layer with its output shape and parameter count, as Keras's `summary()`.
    private func describe(_ model: Sequential) {
        let rows = zip(model.layers.indices, zip(model.layers, model.outputShapes)).map { index, pair in
            let (layer, output) = pair
            let kind = String(describing: type(of: layer))
            let name = ModelSpec.layerName(index, kind: layer.specification.kind)
            let activation = layer.activation == .identity ? "" : ", \(layer.activation.rawValue)"
            return ("\(name) (\(kind)\(activation))", "(" + output.map(String.init).joined(separator: ", ") + ")", layer.parameterCount)
        }
        let nameWidth = max(rows.map(\.0.count).max() ?? 0, 12), shapeWidth = max(rows.map(\.1.count).max() ?? 0, 12)
        print("  " + "Layer (type)".padding(toLength: nameWidth, withPad: " ", startingAt: 0) + "  "
              + "Output shape".padding(toLength: shapeWidth, withPad: " ", startingAt: 0) + "  Param #")
        print("  " + "input".padding(toLength: nameWidth, withPad: " ", startingAt: 0) + "  "
              + ("(" + model.inputShape.map(String.init).joined(separator: ", ") + ")").padding(toLength: shapeWidth, withPad: " ", startingAt: 0))
        for (name, shape, count) in rows {
            print("  " + name.padding(toLength: nameWidth, withPad: " ", startingAt: 0) + "  "
                  + shape.padding(toLength: shapeWidth, withPad: " ", startingAt: 0) + "  " + String(repeating: " ", count: max(0, 7 - String(count).count)) + String(count))
        }
        let statistics = model.parameterCount - model.trainableCount
        print("  Total params: \(model.parameterCount) (\(megabytes(model.parameterCount * 4)) as Float32)"
              + (statistics > 0 ? ", trainable \(model.trainableCount), statistics \(statistics)" : ""))
        if !model.fusedPairs.isEmpty {
            func name(_ index: Int) -> String { ModelSpec.layerName(index, kind: model.layers[index].specification.kind) }
            print("  Runs as one pass: " + model.fusedPairs.map { "\(name($0)) + \(name($0 + 1))" }.joined(separator: ", ")
                  + " (the first layer's output is never stored)")
        }
    }
}
