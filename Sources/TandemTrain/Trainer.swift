import Foundation
import TandemCollectives
import TandemCore
import TandemData
import TandemNN

/// How a `fit` runs, beyond what the job config says: the CLI's flags.
public struct TrainingOptions: Sendable {
    /// Where to save one checkpoint per epoch (nil: no checkpoints) and how many to keep.
    public var checkpointDirectory: String?
    public var keepCheckpoints = 3
    /// JSON Lines metrics file (written by rank 0 only).
    public var metricsPath: String?
    public var progress: ProgressReporter.Style = .automatic
    /// TensorBoard event files (rank 0) and a Chrome-trace step timeline of every replica (gathered to rank 0).
    public var tensorboardDirectory: String?
    public var timelinePath: String?
    /// Per-step TensorBoard scalars every this many steps (epoch scalars are always written).
    public var tensorboardStepInterval = 10

    public init() {}
}

/// What one `fit` measured, as reported in the metrics summary and the closing line.
public struct TrainingSummary: Sendable {
    public var epochs: [EpochResult] = []
    public var test: LossStatistics?
    public var startupSeconds = 0.0
    public var wallSeconds = 0.0
    public var peakResidentBytes = 0

    public init() {}

    /// Median epoch throughput (epoch times are noisy on shared machines; the median is the stable figure).
    public var samplesPerSecond: Double {
        let rates = epochs.map(\.samplesPerSecond).sorted()
        return rates.isEmpty ? 0 : rates[rates.count / 2]
    }
}

public struct EpochResult: Sendable {
    public var epoch: Int
    public var train: LossStatistics
    public var validation: LossStatistics?
    public var seconds: Double
    /// Median time of one step's gradient all-reduce itself: the time of the replica that reached it last, which
    /// waited for nobody. nil on one replica.
    public var allreduceSeconds: Double?
    /// Median time rank 0 spent in the all-reduce waiting for the last replica to reach it (uneven compute, not
    /// communication; Horovod's timeline separates the two the same way).
    public var stragglerWaitSeconds: Double?
    /// The test set after the epoch, where a strategy evaluates it every epoch (the parameter-server chief).
    public var test: LossStatistics?
    /// In an asynchronous job: the pushes counted by the epoch's end, over every worker (they overshoot an
    /// epoch's steps by what arrived while the chief looked).
    public var pushes: Int?
    public var samplesPerSecond: Double { seconds > 0 ? Double(train.count) / seconds : 0 }

    public init(epoch: Int, train: LossStatistics, validation: LossStatistics?, seconds: Double) {
        self.epoch = epoch
        self.train = train
        self.validation = validation
        self.seconds = seconds
    }
}

/// One replica's training loop. A step is: compute gradients on this replica's shard → `communicator` sums them
/// (with the loss and hit count riding in the gradient arena's tail) → every replica applies the same update.
/// With `LocalCommunicator` that is plain single-process training; the strategies only swap the communicator —
/// or, in an asynchronous job, the whole update (`AsynchronousRole`): a worker's gradients go out and its
/// parameters come in; the chief's epochs are its workers' pushes.
public final class Trainer {
    public let config: JobConfig
    public let data: DataSource
    public let communicator: Communicator
    public let model: Sequential
    public let optimizer: Optimizer
    public let loss: Loss
    public let pipeline: BatchPipeline
    public private(set) var completedEpochs = 0
    /// For a worker of an asynchronous strategy: where its gradients go and its parameters come from (nil: the
    /// replicas all-reduce and each applies the optimizer). Such a worker trains until the job ends it.
    public let asynchronousUpdate: AsynchronousUpdate?
    /// For the chief of an asynchronous strategy: the workers' epochs it waits for, computing no steps itself.
    public let asynchronousCoordinator: AsynchronousCoordinator?
    /// Whether the asynchronous job has ended (the worker stops at once, mid-epoch).
    private var jobEnded = false
    /// Rows whose gradients one update sums: the global batch, or an asynchronous worker's own batch.
    private let rowsPerUpdate: Int
    /// Gradient buckets (PyTorch DDP style): when set, the gradients are all-reduced in buckets of at least this
    /// many floats, each started as soon as backward has finished its layers, overlapping communication with the
    /// rest of backward. nil: one fused all-reduce of the whole arena after backward.
    public var gradientBucketFloats: Int? {
        didSet { bucketAfterLayer = Self.planBuckets(model: model, minimumFloats: gradientBucketFloats) }
    }
    /// bucketAfterLayer[l]: the arena range to start reducing once layer l's backward is done.
    private var bucketAfterLayer: [(offset: Int, count: Int)?] = []
    /// With reduction groups (see JobConfig): the reducer that knows how many this replica computes per step,
    /// keeps each group's gradient and sums them in the fixed tree.
    private let groupReducer: GradientReducer?
    /// With reduction groups and a layer that synchronizes replicas: this replica's groups go through the layers
    /// together (see `LockstepGroups`).
    private let groupsRunInLockstep: Bool
    /// Set by `fit` when a timeline is asked for; nil costs nothing.
    private var timeline: Timeline?

