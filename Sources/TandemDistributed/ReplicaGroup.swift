import Foundation
import TandemCore

/// The meeting point of the replica threads of one process: a reusable barrier that gives up with a message naming
/// the replicas that did not arrive (or the one that failed), and the shared slots the collectives exchange through.
final class ReplicaGroup: @unchecked Sendable {
    let count: Int
    let timeoutSeconds: Double
    /// Each replica's buffer for the collective in progress.
    let buffers: UnsafeMutablePointer<UnsafeMutablePointer<Float>?>
    var stagedBytes: [[UInt8]]
    var gatheredBytes: [[UInt8]] = []

    private let condition = NSCondition()
    private var arrived: [Bool]
    private var arrivals = 0
    private var generation = 0
    private var failure: String?

    init(count: Int, timeoutSeconds: Double) {
        self.count = count
        self.timeoutSeconds = timeoutSeconds
        buffers = .allocate(capacity: count)
        buffers.initialize(repeating: nil, count: count)
        arrived = Array(repeating: false, count: count)
        stagedBytes = Array(repeating: [], count: count)
    }

    deinit { buffers.deallocate() }

    /// Blocks until every replica has called `wait` (or throws: a replica failed, or some did not come in time).
    func wait(replica: Int) throws {
        condition.lock()
        defer { condition.unlock() }
        if let failure { throw TandemError(.communication, failure) }
        let myGeneration = generation
        arrived[replica] = true
        arrivals += 1
        if arrivals == count {
            arrivals = 0
            for i in 0..<count { arrived[i] = false }
            generation += 1
            condition.broadcast()
            return
        }
        let deadline = Date(timeIntervalSinceNow: timeoutSeconds)
        while generation == myGeneration && failure == nil {
            if !condition.wait(until: deadline) && generation == myGeneration && failure == nil {
                let missing = (0..<count).filter { !arrived[$0] }.map(String.init).joined(separator: ", ")
                failure = "replica \(missing) did not reach the step's exchange within \(Int(timeoutSeconds)) s"
                condition.broadcast()
            }
        }
        if generation == myGeneration, let failure { throw TandemError(.communication, failure) }
    }

    /// Marks the group failed: every replica waiting now or later stops with this message.
    func fail(replica: Int, message: String) {
        condition.lock()
        if failure == nil { failure = "replica \(replica) failed: \(message)" }
        condition.broadcast()
        condition.unlock()
    }
}
