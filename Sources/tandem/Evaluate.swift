import ArgumentParser
import Foundation
import TandemCore
import TandemData
import TandemNN
import TandemTrain

struct Evaluate: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Report a checkpoint's loss and accuracy on the test data of its job config.",
        discussion: """
            Examples:
              tandem evaluate configs/fashion-mnist-mlp.json --checkpoint runs/mlp/epoch-0005.safetensors
              tandem evaluate --checkpoint runs/mlp/epoch-0005.safetensors   (uses the config stored in the checkpoint)
            """)

    @Argument(help: "Job config whose test data to use (default: the config stored in the checkpoint).")
    var config: String?

    @Option(help: "Checkpoint (.safetensors) written by tandem train.")
    var checkpoint: String

    @Option(help: "Folder with the data files (overrides data.dir).")
    var dataDir: String?

    @OptionGroup var compute: ComputeOptions

    func run() throws {
        _ = compute.apply()
        let loaded = try LoadedCheckpoint(path: checkpoint)
        let job = try config.map { try JobConfig.load(path: $0) } ?? loaded.storedConfig()
        let data = try DataSource.load(config: job, dataDirectoryOverride: dataDir)
        let evaluator = Evaluator(model: loaded.model, loss: try Loss(name: job.loss), scaling: loaded.scaling,
                                  targetWidth: data.train.targetWidth)
        let (examples, what) = data.test.map { ($0, "test") } ?? (data.train, "training")
        guard examples.featureCount == loaded.model.inputSize, examples.targetWidth == 1 || !evaluator.loss.fusesSoftmax else {
            throw TandemError(.badCheckpoint, "\(checkpoint): its model takes \(loaded.model.inputSize) features but the \(what) data has \(examples.featureCount)")
        }
        let statistics = try evaluator.evaluate(examples)
        var line = "\(what): loss \(fixed(statistics.meanLoss, 4))"
        if evaluator.loss.reportsAccuracy { line += "  accuracy \(fixed(statistics.accuracy, 4))" }
        print(line + "  (\(statistics.count) examples, \(checkpoint) after epoch \(loaded.epoch))")
    }
}

/// A checkpoint with the model it describes rebuilt and loaded.
struct LoadedCheckpoint {
    let path: String
    let checkpoint: Checkpoint
    let model: Sequential
    let scaling: FeatureScaling
    var epoch: Int { Int(checkpoint.metadata["epoch"] ?? "") ?? 0 }

    init(path: String, batchSize: Int = 256) throws {
        self.path = path
        checkpoint = try Checkpoint.read(path: path)
        model = try Sequential(spec: try TrainingState.modelSpec(in: checkpoint, path: path), seed: 0, maxBatchSize: batchSize)
        try TrainingState.restore(checkpoint, path: path, into: model, optimizer: nil)
        scaling = TrainingState.scaling(in: checkpoint, features: model.inputSize)
    }

    func storedConfig() throws -> JobConfig {
        guard let json = checkpoint.metadata["config"] else {
            throw TandemError(.badCheckpoint, "\(path): holds no job config; pass --config")
        }
        var config = try decodeJSON(JobConfig.self, from: Data(json.utf8), path: "\(path) (__metadata__.config)")
        try config.validate(path: "\(path) (__metadata__.config)")
        // Relative data paths in the stored config resolve against where the config was when training ran.
        config.sourcePath = checkpoint.metadata["config_path"]
        return config
    }
}
