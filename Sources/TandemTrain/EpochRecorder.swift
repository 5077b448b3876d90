import TandemCore

/// What the chief keeps of every epoch, whatever loop ran it — a replica's `Trainer.fit`, or a parameter-server
/// chief counting its workers' pushes: the progress line, the metrics record, TensorBoard scalars and the
/// checkpoint; then the summary. On every other replica (`isChief` false) it prints and writes nothing.
public final class EpochRecorder {
    public let progress: ProgressReporter
    /// The JSON Lines metrics file, on the chief when one is asked for (the stall inspector writes there too).
    public let metrics: MetricsWriter?
    private let tensorboard: TensorBoardWriter?
    private let checkpoints: CheckpointDirectory?
    private let isChief: Bool
    private let reportsAccuracy: Bool
    private let stepsPerEpoch: Int
    /// Per-step TensorBoard scalars every this many steps.
    private let stepInterval: Int

    /// `stepsPerEpoch` and `batchSize`: an epoch's steps and each step's rows (for the progress line and the
    /// global step of TensorBoard's scalars).
    public init(options: TrainingOptions, isChief: Bool, epochs: Int, stepsPerEpoch: Int, batchSize: Int, reportsAccuracy: Bool) throws {
        progress = ProgressReporter(style: isChief ? options.progress : .silent, epochs: epochs, stepsPerEpoch: stepsPerEpoch,
                                    batchSize: batchSize, reportsAccuracy: reportsAccuracy)
        metrics = isChief ? try options.metricsPath.map { try MetricsWriter(path: $0) } : nil
        tensorboard = isChief ? try options.tensorboardDirectory.map { try TensorBoardWriter(directory: $0) } : nil
        // Every replica checks the folder, so a bad one stops them alike; the chief alone writes there.
        checkpoints = try options.checkpointDirectory.map { try CheckpointDirectory(path: $0, keep: options.keepCheckpoints) }
        self.isChief = isChief
        self.reportsAccuracy = reportsAccuracy
        self.stepsPerEpoch = stepsPerEpoch
        stepInterval = max(options.tensorboardStepInterval, 1)
    }

    /// Whether `save` is asked for at all: a loop may skip building a checkpoint it would not write.
    public var savesCheckpoints: Bool { isChief && checkpoints != nil }

    /// Step `step` (0-based) of epoch `epoch`: TensorBoard's per-step scalars, every `tensorboardStepInterval` steps.
    public func step(_ step: Int, of epoch: Int, statistics: LossStatistics, learningRate: Double) {
        guard let tensorboard, (step + 1) % stepInterval == 0 else { return }
        let globalStep = epoch * stepsPerEpoch + step + 1
        tensorboard.scalar("batch/loss", statistics.meanLoss, step: globalStep)
        if reportsAccuracy { tensorboard.scalar("batch/accuracy", statistics.accuracy, step: globalStep) }
        tensorboard.scalar("batch/learning_rate", learningRate, step: globalStep)
    }

    /// The end of an epoch: its progress line, metrics record and TensorBoard scalars.
    public func epochEnded(_ result: EpochResult, learningRate: Double) throws {
        progress.endEpoch(result)
        try metrics?.write(epoch: result, reportsAccuracy: reportsAccuracy)
        guard let tensorboard else { return }
        let step = (result.epoch + 1) * stepsPerEpoch
        tensorboard.scalar("epoch/loss", result.train.meanLoss, step: step)
        if reportsAccuracy { tensorboard.scalar("epoch/accuracy", result.train.accuracy, step: step) }
        if let validation = result.validation {
            tensorboard.scalar("epoch/val_loss", validation.meanLoss, step: step)
            if reportsAccuracy { tensorboard.scalar("epoch/val_accuracy", validation.accuracy, step: step) }
        }
        if let test = result.test {
            tensorboard.scalar("epoch/test_loss", test.meanLoss, step: step)
            if reportsAccuracy { tensorboard.scalar("epoch/test_accuracy", test.accuracy, step: step) }
        }
        tensorboard.scalar("epoch/samples_per_sec", result.samplesPerSecond, step: step)
        tensorboard.scalar("epoch/learning_rate", learningRate, step: step)
        if let allreduce = result.allreduceSeconds { tensorboard.scalar("epoch/allreduce_us", allreduce * 1e6, step: step) }
        if let wait = result.stragglerWaitSeconds { tensorboard.scalar("epoch/straggler_wait_us", wait * 1e6, step: step) }
        tensorboard.flush()
    }

    /// Saves the checkpoint of the state after `epochs` epochs (built by `checkpoint` only when one is asked for).
    public func save(epochs: Int, _ checkpoint: () throws -> Checkpoint) throws {
        guard isChief, let checkpoints else { return }
        try checkpoints.save(checkpoint(), epoch: epochs)
    }

    /// The closing summary record.
    public func finish(_ summary: TrainingSummary) throws {
        try metrics?.write(summary: summary, reportsAccuracy: reportsAccuracy)
    }
}
