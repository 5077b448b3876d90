import CAffinity
import Foundation
import TandemCore

/// One of N replica threads of a process as a `Communicator`. Collectives go through shared memory without copies
/// through MPI: for an all-reduce each thread sums its 1/N chunk of the buffer across all replicas and writes the
/// sum back to every replica (reduce-scatter + all-gather in one pass), so a step costs two barriers.
///
/// With `process` (an MPI communicator, when the process is one of several ranks) it is hierarchical, as in
/// Horovod: threads reduce inside the process, replica 0 all-reduces across processes, threads share the result.
public final class ThreadCommunicator: Communicator {
    public let rank: Int
    public let size: Int
    private let local: Int
    private let group: ReplicaGroup
    private let process: Communicator?

    init(local: Int, group: ReplicaGroup, process: Communicator?) {
        self.local = local
        self.group = group
        self.process = process
        rank = (process?.rank ?? 0) * group.count + local
        size = (process?.size ?? 1) * group.count
    }

    /// This replica's slice [start, end) of `count` values.
    private func chunk(_ count: Int) -> Range<Int> {
        (count * local / group.count)..<(count * (local + 1) / group.count)
    }

    public func allreduceSum(_ buffer: UnsafeMutablePointer<Float>, count: Int) throws {
        try sum(buffer, count: count) { process, sum in try process.allreduceSum(sum, count: count) }
    }

    /// The gradients' sum: across processes the process's own gradient exchange (bf16 on the wire when it says
    /// so), with the exact tail kept exact.
    public func allreduceGradients(_ buffer: UnsafeMutablePointer<Float>, count: Int, exactTail: Int) throws {
        try sum(buffer, count: count) { process, sum in try process.allreduceGradients(sum, count: count, exactTail: exactTail) }
    }

    /// The threads sum their buffers chunk by chunk into replica 0's, replica 0 sums that across processes with
    /// `acrossProcesses`, and every thread copies its chunk of the total back.
    private func sum(_ buffer: UnsafeMutablePointer<Float>, count: Int,
                     acrossProcesses: (Communicator, UnsafeMutablePointer<Float>) throws -> Void) throws {
        let buffers = group.buffers, replicas = group.count
        buffers[local] = buffer
        try group.wait(replica: local)
        let mine = chunk(count)
        let sum = buffers[0]!
        for r in 1..<replicas {
            let other = UnsafePointer(buffers[r]!)
            for i in mine { sum[i] += other[i] }
        }
        if let process {
            try group.wait(replica: local)
            if local == 0 { try acrossProcesses(process, sum) }
            try group.wait(replica: local)
        }
        for r in 1..<replicas {
            (buffers[r]! + mine.lowerBound).update(from: sum + mine.lowerBound, count: mine.count)
        }
        try group.wait(replica: local)
    }

    /// The same fixed tree over ranks (process rank × threads + thread): the threads' subtree per element, in
    /// parallel by chunk, then the processes' tree, then the total shared with every thread.
    public func treeAllreduceSum(_ buffer: UnsafeMutablePointer<Float>, count: Int) throws {
        let buffers = group.buffers, replicas = group.count
        buffers[local] = buffer
        try group.wait(replica: local)
        let mine = chunk(count)
        fixedTreeSum(count: replicas, elements: mine) { buffers[$0]! }
        if let process {
            try group.wait(replica: local)
            if local == 0 { try process.treeAllreduceSum(buffers[0]!, count: count) }
        }
        try group.wait(replica: local)
        if local != 0 { buffer.update(from: buffers[0]!, count: count) }
        try group.wait(replica: local)
    }

    public func noteProgress(step: Int, phase: StepPhase) {
        group.steps[local] = step
        group.phases[local] = phase.rawValue
        if local == 0 { process?.noteProgress(step: step, phase: phase) }
    }

    public func observeStalls(_ observer: @escaping @Sendable ([String: Any]) -> Void) {
        if local == 0 { process?.observeStalls(observer) }
    }

    /// Copies the root's buffer to every replica; Tandem only broadcasts from global rank 0.
    public func broadcast(_ buffer: UnsafeMutablePointer<Float>, count: Int, root: Int) throws {
        precondition(root == 0, "thread replicas broadcast from rank 0 only")
        group.buffers[local] = buffer
        try group.wait(replica: local)
        if local == 0, let process { try process.broadcast(buffer, count: count, root: 0) }
        try group.wait(replica: local)
        if local != 0 { buffer.update(from: group.buffers[0]!, count: count) }
        try group.wait(replica: local)
    }

