import ArgumentParser
import Foundation
import Tandem

struct Inspect: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Show what a checkpoint or a job config holds.",
        discussion: """
            A checkpoint: its metadata and every tensor with shape and value statistics. A config: the model it builds (layers, parameter count) after checking every field.
            Examples:
              tandem inspect runs/mlp/epoch-0005.safetensors
              tandem inspect configs/fashion-mnist-tanh.json
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

    private func describe(_ model: Sequential) {
        var shape = "\(model.inputSize)"
        for (layer, output) in zip(model.layers, model.outputShapes) {
            shape += " → \(output.count == 1 ? String(output[0]) : "\(output)") \(layer.activation.rawValue)"
        }
        print("  model: \(shape)  (\(model.parameterCount) parameters, \(megabytes(model.parameterCount * 4)) as Float32)")
    }
}
