import ArgumentParser
import Foundation
import TandemCore
import TandemTrain

struct Train: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Train the model a job config describes, then report test loss and accuracy.",
        discussion: """
            Flags override the config's training fields. Examples:
              tandem train configs/fashion-mnist-mlp.json
              tandem train configs/fashion-mnist-mlp.json --epochs 10 --checkpoint-dir runs/mlp --metrics runs/mlp.jsonl
              tandem train configs/fashion-mnist-mlp.json --checkpoint-dir runs/mlp --resume latest --epochs 10
            """)

    @Argument(help: "Job config (JSON): data, model, loss, optimizer, training.")
    var config: String

    @Option(help: "Epochs to train (overrides training.epochs).")
    var epochs: Int?

    @Option(help: "Global batch size (overrides training.batch_size).")
    var batchSize: Int?

    @Option(help: "Learning rate (overrides optimizer.learning_rate).")
    var learningRate: Float?

    @Option(help: "Seed for initialization and shuffling (overrides training.seed).")
    var seed: UInt64?

    @Option(help: "Folder with the data files (overrides data.dir).")
    var dataDir: String?

    @Option(help: "Save a checkpoint after every epoch in this folder.")
    var checkpointDir: String?

    @Option(help: "How many epoch checkpoints to keep.")
    var keep = 3

    @Option(help: "Continue from a checkpoint file, or 'latest' for the newest in --checkpoint-dir.")
    var resume: String?

    @Option(help: "Write per-epoch and summary metrics as JSON Lines to this file.")
    var metrics: String?

    @Option(help: "Progress output: auto (live line on a terminal, one line per epoch otherwise), live, lines, silent.")
    var progress: ProgressReporter.Style = .automatic

    @OptionGroup var compute: ComputeOptions

    func run() throws {
        let log = compute.apply()
        let job = try loadJob()
        let data = try DataSource.load(config: job, dataDirectoryOverride: dataDir)
        log.info("loaded \(data.trainRows.count) training, \(data.validationRows.count) validation, \(data.test?.count ?? 0) test examples")
        let trainer = try Trainer(config: job, data: data)
        if let checkpoint = try resumePath() {
            try trainer.restore(from: checkpoint)
            print("Resuming from \(checkpoint) after epoch \(trainer.completedEpochs)")
        }
        var options = TrainingOptions()
        options.checkpointDirectory = checkpointDir
        options.keepCheckpoints = keep
        options.metricsPath = metrics
        options.progress = progress
        let summary = try trainer.fit(options: options)
        report(summary, trainer: trainer)
    }

    private func loadJob() throws -> JobConfig {
        var job = try JobConfig.load(path: config)
        if let epochs { job.training.epochs = epochs }
        if let batchSize { job.training.batchSize = batchSize }
        if let learningRate { job.optimizer.learningRate = learningRate }
        if let seed { job.training.seed = seed }
        try job.validate(path: "command line")
        return job
    }

    private func resumePath() throws -> String? {
        guard let resume else { return nil }
        guard resume == "latest" else { return resume }
        guard let checkpointDir else { throw TandemError(.usage, "--resume latest needs --checkpoint-dir") }
        guard let newest = try CheckpointDirectory(path: checkpointDir).newest else {
            throw TandemError(.usage, "--resume latest: no epoch checkpoints in \(checkpointDir)")
        }
        return newest
    }

    private func report(_ summary: TrainingSummary, trainer: Trainer) {
        guard progress != .silent else { return }
        if let test = summary.test {
            var line = "Test: loss \(fixed(test.meanLoss, 4))"
            if trainer.loss.reportsAccuracy { line += "  accuracy \(fixed(test.accuracy, 4))" }
            print(line + "  (\(test.count) examples)")
        }
        print("Median \(fixed(summary.samplesPerSecond, 0)) samples/s  startup \(fixed(summary.startupSeconds, 2)) s  "
              + "peak RSS \(megabytes(summary.peakResidentBytes))  wall \(fixed(summary.wallSeconds, 2)) s")
    }
}