    private let lossFusesLastActivation: Bool
    /// The replicas synchronized layers sum with (nil on one replica).
    private let replicaSum: (any ReplicaSum)?
    private let evaluator: Evaluator
    /// Per-step all-reduce durations of the current epoch, allocated once.
    private let allreduceTimes: UnsafeMutableBufferPointer<Double>

    /// One replica's trainer for `config`'s job on `data`. `startingFrom`: a model of the same layers whose
    /// parameters to start from (a model built and compiled in code) instead of the config's seed.
    /// `asynchronous`: this process's part in an asynchronous strategy — a worker, each step of
    /// `training.batch_size` rows its own update, or the chief, whose epochs are `training.batch_size`-row pushes
    /// (`communicator` then stays a `LocalCommunicator`).
    public init(config: JobConfig, data: DataSource, communicator: Communicator = LocalCommunicator(), startingFrom start: Sequential? = nil,
                asynchronous: AsynchronousRole? = nil) throws {
        self.config = config
        self.data = data
        self.communicator = communicator
        switch asynchronous {
        case .worker(let update)?: (asynchronousUpdate, asynchronousCoordinator) = (update, nil)
        case .coordinator(let coordinator)?: (asynchronousUpdate, asynchronousCoordinator) = (nil, coordinator)
        case nil: (asynchronousUpdate, asynchronousCoordinator) = (nil, nil)
        }
        loss = try Loss(name: config.loss)
        if asynchronous != nil, communicator.size > 1 || config.training.reductionGroups != nil {
            throw TandemError(.usage, "an asynchronous worker or chief trains alone: it takes neither replicas nor training.reduction_groups")
        }
        // An asynchronous worker's rows are its slice of every `workerCount` batches, as a replica's of a global batch;
        // the chief's epoch is as many pushes as batches of `training.batch_size` rows.
        let (shards, shard) = asynchronousUpdate.map { ($0.workerCount, $0.workerIndex) } ?? (communicator.size, communicator.rank)
        let globalBatch = config.training.batchSize * (asynchronousUpdate?.workerCount ?? 1)
        pipeline = try BatchPipeline(
            examples: data.train, rows: data.trainRows, scaling: data.scaling, globalBatchSize: globalBatch,
            shard: (shards, shard), seed: config.seed, prefetches: config.data.prefetch ?? true,
            maxSteps: config.training.stepsPerEpoch)
        rowsPerUpdate = asynchronous == nil ? globalBatch : config.training.batchSize
        model = try Sequential(spec: config.model, seed: config.seed, maxBatchSize: pipeline.perShardBatchSize)
        if let start {
            guard start.spec == model.spec else {
                throw TandemError(.usage, "the model to start from (\(start.spec.layers.count) layers, \(start.parameterCount) parameters) is not the job's model (\(model.parameterCount) parameters)")
            }
            model.parameters.copy(from: start.parameters)
        }
        optimizer = try config.optimizer.makeOptimizer(parameterCount: model.parameterCount, trainableCount: model.trainableCount)
        if model.lastActivation == .softmax && !loss.fusesSoftmax {
            throw TandemError(.badConfig, "\(config.sourcePath ?? "config"): a softmax output layer needs loss sparse_categorical_crossentropy, not \(loss.rawValue)")
        }
        lossFusesLastActivation = loss.fuses(lastActivation: model.lastActivation)
        if let groups = config.training.reductionGroups {
            guard groups % communicator.size == 0 else {
                throw TandemError(.badConfig, "training.reduction_groups \(groups) is not a multiple of the \(communicator.size) replicas")
            }
            // With a synchronized layer the groups run in lockstep, where a layer that keeps its own batch statistics
            // from forward for backward would see only the last group's.
            if model.synchronizesReplicas,
               let alone = model.layers.firstIndex(where: { $0 is BatchNormalization && !$0.synchronizesReplicas }) {
                throw TandemError(.badConfig, "\(config.sourcePath ?? "config"): model.layers[\(alone)]: with training.reduction_groups and synchronized batch normalization elsewhere, every batch_normalization layer must be synchronized")
            }
            groupReducer = try GradientReducer(communicator: communicator, parameters: model.parameters, gradients: model.gradients,
                                               reductionGroups: groups)
        } else {
            groupReducer = nil
        }
        groupsRunInLockstep = groupReducer != nil && model.synchronizesReplicas
        allreduceTimes = .allocate(capacity: pipeline.stepsPerEpoch)
        replicaSum = communicator.size > 1 ? communicator : nil
        evaluator = Evaluator(model: model, loss: loss, scaling: data.scaling, targetWidth: data.train.targetWidth)
    }

