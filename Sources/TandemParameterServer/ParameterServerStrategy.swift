import TandemCollectives
import TandemCore
import TandemTrain

/// Asynchronous data parallelism with parameter servers (TensorFlow's `ParameterServerStrategy`), one task of the
/// cluster per process: ps tasks hold the parameters in shards and apply each pushed gradient with the optimizer;
/// workers and the chief run the same `Trainer.fit` as every other strategy. A worker's steps send their gradient to
/// the ps tasks and receive the parameters of their next step (`AsynchronousUpdate`), never waiting for the other
/// workers; the chief's epochs are the workers' pushes (`AsynchronousCoordinator`): it counts them against the job's
/// budget (epochs × steps of one epoch of data), evaluates, reports and checkpoints after every epoch's worth as
/// any chief does, and ends the job.
///
/// ```swift
/// let strategy = try ParameterServerStrategy(config: job, spec: try ClusterSpec.resolve(config: job)!)
/// if strategy.task.type == .ps {
///     try strategy.serve()
/// } else {
///     _ = try Trainer.run(job, on: data, strategy: strategy)   // a worker or the chief
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
    private var coordinator: ParameterServerCoordinator?

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
    /// The chief reports and writes; workers print nothing of the training.
    public var isChief: Bool { task.type == .chief }

    /// Runs a worker's or the chief's training loop (`body`, given a communicator to nobody: in this strategy
    /// processes talk to the ps tasks, not to each other).
    public func run<Result>(_ body: @escaping @Sendable (_ communicator: Communicator) throws -> Result) throws -> Result {
        guard task.type == .worker || task.type == .chief else {
            throw TandemError(.usage, "\(task.label) does not train in a parameter-server job: a ps serves (serve()), an evaluator watches checkpoints")
        }
        return try body(LocalCommunicator())
    }

    public func makeAsynchronousRole() throws -> AsynchronousRole? {
        switch task.type {
        case .worker:
            let worker = ParameterServerWorker(job: job, index: task.index, joinTimeoutSeconds: waitSeconds)
            self.worker = worker
            return .worker(worker)
        case .chief:
            let coordinator = ParameterServerCoordinator(job: job, stallSeconds: waitSeconds)
            self.coordinator = coordinator
            return .coordinator(coordinator)
        default:
            return nil
        }
    }

    /// Streams to every ps that carry a worker's bytes without training (see `TransportProbe`): what the transport
    /// alone costs a step, to set a worker's step against. The ps tasks must be serving.
    public func makeTransportProbe() throws -> TransportProbe {
        try TransportProbe(job: job, worker: task.index)
    }

    /// What this worker did, once the chief has ended its training.
    public var workerSummary: ParameterServerJob.WorkerSummary? { worker?.summary }

    /// Serves this ps task's shard until the chief ends the job.
    public func serve() throws {
        guard task.type == .ps else { throw TandemError(.usage, "\(task.label) is not a ps task") }
        try job.serve(index: task.index)
    }

    /// Closes a worker's streams to the ps tasks; on the chief, ends the job (if its training failed, the ps tasks
    /// and workers stop instead of waiting for it).
    public func finish() {
        worker?.close()
        coordinator?.stop()
    }
}
