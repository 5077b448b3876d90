import TandemCore

/// Where a replica is within a step: what the stall inspector reports for a replica that stopped answering, and
/// the spans of the step timeline.
public enum StepPhase: UInt8, CaseIterable, Sendable {
    case dataWait, forward, backward, reduction, apply, checkpoint, evaluation

    public var name: String {
        switch self {
        case .dataWait: return "data wait"
        case .forward: return "forward"
        case .backward: return "backward"
        case .reduction: return "gradient reduction"
        case .apply: return "optimizer apply"
        case .checkpoint: return "checkpoint"
        case .evaluation: return "evaluation"
        }
    }
}

/// What the training loop needs from the replicas it trains with. The trainer only ever talks to this protocol: the
/// single-process implementation is below, MPI ranks and thread replicas live in TandemDistributed.
public protocol Communicator: ReplicaSum {
    /// This replica's index among all replicas, and how many there are.
    var rank: Int { get }
    var size: Int { get }
    /// In-place element-wise sum over all replicas, exact to float32.
    func allreduceSum(_ buffer: UnsafeMutablePointer<Float>, count: Int) throws
    /// The per-step gradient sum: like `allreduceSum`, but a communicator may trade precision for bytes on the wire
    /// in the first `count - exactTail` values (the gradients); the last `exactTail` (loss and hit counts) stay exact.
    func allreduceGradients(_ buffer: UnsafeMutablePointer<Float>, count: Int, exactTail: Int) throws
    /// Starts summing one bucket of gradients in the background (it may complete at once); the buffer must stay
    /// untouched until `finishGradientBuckets()` returns. Buckets are started in the same order on every replica.
    func startGradientBucket(_ buffer: UnsafeMutablePointer<Float>, count: Int) throws
    /// Lets started buckets progress without waiting (called between layers of backward).
    func progressGradientBuckets() throws
    /// Waits until every started bucket is summed.
    func finishGradientBuckets() throws
    /// The sum over replicas in one fixed binary tree by rank — ((r0 + r1) + (r2 + r3)) ... — so the result is the
    /// same bit for bit however the summands are spread over processes and threads (MPI_Allreduce fixes no order).
    func treeAllreduceSum(_ buffer: UnsafeMutablePointer<Float>, count: Int) throws
    /// Where this replica is (for the stall inspector): called at every phase of every step, so it must be cheap.
    func noteProgress(step: Int, phase: StepPhase)
    /// Lets rank 0's metrics file record stalls.
    func observeStalls(_ observer: @escaping @Sendable ([String: Any]) -> Void)
    /// Replaces `buffer` on every replica with the root's.
    func broadcast(_ buffer: UnsafeMutablePointer<Float>, count: Int, root: Int) throws
    /// Every replica's bytes, in rank order.
    func allgather(_ bytes: [UInt8]) throws -> [[UInt8]]
    func barrier() throws
    /// Settings of this communicator that every replica must share (e.g. how gradients travel on the wire): part of
    /// the fingerprint compared before step 1, because replicas that differ in them hang or corrupt the sum.
    var agreementFields: [(name: String, value: String)] { get }
}

/// One process, one replica: every collective is the identity.
public final class LocalCommunicator: Communicator {
    public init() {}
    public var rank: Int { 0 }
    public var size: Int { 1 }
    public func allreduceSum(_ buffer: UnsafeMutablePointer<Float>, count: Int) throws {}
    public func broadcast(_ buffer: UnsafeMutablePointer<Float>, count: Int, root: Int) throws {}
    public func allgather(_ bytes: [UInt8]) throws -> [[UInt8]] { [bytes] }
    public func barrier() throws {}
}

/// A failure every replica knows about, so each can stop cleanly instead of aborting the others: rank 0 reports it.
public struct AgreedFailure: Error, CustomStringConvertible {
    public let message: String
    public init(message: String) { self.message = message }
    public var description: String { message }
}

extension Communicator {
    public func allreduceGradients(_ buffer: UnsafeMutablePointer<Float>, count: Int, exactTail: Int) throws {
        try allreduceSum(buffer, count: count)
    }

    // Without a background path, a bucket is summed when it is started.
    public func startGradientBucket(_ buffer: UnsafeMutablePointer<Float>, count: Int) throws {
        try allreduceSum(buffer, count: count)
    }

    public func progressGradientBuckets() throws {}

    public var agreementFields: [(name: String, value: String)] { [] }

    public func noteProgress(step: Int, phase: StepPhase) {}

    public func observeStalls(_ observer: @escaping @Sendable ([String: Any]) -> Void) {}

    public func treeAllreduceSum(_ buffer: UnsafeMutablePointer<Float>, count: Int) throws {
        precondition(size == 1, "\(Self.self) has no fixed-order reduction")
    }

    public func finishGradientBuckets() throws {}

    /// Checks that every replica holds the same bits in `arenas` as rank 0 (one hash each, all-gathered): after
    /// a broadcast, the proof that the replicas start alike. `after` names the broadcast for the message.
    public func requireSameBits(in arenas: [FlatArena], after: String) throws {
        guard size > 1 else { return }
        let hashes = try allgather(withUnsafeBytes(of: FlatArena.bitHash(arenas).bigEndian) { Array($0) })
            .map { $0.reduce(UInt64(0)) { $0 << 8 | UInt64($1) } }
        if let differing = hashes.indices.first(where: { hashes[$0] != hashes[0] }) {
            throw TandemError(.communication, "replica \(differing) does not match rank 0 after \(after) (checksum \(String(hashes[differing], radix: 16)) vs \(String(hashes[0], radix: 16)))")
        }
    }

    /// Runs `body` on every replica, then lets them agree on the outcome: if any replica failed, every replica throws
    /// `AgreedFailure` with the failing ranks' messages (one message when all failed alike). A replica that fails
    /// alone would otherwise leave the others waiting in their next collective.
    public func agreeOnOutcome<T>(_ body: () throws -> T) throws -> T {
        let outcome = Result { try body() }
        guard size > 1 else { return try outcome.get() }
        var message = ""
        if case .failure(let error) = outcome { message = (error as? TandemError)?.message ?? String(describing: error) }
        let messages = try allgather(Array(message.utf8)).map { String(decoding: $0, as: UTF8.self) }
        let failed = messages.indices.filter { !messages[$0].isEmpty }
        guard !failed.isEmpty else { return try outcome.get() }
        if failed.count == size, Set(messages).count == 1 { throw AgreedFailure(message: messages[0]) }
        throw AgreedFailure(message: failed.map { "rank \($0): \(messages[$0])" }.joined(separator: "; "))
    }
}

extension Communicator {
    /// A synchronized layer's statistics go through the communicator's all-reduce.
    public var replicaCount: Int { size }
    public func sumAcrossReplicas(_ values: UnsafeMutablePointer<Float>, count: Int) throws { try allreduceSum(values, count: count) }
}