    deinit { allreduceTimes.deallocate() }

    /// Continues from a checkpoint: parameters, optimizer state, and the number of epochs already done.
    public func restore(from path: String) throws {
        completedEpochs = try TrainingState.restore(try Checkpoint.read(path: path), path: path, into: model, optimizer: optimizer)
        guard completedEpochs < config.training.epochs else {
            throw TandemError(.usage, "\(path) already holds \(completedEpochs) epochs and the job asks for \(config.training.epochs): raise --epochs to train further")
        }
    }

    /// Makes every replica start identical: every replica's fingerprint must match rank 0's; then rank 0's
    /// parameters, optimizer state and counters are broadcast, and a checksum of each replica's state is compared
    /// across all of them. Call before the first step (after any restore).
    /// In an asynchronous job a worker instead joins it and receives the parameters to start from; the chief
    /// opens it from its own.
    public func synchronizeReplicas() throws {
        if let asynchronousUpdate {
            jobEnded = try !asynchronousUpdate.start(model: model, data: data)
            return
        }
        if let asynchronousCoordinator {
            try asynchronousCoordinator.open(model: model, optimizer: optimizer, data: data, completedEpochs: completedEpochs,
                                             stepsPerEpoch: pipeline.stepsPerEpoch)
            return
        }
        guard communicator.size > 1 else { return }
        try checkAgreement()
        try communicator.broadcast(model.parameters.base, count: model.parameterCount, root: 0)
        for (_, arena) in optimizer.state {
            try communicator.broadcast(arena.base, count: model.parameterCount, root: 0)
        }
        // Counters go as exact integers (rank 0's entry of an all-gather), not as floats.
        let counters = try communicator.allgather(withUnsafeBytes(of: (Int64(optimizer.iterations), Int64(completedEpochs))) { Array($0) })[0]
        let (iterations, epochs) = counters.withUnsafeBytes { $0.loadUnaligned(as: (Int64, Int64).self) }
        optimizer.iterations = Int(iterations)
        completedEpochs = Int(epochs)

        try communicator.requireSameBits(in: [model.parameters] + optimizer.state.map(\.1), after: "the initial broadcast")
    }

    /// Walks the layers from the last (whose backward finishes first), closing a bucket once it holds
    /// `minimumFloats` or the first layer is reached. The first bucket includes the loss/hit-count tail.
    static func planBuckets(model: Sequential, minimumFloats: Int?) -> [(offset: Int, count: Int)?] {
        guard let minimumFloats else { return [] }
        var plan = [(offset: Int, count: Int)?](repeating: nil, count: model.layers.count)
        var end = model.parameterCount + Sequential.statisticsSlots
        for index in stride(from: model.layers.count - 1, through: 0, by: -1) {
            // A layer without parameters (pooling, dropout) adds nothing to a bucket.
            let start = model.layers[index].parameterViews.first?.offset ?? end
            if end - start >= minimumFloats || index == 0 {
                plan[index] = (start, end - start)
                end = start
            }
        }
        return plan
    }

