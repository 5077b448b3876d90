import TandemCollectives
import TandemCore

/// How a training job is spread over replicas, as TensorFlow's `tf.distribute.Strategy`: a strategy starts the
/// replicas this process holds and gives each the `Communicator` that sums its gradients with every other
/// replica's. The training loop is the same for every strategy; only the communicator differs.
///
/// ```swift
/// let strategy = try Strategies.fromEnvironment(replicas: 2)   // MPI ranks under mpirun or srun, else threads
/// try model.fit(data, epochs: 5, batchSize: 128, strategy: strategy)
/// strategy.finish()
/// ```
public protocol Strategy: AnyObject {
    /// Replicas in the whole job, over every process.
    var replicaCount: Int { get }

    /// Whether this process holds replica 0: it alone prints, writes metrics and saves checkpoints.
    var isChief: Bool { get }

    /// One replica per process: for what processes agree on before their replicas start (the job, the data).
    var processCommunicator: Communicator { get }

    /// Runs `body` once on every replica of this process (replica 0 on the calling thread), each with the
    /// communicator that connects it to the job's other replicas, and returns replica 0's result. When a replica
    /// fails, the others stop at their next exchange and the failure is thrown.
    func run<Result>(_ body: @escaping @Sendable (_ communicator: Communicator) throws -> Result) throws -> Result

    /// What a failure of this process means for the job: `.everyReplica` when every replica knows of it (it was
    /// agreed on, or it comes from the reduced loss), so each can stop cleanly; `.thisProcessAlone` when the
    /// others would wait forever unless the job is ended (the caller's `main` aborts it).
    func scope(of error: Error) -> FailureScope

    /// Releases what the strategy holds (MPI_Finalize for MPI ranks). Call once, after the last `run`.
    func finish()

    /// For an asynchronous strategy (parameter servers): this process's part in the one training loop — a worker's
    /// update in place of the replicas' all-reduce, or the chief's view of the workers' epochs. nil (the default):
    /// synchronous replicas.
    func makeAsynchronousRole() throws -> AsynchronousRole?
}

/// Who knows of a failure: see `Strategy.scope(of:)`.
public enum FailureScope: Sendable {
    case everyReplica
    case thisProcessAlone
}

extension Strategy {
    public func scope(of error: Error) -> FailureScope {
        error is AgreedFailure || (error as? TandemError)?.code == .numeric || replicaCount == 1 ? .everyReplica : .thisProcessAlone
    }

    public func finish() {}

    public func makeAsynchronousRole() throws -> AsynchronousRole? { nil }

    public var processCommunicator: Communicator { LocalCommunicator() }
}

/// One replica in this process: plain single-process training (TensorFlow's default strategy).
public final class LocalStrategy: Strategy {
    public init() {}

    public var replicaCount: Int { 1 }
    public var isChief: Bool { true }

    public func run<Result>(_ body: @escaping @Sendable (_ communicator: Communicator) throws -> Result) throws -> Result {
        try body(LocalCommunicator())
    }
}
