import Foundation
import TandemCollectives
import TandemCore
import TandemTrain

/// Synchronous data parallelism on replica threads of this process (TensorFlow's `MirroredStrategy` on CPUs): each
/// replica holds the model, computes gradients on its slice of every global batch, and the replicas sum them in
/// shared memory before every replica applies the same update.
///
/// ```swift
/// let strategy = MirroredStrategy(replicas: 2)
/// try model.fit(data, epochs: 5, batchSize: 128, strategy: strategy)
/// ```
public final class MirroredStrategy: Strategy {
    public let replicaCount: Int
    /// How long one exchange may wait for the other replicas before the one missing is named and the job stops.
    public let timeoutSeconds: Double
    /// Pin replica i to core i (off when the process was placed by a launcher, or there are more replicas than cores).
    public let pinsToCores: Bool

    public init(replicas: Int = ProcessInfo.processInfo.activeProcessorCount, timeoutSeconds: Double = 60) {
        replicaCount = max(replicas, 1)
        self.timeoutSeconds = timeoutSeconds
        pinsToCores = replicaCount <= ProcessInfo.processInfo.activeProcessorCount
    }

    public var isChief: Bool { true }

    public func run<Result>(_ body: @escaping @Sendable (_ communicator: Communicator) throws -> Result) throws -> Result {
        try ThreadReplicas.run(count: replicaCount, timeoutSeconds: timeoutSeconds, pinToCores: pinsToCores) { _, communicator in
            try body(communicator)
        }
    }
}

/// Synchronous data parallelism across processes (TensorFlow's `MultiWorkerMirroredStrategy`, Horovod): one MPI
/// rank per process, started by `mpirun -np N`, by `srun --mpi=pmix`, or by launch.sh from a cluster config; with
/// `replicasPerWorker` > 1, that many replica threads in each rank (hybrid: threads sum in shared memory, one
/// thread per rank sums across ranks).
///
/// ```swift
/// let strategy = try MultiWorkerMirroredStrategy()
/// try model.fit(data, epochs: 5, batchSize: 128, strategy: strategy)
/// strategy.finish()
/// ```
public final class MultiWorkerMirroredStrategy: Strategy {
    public let process: MPICommunicator
    public let replicasPerWorker: Int
    public let stallSeconds: Double

    /// Joins the MPI job this process was started in. `stallTimeoutSeconds`: how long one collective may wait
    /// before the stall inspector names the ranks missing (0: never); `wireType`: float32 or bf16 gradients.
    public init(replicasPerWorker: Int = 1, stallTimeoutSeconds: Double = 60, stallAction: StallAction = .abort,
                wireType: MPICommunicator.WireType = .float32) throws {
        process = try MPICommunicator(stallTimeoutSeconds: stallTimeoutSeconds, stallAction: stallAction, wireType: wireType)
        self.replicasPerWorker = max(replicasPerWorker, 1)
        stallSeconds = finiteWait(stallTimeoutSeconds: stallTimeoutSeconds)
    }

    /// Whether this process was started as one rank of an MPI job (mpirun, srun with PMIx).
    public static var isAvailable: Bool { MPICommunicator.isLaunchedByMPI }

    public var replicaCount: Int { process.size * replicasPerWorker }
    public var processCommunicator: Communicator { process }
    public var isChief: Bool { process.rank == 0 }

    public func run<Result>(_ body: @escaping @Sendable (_ communicator: Communicator) throws -> Result) throws -> Result {
        guard replicasPerWorker > 1 else { return try body(process) }
        // mpirun placed this process; its replica threads share whatever cores it was given.
        return try ThreadReplicas.run(count: replicasPerWorker, process: process, timeoutSeconds: stallSeconds, pinToCores: false) { _, communicator in
            try body(communicator)
        }
    }

    public func finish() { process.finalize() }
}

extension MultiWorkerMirroredStrategy {
    /// What ending the job after `error` takes: every rank knows a shared failure (rank 0 reports it, every rank
    /// exits 1); a failure of this rank alone must end the whole job at once (the caller aborts it), or the other
    /// ranks would wait in their next collective until the stall timeout.
    public func ending(after error: Error) -> (report: String?, abortJob: Bool) {
        let message = (error as? TandemError)?.message ?? (error as? AgreedFailure)?.message ?? String(describing: error)
        switch scope(of: error) {
        case .everyReplica: return (process.rank == 0 ? message : nil, false)
        case .thisProcessAlone: return ("rank \(process.rank): \(message)", true)
        }
    }
}

/// Choosing a strategy from how the process was started.
public enum Strategies {
    /// MPI ranks (× `replicas` threads each) when started by mpirun or srun; otherwise `replicas` threads in this
    /// process, or a single replica.
    public static func fromEnvironment(replicas: Int = 1, stallTimeoutSeconds: Double = 60, stallAction: StallAction = .abort,
                                       wireType: MPICommunicator.WireType = .float32) throws -> any Strategy {
        if MultiWorkerMirroredStrategy.isAvailable {
            return try MultiWorkerMirroredStrategy(replicasPerWorker: replicas, stallTimeoutSeconds: stallTimeoutSeconds,
                                                   stallAction: stallAction, wireType: wireType)
        }
        if replicas > 1 { return MirroredStrategy(replicas: replicas, timeoutSeconds: finiteWait(stallTimeoutSeconds: stallTimeoutSeconds)) }
        return LocalStrategy()
    }
}