    /// The linear-scaling schedule: 1 without it; otherwise from 1 to N over the warm-up steps, then N.
    private func learningRateScale() -> Float {
        guard config.training.scaleLearningRate == true, communicator.size > 1 else { return 1 }
        let replicas = Float(communicator.size)
        let warmupSteps = Float(config.training.warmupEpochs ?? 0) * Float(pipeline.stepsPerEpoch)
        guard warmupSteps > 0 else { return replicas }
        return 1 + (replicas - 1) * min(1, Float(optimizer.iterations) / warmupSteps)
    }

    /// Splits this epoch's all-reduce times into the collective's own cost and waiting for the slowest replica:
    /// per step, the replica that arrived last spent only the transfer in it; the others also waited. One
    /// all-gather of every replica's step times per epoch. Returns medians over the steps (the wait is this
    /// replica's).
    private func allreduceCost() throws -> (transfer: Double, wait: Double) {
        let steps = pipeline.stepsPerEpoch
        let mine = (0..<steps).map { Float(allreduceTimes[$0]) }
        let everyone = try communicator.allgather(mine.withUnsafeBytes { Array($0) }).map { bytes in
            bytes.withUnsafeBytes { raw in (0..<steps).map { raw.loadUnaligned(fromByteOffset: 4 * $0, as: Float.self) } }
        }
        let transfer = (0..<steps).map { step in Double(everyone.map { $0[step] }.min() ?? 0) }
        let wait = (0..<steps).map { step in max(0, allreduceTimes[step] - transfer[step]) }
        return (transfer.sorted()[steps / 2], wait.sorted()[steps / 2])
    }

    /// One synchronous training step on `batch`: gradients, all-reduce, update. Returns the step's loss and hits
    /// summed over every replica. Throws (on every replica alike, as the reduced loss is identical) on NaN/inf.
    public func step(_ batch: Batch, epoch: Int) throws -> LossStatistics {
        let gradients = model.gradients.base
        let tail = model.parameterCount
        if groupReducer != nil { return try groupedStep(batch, epoch: epoch) }
        if asynchronousUpdate != nil { return try asynchronousStep(batch, epoch: epoch) }
        gradients.update(repeating: 0, count: tail + Sequential.statisticsSlots)
        let globalStep = optimizer.iterations + 1
        communicator.noteProgress(step: globalStep, phase: .forward)
        var mark = timeline?.now() ?? 0
        let output = try model.forward(batch.features, rows: batch.rows, context: trainingContext(batch, epoch: epoch))
        let statistics = loss.compute(
            outputs: output, targets: batch.targets, rows: batch.rows, columns: model.outputSize,
            dOutputs: model.dOutput, gradientScale: 1 / Float(rowsPerUpdate))
        gradients[tail] = Float(statistics.lossSum)
        gradients[tail + 1] = Float(statistics.correct)
        if let timeline { mark = timeline.record(.forward, since: mark) }
        communicator.noteProgress(step: globalStep, phase: .backward)
        let reduceStart: Double
        if bucketAfterLayer.isEmpty {
            try model.backward(lossFusesLastActivation: lossFusesLastActivation)
            if let timeline { mark = timeline.record(.backward, since: mark) }
            communicator.noteProgress(step: globalStep, phase: .reduction)
            reduceStart = ProcessStatistics.now()
            try communicator.allreduceGradients(gradients, count: tail + Sequential.statisticsSlots, exactTail: Sequential.statisticsSlots)
        } else {
            try model.backward(lossFusesLastActivation: lossFusesLastActivation) { layer in
                if let bucket = bucketAfterLayer[layer] {
                    try communicator.startGradientBucket(gradients + bucket.offset, count: bucket.count)
                } else {
                    try communicator.progressGradientBuckets()
                }
            }
            if let timeline { mark = timeline.record(.backward, since: mark) }
            communicator.noteProgress(step: globalStep, phase: .reduction)
            reduceStart = ProcessStatistics.now()
            try communicator.finishGradientBuckets()
        }
        allreduceTimes[batch.step] = ProcessStatistics.now() - reduceStart
        if let timeline { mark = timeline.record(.reduction, since: mark) }
        return try applyReducedGradients(batch, epoch: epoch, since: mark)
    }

