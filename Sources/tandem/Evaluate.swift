import ArgumentParser
import Foundation
import Tandem

struct Evaluate: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Report a checkpoint's loss and accuracy on the test data of its job config.",
        discussion: """
            With --watch, evaluate every checkpoint a running job writes into a folder, as it appears (TensorFlow's side-car evaluator; a cluster's evaluator task runs this). It stops after the job's last epoch, or with an error when no new checkpoint comes for --timeout seconds.
            Examples:
              tandem evaluate configs/fashion-mnist-mlp.json --checkpoint runs/mlp/epoch-0005.safetensors
              tandem evaluate --checkpoint runs/mlp/epoch-0005.safetensors   (uses the config stored in the checkpoint)
              tandem evaluate configs/fashion-mnist-mlp.json --watch runs/mlp --metrics runs/eval.jsonl
            """)

    @Argument(help: "Job config whose test data to use (default: the config stored in the checkpoint).")
    var config: String?

    @Option(help: "Checkpoint (.safetensors) written by tandem train.")
    var checkpoint: String?

    @Option(help: "Evaluate each new epoch checkpoint in this folder until the job's last epoch.")
    var watch: String?

    @Option(help: "With --watch: seconds to wait for a new checkpoint before giving up.")
    var timeout: Double = 600

    @Option(help: "Append one JSON line per evaluation to this file.")
    var metrics: String?

    @Option(help: "Folder with the data files (overrides data.dir).")
    var dataDir: String?

    @OptionGroup var compute: ComputeOptions

    func validate() throws {
        try validateWait(timeout, flag: "--timeout", minimum: 0.1)
    }

    func run() throws {
        _ = compute.apply()
        switch (checkpoint, watch) {
        case (let path?, nil):
            let metricsWriter = try metrics.map { try MetricsWriter(path: $0) }
            try evaluate(path, data: nil, metrics: metricsWriter)
        case (nil, let folder?):
            try watch(folder)
        default:
            throw TandemError(.usage, "give either --checkpoint FILE or --watch FOLDER")
        }
    }

    /// Evaluates one checkpoint; returns its epoch and the number of epochs its job asks for.
    @discardableResult
    private func evaluate(_ path: String, data cached: DataSource?, metrics: MetricsWriter?) throws -> (epoch: Int, of: Int, data: DataSource) {
        let loaded = try LoadedCheckpoint(path: path)
        let stored = try? loaded.storedConfig()
        let job = try config.map { try JobConfig.load(path: $0) } ?? loaded.storedConfig()
        let data = try cached ?? DataSource.load(config: job, dataDirectoryOverride: dataDir)
        let evaluator = Evaluator(model: loaded.model, loss: try Loss(name: job.loss), scaling: loaded.scaling,
                                  targetWidth: data.train.targetWidth)
        let (examples, what) = data.test.map { ($0, "test") } ?? (data.train, "training")
        guard examples.featureCount == loaded.model.inputSize, examples.targetWidth == 1 || !evaluator.loss.fusesSoftmax else {
            throw TandemError(.badCheckpoint, "\(path): its model takes \(loaded.model.inputSize) features but the \(what) data has \(examples.featureCount)")
        }
        let statistics = try evaluator.evaluate(examples)
        var line = "\(what): loss \(fixed(statistics.meanLoss, 4))"
        if evaluator.loss.reportsAccuracy { line += "  accuracy \(fixed(statistics.accuracy, 4))" }
        print(line + "  (\(statistics.count) examples, \(path) after epoch \(loaded.epoch))")
        fflush(nil)
        var record: [String: Any] = ["event": "evaluation", "epoch": loaded.epoch, "checkpoint": path, "\(what)_loss": statistics.meanLoss]
        if evaluator.loss.reportsAccuracy { record["\(what)_accuracy"] = statistics.accuracy }
        try metrics?.write(record)
        // The job's own epoch count (after its command-line overrides) is in the checkpoint.
        return (loaded.epoch, stored?.training.epochs ?? job.training.epochs, data)
    }

    private func watch(_ folder: String) throws {
        let metricsWriter = try metrics.map { try MetricsWriter(path: $0) }
        var evaluated = Set<String>()
        var data: DataSource?
        var lastNews = ProcessStatistics.now()
        while true {
            let fresh = CheckpointDirectory.checkpointNames(in: folder).filter { !evaluated.contains($0) }
            for name in fresh {
                evaluated.insert(name)
                let result = try evaluate(folder + "/" + name, data: data, metrics: metricsWriter)
                data = result.data
                lastNews = ProcessStatistics.now()
                if result.epoch >= result.of { return }
            }
            guard ProcessStatistics.now() - lastNews < timeout else {
                throw TandemError(.timeout, "\(folder): no new checkpoint for \(wholeSeconds(timeout)) s (evaluated \(evaluated.count)); is the training job running?")
            }
            Thread.sleep(forTimeInterval: 0.25)
        }
    }
}

/// A checkpoint with the model it describes rebuilt and loaded.
struct LoadedCheckpoint {
    let path: String
    let checkpoint: Checkpoint
    let model: Sequential
    let scaling: FeatureScaling
    /// The epochs the checkpoint holds (0 when it records none: a checkpoint from elsewhere).
    var epoch: Int { (try? TrainingState.counter("epoch", in: checkpoint, path: path)) ?? 0 }

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
