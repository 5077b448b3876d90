/// Sums a few floats across the replicas of a step: what a synchronized batch normalization needs from the strategy
/// (its statistics over the global batch). A collective: every replica calls it at the same point of the same step.
/// Every `Communicator` is one.
public protocol ReplicaSum: AnyObject {
    /// Replicas taking part (1: the sum is the value itself).
    var replicaCount: Int { get }
    func sumAcrossReplicas(_ values: UnsafeMutablePointer<Float>, count: Int) throws
}