    /// The step with reduction groups: each of this replica's groups gets its own gradient (same rows, same
    /// shapes, same code wherever it runs), then `GradientReducer` sums them in one fixed binary tree — locally
    /// first, then across replicas in rank order — so the total does not depend on how many replicas share the work.
    private func groupedStep(_ batch: Batch, epoch: Int) throws -> LossStatistics {
        guard let groupReducer else { preconditionFailure("groupedStep without reduction groups") }
        let count = model.parameterCount + Sequential.statisticsSlots, tail = model.parameterCount
        let localGroups = groupReducer.localGroups, rows = batch.rows / localGroups, width = data.train.targetWidth
        let globalStep = optimizer.iterations + 1
        communicator.noteProgress(step: globalStep, phase: .forward)
        var mark = timeline?.now() ?? 0
        var context = trainingContext(batch, epoch: epoch)
        for group in 0..<localGroups { groupReducer.gradient(ofGroup: group).update(repeating: 0, count: count) }
        // The group's loss sum and hits ride in its gradient's tail.
        func keep(_ statistics: LossStatistics, ofGroup group: Int) {
            let target = groupReducer.gradient(ofGroup: group)
            target[tail] = Float(statistics.lossSum)
            target[tail + 1] = Float(statistics.correct)
        }
        if groupsRunInLockstep {
            // All groups through each layer before the next (a synchronized layer adds up every group's statistics).
            context.groups = LockstepGroups(rowsPerGroup: rows, localCount: localGroups, firstGroup: communicator.rank * localGroups,
                                            totalCount: localGroups * communicator.size,
                                            gradients: UnsafePointer(groupReducer.groupGradientBases.baseAddress!))
            let output = try model.forward(batch.features, rows: batch.rows, context: context)
            for group in 0..<localGroups {
                let at = group * rows * model.outputSize
                keep(loss.compute(outputs: output + at, targets: batch.targets + group * rows * width, rows: rows, columns: model.outputSize,
                                  dOutputs: model.dOutput + at, gradientScale: 1 / Float(rowsPerUpdate)), ofGroup: group)
            }
            try model.backward(lossFusesLastActivation: lossFusesLastActivation)
        } else {
            for group in 0..<localGroups {
                keep(try model.accumulateGradient(
                    of: loss, features: batch.features + group * rows * model.inputSize, targets: batch.targets + group * rows * width,
                    rows: rows, gradientScale: 1 / Float(rowsPerUpdate), into: groupReducer.gradient(ofGroup: group),
                    context: context.rows(from: group * rows)), ofGroup: group)
            }
        }
        if let timeline { mark = timeline.record(.backward, since: mark) }
        communicator.noteProgress(step: globalStep, phase: .reduction)
        let reduceStart = ProcessStatistics.now()
        try groupReducer.reduce()
        allreduceTimes[batch.step] = ProcessStatistics.now() - reduceStart
        if let timeline { mark = timeline.record(.reduction, since: mark) }
        return try applyReducedGradients(batch, epoch: epoch, since: mark)
    }

    /// The step of an asynchronous worker: its own gradient out, the next parameters in (no optimizer here: whoever
    /// receives the gradient applies it). Once the job has ended, `fit` stops.
    private func asynchronousStep(_ batch: Batch, epoch: Int) throws -> LossStatistics {
        guard let asynchronousUpdate else { preconditionFailure("asynchronousStep without an asynchronous update") }
        communicator.noteProgress(step: optimizer.iterations + 1, phase: .forward)
        model.gradients.base.update(repeating: 0, count: model.parameterCount + Sequential.statisticsSlots)
        var mark = timeline?.now() ?? 0
        let statistics = try model.accumulateGradient(of: loss, features: batch.features, targets: batch.targets, rows: batch.rows,
                                                      gradientScale: 1 / Float(rowsPerUpdate), context: trainingContext(batch, epoch: epoch))
        if let timeline { mark = timeline.record(.backward, since: mark) }
        guard statistics.lossSum.isFinite else {
            throw TandemError(.numeric, "loss became \(statistics.lossSum) at epoch \(epoch + 1), step \(batch.step + 1) of this worker; lower optimizer.learning_rate or check the data scaling")
        }
        jobEnded = try !asynchronousUpdate.exchange(gradients: model.gradients, statistics: statistics, parameters: model.parameters)
        // The update was applied elsewhere; this optimizer only counts the worker's steps (for its progress notes).
        optimizer.iterations += 1
        timeline?.record(.reduction, since: mark)
        return statistics
    }

