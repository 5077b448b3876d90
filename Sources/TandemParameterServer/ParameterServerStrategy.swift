import TandemCollectives
import TandemCore
import TandemTrain

/// Asynchronous data parallelism with parameter servers (TensorFlow's `ParameterServerStrategy`), one task of the
/// cluster per process: ps tasks hold the parameters in shards and apply each pushed gradient with the optimizer;
/// workers train — the same `Trainer.fit` as every other strategy, whose steps send their gradient to the ps
/// tasks and receive the parameters of their next step (`AsynchronousUpdate`), never waiting for each other; the
/// chief counts the pushes against the job's budget (epochs × steps of one epoch of data), evaluates and
/// checkpoints after every epoch's worth, and ends the job.
///
/// ```swift
/// let strategy = try ParameterServerStrategy(config: job, spec: try ClusterSpec.resolve(config: job)!)
/// switch strategy.task.type {
/// case .ps: try strategy.serve()
/// case .chief: _ = try strategy.lead(data: data)
/// default: _ = try Trainer.run(job, on: data, strategy: strategy)   // a worker
/// }
/// strategy.finish()
/// ```
public final class ParameterServerStrategy: Strategy {
    public let job: ParameterServerJob
    /// This process's task (TF_CONFIG's `task`, or Slurm's).
    public let task: ClusterSpec.Task
    /// How long a worker keeps trying to join (the ps tasks not up yet, the chief not ready), and how long the
    /// chief waits for the ps tasks and for pushes before it names who is missing.
    public let waitSeconds: Double
    private var worker: ParameterServerWorker?

    public init(config: JobConfig, spec: ClusterSpec, waitSeconds: Double = 60) throws {
        guard let task = spec.task else {
            throw TandemError(.badConfig, "\(spec.source): no task for this process: set TF_CONFIG's \"task\" (or run under Slurm)")
        }
        job = try ParameterServerJob(job: config, spec: spec)
        self.task = task
        self.waitSeconds = waitSeconds
    }

    /// The workers: each trains on its own slice of the data and pushes on its own.
    public var replicaCount: Int { job.workerCount }
    /// The chief reports and writes (its `lead`); workers print nothing of the training.
    public var isChief: Bool { task.type == .chief }

    /// Runs a worker's training (`body`, given a communicator to nobody: workers do not talk to each other).
    public func run<Result>(_ body: @escaping @Sendable (_ communicator: Communicator) throws -> Result) throws -> Result {
        guard task.type == .worker else {
            throw TandemError(.usage, "\(task.label) does not train in a parameter-server job: a ps serves (serve()), the chief leads (lead(data:))")
        }
        return try body(LocalCommunicator())
    }

    public func makeAsynchronousUpdate() throws -> AsynchronousUpdate? {
        guard task.type == .worker else { return nil }
        let worker = ParameterServerWorker(job: job, index: task.index, joinTimeoutSeconds: waitSeconds)
        self.worker = worker
        return worker
    }

    /// What this worker did, once the chief has ended its training.
    public var workerSummary: ParameterServerJob.WorkerSummary? { worker?.summary }

    /// Serves this ps task's shard until the chief ends the job.
    public func serve() throws {
        guard task.type == .ps else { throw TandemError(.usage, "\(task.label) is not a ps task") }
        try job.serve(index: task.index)
    }

    /// Leads the job as its chief (from the checkpoint `resume`, if given) and returns its summary.
    public func lead(data: DataSource, options: TrainingOptions = TrainingOptions(), resume: String? = nil) throws -> TrainingSummary {
        guard task.type == .chief else { throw TandemError(.usage, "\(task.label) is not the chief") }
        return try job.lead(data: data, options: options, resume: resume, stallSeconds: waitSeconds)
    }

    /// Closes a worker's streams to the ps tasks.
    public func finish() { worker?.close() }
}
