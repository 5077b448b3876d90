import TandemCore

/// What the training loop needs from the replicas it trains with. The trainer only ever talks to this protocol: the
/// single-process implementation is below, MPI ranks and thread replicas live in TandemDistributed.
public protocol Communicator: AnyObject {
    /// This replica's index among all replicas, and how many there are.
    var rank: Int { get }
    var size: Int { get }
    /// In-place element-wise sum over all replicas.
    func allreduceSum(_ buffer: UnsafeMutablePointer<Float>, count: Int) throws
    /// Replaces `buffer` on every replica with the root's.
    func broadcast(_ buffer: UnsafeMutablePointer<Float>, count: Int, root: Int) throws
    /// Every replica's bytes, in rank order.
    func allgather(_ bytes: [UInt8]) throws -> [[UInt8]]
    func barrier() throws
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