    public func allgather(_ bytes: [UInt8]) throws -> [[UInt8]] {
        group.stagedBytes[local] = bytes
        try group.wait(replica: local)
        if local == 0 {
            if let process {
                // Each process sends its replicas' byte strings as one length-prefixed blob.
                var blob: [UInt8] = []
                for part in UnsafeBufferPointer(start: group.stagedBytes, count: group.count) { blob += withUnsafeBytes(of: UInt32(part.count).littleEndian, Array.init) + part }
                group.gatheredBytes = try process.allgather(blob).flatMap { Self.split($0, parts: group.count) }
            } else {
                group.gatheredBytes = Array(UnsafeBufferPointer(start: group.stagedBytes, count: group.count))
            }
        }
        try group.wait(replica: local)
        return group.gatheredBytes
    }

    public var agreementFields: [(name: String, value: String)] { process?.agreementFields ?? [] }

    public func barrier() throws {
        try group.wait(replica: local)
        if local == 0, let process { try process.barrier() }
        try group.wait(replica: local)
    }

    private static func split(_ blob: [UInt8], parts: Int) -> [[UInt8]] {
        var result: [[UInt8]] = []
        var offset = 0
        for _ in 0..<parts {
            let length = blob[offset..<offset + 4].reversed().reduce(0) { $0 << 8 | Int($1) }
            result.append(Array(blob[offset + 4..<offset + 4 + length]))
            offset += 4 + length
        }
        return result
    }
}

/// Runs `body` on N replica threads — replica 0 on the calling thread (so MPI is only called from the thread that
/// initialized it) — and returns replica 0's result. When one replica fails, the others stop at their next
/// exchange, and the failing replica's own error is thrown.
public enum ThreadReplicas {
    public static func run<Result>(
        count: Int, process: Communicator? = nil, timeoutSeconds: Double = 120, pinToCores: Bool = false,
        _ body: @escaping @Sendable (_ replica: Int, _ communicator: Communicator) throws -> Result
    ) throws -> Result {
        precondition(count >= 1)
        // Under mpirun, this host's other ranks run their replica threads too.
        let ranksHere = ProcessInfo.processInfo.environment["OMPI_COMM_WORLD_LOCAL_SIZE"].flatMap(Int.init) ?? 1
        let group = ReplicaGroup(count: count, timeoutSeconds: timeoutSeconds, threadsOnThisHost: count * (process == nil ? 1 : ranksHere))
        let errors = ReplicaErrors(count: count)
        let finished = DispatchGroup()
        let communicators = (0..<count).map { ThreadCommunicator(local: $0, group: group, process: process) }
        let boxes = communicators.map { UncheckedSendable($0) }
        for replica in 1..<count {
            finished.enter()
            let thread = Thread {
                if pinToCores { pinCurrentThread(toCore: replica) }
                do { _ = try body(replica, boxes[replica].value) } catch {
                    errors.record(replica, error)
                    group.fail(replica: replica, message: (error as? TandemError)?.message ?? String(describing: error))
                }
                finished.leave()
            }
            thread.name = "tandem-replica-\(replica)"
            thread.start()
        }
        if pinToCores { pinCurrentThread(toCore: 0) }
        var result: Result?
        do { result = try body(0, communicators[0]) } catch {
            errors.record(0, error)
            group.fail(replica: 0, message: (error as? TandemError)?.message ?? String(describing: error))
        }
        finished.wait()
        if let error = errors.first { throw error }
        return result!
    }

    /// Pins the calling thread to one core (Linux), so replicas do not migrate and share caches.
    static func pinCurrentThread(toCore core: Int) {
        let cores = Int(sysconf(Int32(_SC_NPROCESSORS_ONLN)))
        guard cores > 0 else { return }
        _ = tandem_pin_current_thread(Int32(core % cores))
    }
}

/// The replicas' errors: the first real failure wins over the "replica k failed" echoes of the others.
private final class ReplicaErrors: @unchecked Sendable {
    private let lock = NSLock()
    private var errors: [(replica: Int, error: Error)] = []

    init(count: Int) {}

    func record(_ replica: Int, _ error: Error) { lock.withLock { errors.append((replica, error)) } }

    var first: Error? {
        lock.withLock {
            // A replica's own failure, not another replica's report that the group stopped.
            let own = errors.first { ($0.error as? TandemError)?.code != .replicasStopped }
            return (own ?? errors.first)?.error
        }
    }
}
