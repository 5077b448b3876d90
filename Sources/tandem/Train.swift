import ArgumentParser
import Foundation
import Logging
import Tandem
import TandemParameterServer

struct Train: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Train the model a job config describes, then report test loss and accuracy.",
        discussion: """
            Flags override the config's training fields. Started by mpirun or srun --mpi=pmix, every rank is one replica of a mirrored (synchronous data-parallel) job; batch_size is then the global batch. In a cluster job each task finds its role in TF_CONFIG or, under Slurm, from SLURM_PROCID and the config's cluster section. Examples:
              tandem train configs/fashion-mnist-mlp.json
              mpirun -np 2 tandem train configs/fashion-mnist-mlp.json --batch-size 128
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

    @Flag(help: "With N replicas, train at N × the learning rate (Goyal et al. 2017; sets training.scale_learning_rate).")
    var scaleLearningRate = false

    @Option(help: "Epochs over which the scaled learning rate ramps up linearly (training.warmup_epochs).")
    var warmupEpochs: Double?

    @Option(help: ArgumentHelp("Sum gradients of G fixed groups of each global batch in one fixed tree: bit-identical results for any power-of-two replica count dividing G (training.reduction_groups).", valueName: "G"))
    var reductionGroups: Int?

    @Option(help: ArgumentHelp("Parameter-server jobs: a worker more than k steps ahead of the slowest waits for it; 0 = synchronous (training.max_staleness).", valueName: "k"))
    var maxStaleness: Int?

    @Option(help: ArgumentHelp("Train N global batches per epoch, the first of each shuffle (Keras's steps_per_epoch; training.steps_per_epoch).", valueName: "N"))
    var stepsPerEpoch: Int?

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

    @Option(name: [.customLong("stall-timeout"), .customLong("collective-timeout")],
            help: "Seconds one exchange may wait for the other replicas before the stall inspector names who is missing (0: never).")
    var stallTimeout: Double = 60

    /// `--stall-timeout` for the waits that take a finite bound.
    private var stallSeconds: Double { finiteWait(stallTimeoutSeconds: stallTimeout) }

    @Option(help: "On a stall: abort (end the job, non-zero exit) or warn (report once and keep waiting).")
    var stallAction: StallAction = .abort

    @Option(help: "How gradients travel in the all-reduce under mpirun: float32, or bf16 for half the bytes.")
    var allreduceDtype: MPICommunicator.WireType = .float32

    @Option(help: ArgumentHelp("All-reduce gradients in buckets of at least this many floats, each started as soon as backward has produced it (overlaps communication with backward); default: one fused all-reduce per step.", valueName: "floats"))
    var bucketSize: Int?

    @Option(help: ArgumentHelp("Replicas in this process, one thread, core and BLAS thread each; 'auto': one per core. Under mpirun, replicas per rank.", valueName: "n|auto"))
    var replicas = ReplicaCount(count: 1)

    @Option(help: "Write TensorBoard event files (loss, accuracy, learning rate, samples/s, all-reduce time) to this folder.")
    var tensorboard: String?

    @Option(help: "Write a step timeline of every replica (Chrome trace JSON; open in Perfetto or chrome://tracing).")
    var timeline: String?

    @OptionGroup var compute: ComputeOptions

    func validate() throws {
        try validateWait(stallTimeout, flag: "--stall-timeout")
        if bucketSize != nil && reductionGroups != nil {
            throw ValidationError("--bucket-size and --reduction-groups exclude each other: the groups fix the summation order")
        }
        if let bucketSize, bucketSize <= 0 { throw ValidationError("--bucket-size must be positive, found \(bucketSize)") }
        if let stepsPerEpoch, stepsPerEpoch < 1 { throw ValidationError("--steps-per-epoch must be positive, found \(stepsPerEpoch)") }
        guard (1...1_000_000).contains(keep) else { throw ValidationError("--keep must be between 1 and 1000000, found \(keep)") }
        let cores = ProcessInfo.processInfo.activeProcessorCount
        guard replicas.count <= ReplicaCount.maximum(cores: cores) else {
            throw ValidationError("--replicas \(replicas.count) is far beyond this machine's \(cores) cores: each replica is a thread with its own batch buffers that waits on every other at each step; use at most \(ReplicaCount.maximum(cores: cores)) (\(ReplicaCount.perCore) per core), or more processes on more machines")
        }
    }

    func run() throws {
        let log = compute.apply()
        // Started by mpirun or srun: MPI ranks (× --replicas threads each); otherwise --replicas threads or one replica.
        let strategy = try Strategies.fromEnvironment(replicas: replicas.count, stallTimeoutSeconds: stallTimeout,
                                                      stallAction: stallAction, wireType: allreduceDtype)
        do {
            try train(strategy: strategy, log: log)
            strategy.finish()
        } catch {
            guard let ranks = strategy as? MultiWorkerMirroredStrategy, ranks.process.size > 1 else { throw error }
            let ending = ranks.ending(after: error)
            if let report = ending.report { FileHandle.standardError.write(Data("tandem: error: \(report)\n".utf8)) }
            if ending.abortJob { ranks.process.abort() }
            ranks.finish()
            throw ExitCode(1)
        }
    }

    private func train(strategy: any Strategy, log: Logger) throws {
        let process = strategy.processCommunicator
        log.info("rank \(process.rank): OpenBLAS kernels \(BLASKernelChoice.current)")
        // The data is loaded once per process and shared by its replica threads. Set-up failures are agreed on, so
        // every rank stops cleanly with one report instead of leaving the others waiting.
        let job = try process.agreeOnOutcome {
            let job = try loadJob()
            try checkClusterTask(job, process: process)
            return job
        }
        let loadData = {
            try process.agreeOnOutcome {
                let data = try DataSource.load(config: job, dataDirectoryOverride: dataDir)
                log.info("rank \(process.rank): loaded \(data.trainRows.count) training, \(data.validationRows.count) validation, \(data.test?.count ?? 0) test examples")
                return data
            }
        }
        if job.clusterStrategy == .parameterServer, let spec = try ClusterSpec.resolve(config: job), let task = spec.task {
            return try runParameterServerTask(task, job: job, spec: spec, loadData: loadData)
        }
        // mpirun hands ranks a pseudo-terminal even when its own output is a file: choose plain lines there.
        try fit(job, on: loadData(), strategy: strategy, plainLines: MPICommunicator.isLaunchedByMPI)
    }

    /// The one training call, whatever the strategy: `Trainer.run` with this command's options; the chief
    /// reports. `plainLines`: print a line per epoch where the progress style is automatic.
    private func fit(_ job: JobConfig, on data: DataSource, strategy: any Strategy, plainLines: Bool) throws {
        var options = TrainingOptions()
        options.checkpointDirectory = checkpointDir
        options.keepCheckpoints = keep
        options.metricsPath = metrics
        options.tensorboardDirectory = tensorboard
        options.timelinePath = timeline
        options.progress = progress == .automatic && plainLines ? .lines : progress
        let quiet = progress == .silent
        let (summary, trainer) = try Trainer.run(
            job, on: data, strategy: strategy, start: TrainingStart(checkpoint: try resumePath(), gradientBucketFloats: bucketSize),
            options: options
        ) { trainer, resumedFrom in
            if let resumedFrom { print("Resuming from \(resumedFrom) after epoch \(trainer.completedEpochs)") }
            if trainer.communicator.size > 1 && !quiet {
                print("\(trainer.communicator.size) replicas, \(trainer.pipeline.perShardBatchSize) rows each of every global batch of \(trainer.pipeline.globalBatchSize)")
            }
        }
        if strategy.isChief { report(summary, trainer: trainer.value) }
    }

    /// This process's role in a parameter-server job, as its TF_CONFIG task says.
    private func runParameterServerTask(_ task: ClusterSpec.Task, job: JobConfig, spec: ClusterSpec,
                                        loadData: () throws -> DataSource) throws {
        if bucketSize != nil || allreduceDtype != .float32 || replicas.count > 1 {
            throw TandemError(.usage, "--bucket-size, --allreduce-dtype and --replicas shape the mirrored strategies' all-reduce; \(config) is a parameter_server job, where each worker pushes its own gradient to the ps tasks")
        }
        ParameterServerJob.runAsyncWorkOnEventLoops()
        let strategy = try ParameterServerStrategy(config: job, spec: spec, waitSeconds: stallSeconds)
        defer { strategy.finish() }
        switch task.type {
        case .ps:
            try strategy.serve()  // a ps needs no data
        case .worker, .chief:
            // The one training loop: a worker's update is its exchange with the ps tasks, the chief's epochs are the
            // workers' pushes. Their logs are files: plain lines.
            try fit(job, on: loadData(), strategy: strategy, plainLines: true)
            if let work = strategy.workerSummary {
                let perStep = { (seconds: Double) in fixed(seconds / Double(max(work.steps, 1)) * 1e6, 0) }
                print("worker \(task.index): the chief ended the job after \(work.steps) steps; per step \(perStep(work.computeSeconds)) µs of gradients, \(perStep(work.exchangeSeconds)) µs exchanging with the ps; \(perStep(work.cpuSeconds)) µs of CPU (gRPC included)")
            }
        case .evaluator:
            throw TandemError(.usage, "an evaluator task runs `tandem evaluate CONFIG --watch DIR`, not `tandem train`")
        }
    }

    /// A cluster job's rank must be the task its TF_CONFIG (or Slurm) names: launch.sh starts them in that order.
    private func checkClusterTask(_ job: JobConfig, process: Communicator) throws {
        guard let spec = try ClusterSpec.resolve(config: job), let task = spec.task, job.clusterStrategy == .mirrored else { return }
        try spec.validate(for: .mirrored)
        let order = spec.trainingTasks.map(\.task)
        guard let rank = order.firstIndex(of: task) else {
            throw TandemError(.badConfig, "\(spec.source): task \(task.label) does not train in the mirrored strategy (only chief and workers do)")
        }
        guard order.count == process.size, rank == process.rank else {
            throw TandemError(.badConfig, "\(spec.source): task \(task.label) is rank \(rank) of \(order.count) in the cluster, but this process is rank \(process.rank) of \(process.size)")
        }
    }

    private func loadJob() throws -> JobConfig {
        var job = try JobConfig.load(path: config)
        if let epochs { job.training.epochs = epochs }
        if let batchSize { job.training.batchSize = batchSize }
        if let learningRate { job.optimizer.learningRate = learningRate }
        if let seed { job.training.seed = seed }
        if scaleLearningRate { job.training.scaleLearningRate = true }
        if let warmupEpochs { job.training.warmupEpochs = warmupEpochs }
        if let reductionGroups { job.training.reductionGroups = reductionGroups }
        if let maxStaleness { job.training.maxStaleness = maxStaleness }
        if let stepsPerEpoch { job.training.stepsPerEpoch = stepsPerEpoch }
        if bucketSize != nil && job.training.reductionGroups != nil {
            throw TandemError(.usage, "--bucket-size and training.reduction_groups exclude each other: the groups fix the summation order")
        }
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

extension MPICommunicator.WireType: ExpressibleByArgument {}

/// `--replicas N` or `--replicas auto` (the number of cores).
struct ReplicaCount: ExpressibleByArgument, Sendable {
    let count: Int

    init(count: Int) { self.count = count }

    init?(argument: String) {
        if argument == "auto" {
            count = ProcessInfo.processInfo.activeProcessorCount
        } else if let value = Int(argument), value >= 1, value <= 1024 {
            count = value
        } else {
            return nil
        }
    }

    var defaultValueDescription: String { String(count) }

    /// Replicas beyond this many per core only wait on each other (and a thread per replica on a few cores makes
    /// start-up superlinear: 128 replicas on 2 cores took 11 s).
    static let perCore = 8

    static func maximum(cores: Int) -> Int { max(cores, 1) * perCore }
}

extension StallAction: ExpressibleByArgument {}