    /// What the layers need to train on `batch`: its rows' identities for dropout, the global batch for the
    /// statistics' weights, and the replicas a synchronized batch normalization sums with.
    private func trainingContext(_ batch: Batch, epoch: Int) -> LayerContext {
        LayerContext(training: true, seed: config.seed, epoch: epoch, exampleIndices: batch.exampleIndices,
                     globalRows: rowsPerUpdate, replicas: replicaSum)
    }

    /// After the reduction: stop on a non-finite loss (every replica sees the same), else update.
    private func applyReducedGradients(_ batch: Batch, epoch: Int, since mark: Double) throws -> LossStatistics {
        let gradients = model.gradients.base, tail = model.parameterCount
        let stepLoss = gradients[tail]
        guard stepLoss.isFinite else {
            throw TandemError(.numeric, "loss became \(stepLoss) at epoch \(epoch + 1), step \(batch.step + 1) (learning rate \(optimizer.currentLearningRate)); lower optimizer.learning_rate or check the data scaling")
        }
        communicator.noteProgress(step: optimizer.iterations + 1, phase: .apply)
        optimizer.learningRateScale = learningRateScale()
        optimizer.apply(parameters: model.parameters.base, gradients: gradients)
        timeline?.record(.apply, since: mark)
        return LossStatistics(lossSum: Double(stepLoss), correct: Int(gradients[tail + 1].rounded()), count: rowsPerUpdate)
    }

    /// Trains the remaining epochs. Rank 0 reports progress, writes metrics and checkpoints. An asynchronous worker
    /// trains until its job ends (its chief reports and writes) and returns the epochs it completed; the chief's
    /// epochs are its workers' pushes, each evaluated on the test set.
    public func fit(options: TrainingOptions = TrainingOptions()) throws -> TrainingSummary {
        let start = ProcessStatistics.now()
        let isChief = communicator.rank == 0 && asynchronousUpdate == nil
        let recorder = try EpochRecorder(options: options, isChief: isChief, epochs: config.training.epochs, stepsPerEpoch: pipeline.stepsPerEpoch,
                                         batchSize: pipeline.globalBatchSize, reportsAccuracy: loss.reportsAccuracy)
        if let metrics = recorder.metrics {
            // The stall inspector writes from its own thread while this one is stuck in a collective.
            let writer = UncheckedSendable(metrics)
            communicator.observeStalls { record in try? writer.value.write(record) }
        }
        let progress = recorder.progress
        var summary = TrainingSummary()
        timeline = options.timelinePath.map { _ in Timeline(capacity: pipeline.stepsPerEpoch * 5 + 16) }
        let timelineWriter = isChief ? try options.timelinePath.map { try TimelineWriter(path: $0, replicas: communicator.size) } : nil
        defer { timeline = nil }

        // A worker trains until its job ends; everyone else the job's epochs.
        let lastEpoch = asynchronousUpdate == nil ? config.training.epochs : JobConfig.maximumEpochs
        for epoch in completedEpochs..<lastEpoch where !jobEnded {
            progress.beginEpoch(epoch)
            let statistics: LossStatistics, seconds: Double, pushes: Int?
            if let asynchronousCoordinator {
                // The chief of an asynchronous job computes no steps: its epoch is its workers' pushes.
                let pushed = try asynchronousCoordinator.awaitEpoch(epoch, of: config.training.epochs, model: model, optimizer: optimizer)
                (statistics, seconds, pushes) = (pushed.train, pushed.seconds, pushed.pushes)
                if summary.startupSeconds == 0 { summary.startupSeconds = ProcessStatistics.secondsSinceProcessStart() ?? 0 }
            } else {
                let epochStart = ProcessStatistics.now()
                statistics = try runSteps(of: epoch, recorder: recorder, startupSeconds: &summary.startupSeconds)
                // An asynchronous job may end mid-epoch: that part of an epoch is not one.
                if jobEnded { break }
                (seconds, pushes) = (ProcessStatistics.now() - epochStart, nil)
            }
            let evaluationStart = timeline?.now() ?? 0
            communicator.noteProgress(step: optimizer.iterations, phase: .evaluation)
            let validation = data.validationRows.isEmpty ? nil : try evaluate(data.train, rows: data.validationRows)
            var result = EpochResult(epoch: epoch, train: statistics, validation: validation, seconds: seconds)
            if let pushes {
                // The chief's epoch ends with the parameters its workers reached: their test figures are the job's.
                result.pushes = pushes
                result.test = try data.test.map { try evaluate($0) }
            }
            if let timeline, validation != nil || result.test != nil { timeline.record(.evaluation, since: evaluationStart) }
            if communicator.size > 1 {
                (result.allreduceSeconds, result.stragglerWaitSeconds) = try allreduceCost()
            }
            summary.epochs.append(result)
            completedEpochs = epoch + 1
            try recorder.epochEnded(result, learningRate: Double(optimizer.currentLearningRate))
            if recorder.savesCheckpoints {
                let checkpointStart = timeline?.now() ?? 0
                communicator.noteProgress(step: optimizer.iterations, phase: .checkpoint)
                try recorder.save(epochs: completedEpochs) {
                    TrainingState.checkpoint(model: model, optimizer: optimizer, epoch: completedEpochs,
                                             seed: config.seed, config: config, scaling: data.scaling)
                }
                timeline?.record(.checkpoint, since: checkpointStart)
            }
            if let timeline {
                // Every replica takes part, so rank 0 can write all tracks.
                let gathered = try communicator.allgather(timeline.drain())
                try timelineWriter?.append(gathered)
            }
        }
        try timelineWriter?.close()
        if asynchronousCoordinator != nil {
            summary.test = summary.epochs.last?.test
        } else if let test = data.test, asynchronousUpdate == nil {
            summary.test = try evaluate(test)
        }
        summary.wallSeconds = ProcessStatistics.now() - start
        summary.peakResidentBytes = ProcessStatistics.peakResidentBytes()
        try recorder.finish(summary)
        return summary
    }

    /// This replica's steps of `epoch`, as the pipeline delivers its batches; returns their summed statistics.
    /// `startupSeconds` is set at the end of the process's first step.
    private func runSteps(of epoch: Int, recorder: EpochRecorder, startupSeconds: inout Double) throws -> LossStatistics {
        let epochStart = ProcessStatistics.now()
        pipeline.startEpoch(epoch)
        defer { pipeline.finishEpoch() }
        var statistics = LossStatistics()
        var waitStart = timeline?.now() ?? 0
        communicator.noteProgress(step: optimizer.iterations + 1, phase: .dataWait)
        while !jobEnded, let batch = try pipeline.next() {
            if let timeline { timeline.record(.dataWait, since: waitStart) }
            let stepStatistics = try step(batch, epoch: epoch)
            statistics += stepStatistics
            recorder.step(batch.step, of: epoch, statistics: stepStatistics, learningRate: Double(optimizer.currentLearningRate))
            if startupSeconds == 0 {
                // Process start to the end of the first step: what a user waits before training is under way.
                startupSeconds = ProcessStatistics.secondsSinceProcessStart() ?? 0
            }
            recorder.progress.update(step: batch.step + 1, statistics: statistics, elapsed: ProcessStatistics.now() - epochStart)
            waitStart = timeline?.now() ?? 0
            communicator.noteProgress(step: optimizer.iterations + 1, phase: .dataWait)
        }
        return statistics
    }

    /// Loss and accuracy on `rows` of `examples` (all rows when nil), split across the replicas and combined.
    public func evaluate(_ examples: Examples, rows: [Int32]? = nil) throws -> LossStatistics {
        try evaluator.evaluate(examples, rows: rows, communicator: communicator)
    }
}
