import Foundation
import Synchronization
import TandemCore

/// The meeting point of the replica threads of one process: a reusable barrier that gives up with a message naming
/// the replicas that did not arrive (or the one that failed), and the shared slots the collectives exchange through.
final class ReplicaGroup: @unchecked Sendable {
    let count: Int
    let timeoutSeconds: Double
    /// Each replica's buffer for the collective in progress.
    let buffers: UnsafeMutablePointer<UnsafeMutablePointer<Float>?>
    /// One slot per replica (distinct memory, so replicas write theirs concurrently without a lock).
    let stagedBytes: UnsafeMutablePointer<[UInt8]>
    var gatheredBytes: [[UInt8]] = []

    /// Only for replicas that stopped spinning: they sleep on it, and a failure is recorded under it.
    private let condition = NSCondition()
    private let arrivals = Atomic<Int>(0)
    private let generation = Atomic<Int>(0)
    private let failed = Atomic<Bool>(false)
    private let sleepers = Atomic<Int>(0)
    /// The barrier generation each replica last arrived in, to name the ones missing from a stalled barrier. Plain
    /// stores, no lock: a replica arriving takes no lock at all (two replicas that arrive together would otherwise
    /// contend for one, and the loser sleeps in the kernel).
    private let arrivedIn: UnsafeMutablePointer<Int>
    /// Each replica's last step and phase, for naming where a missing replica is.
    let steps: UnsafeMutablePointer<Int>
    let phases: UnsafeMutablePointer<UInt8>
    private var failure: String?
    /// How long a replica spins before it sleeps. With a core per thread, about a millisecond: replicas arrive
    /// tens of microseconds apart, and putting a thread to sleep and waking it costs as much again, twice per step
    /// (a 20,000-iteration spin made the tanh exchange 100 µs per step instead of 12). With more threads than
    /// cores a spinner would only hold the core the late replica needs, so it sleeps almost at once.
    private let spinIterations: Int

    init(count: Int, timeoutSeconds: Double, threadsOnThisHost: Int? = nil) {
        self.count = count
        self.timeoutSeconds = timeoutSeconds
        spinIterations = (threadsOnThisHost ?? count) <= ProcessInfo.processInfo.activeProcessorCount ? 400_000 : 2_000
        buffers = .allocate(capacity: count)
        buffers.initialize(repeating: nil, count: count)
        arrivedIn = .allocate(capacity: count)
        arrivedIn.initialize(repeating: -1, count: count)
        stagedBytes = .allocate(capacity: count)
        stagedBytes.initialize(repeating: [], count: count)
        steps = .allocate(capacity: count)
        steps.initialize(repeating: 0, count: count)
        phases = .allocate(capacity: count)
        phases.initialize(repeating: 0, count: count)
    }

    deinit {
        buffers.deallocate()
        arrivedIn.deallocate()
        stagedBytes.deinitialize(count: count)
        stagedBytes.deallocate()
        steps.deallocate()
        phases.deallocate()
    }

    /// Blocks until every replica has called `wait` (or throws: a replica failed, or some did not come in time).
    func wait(replica: Int) throws {
        if failed.load(ordering: .acquiring) { throw failureError() }
        let myGeneration = generation.load(ordering: .acquiring)
        arrivedIn[replica] = myGeneration
        if arrivals.wrappingAdd(1, ordering: .acquiringAndReleasing).newValue == count {
            arrivals.store(0, ordering: .relaxed)
            // Sequentially consistent with the sleepers' count: either this sees a sleeper (and wakes it under the
            // lock it waits with), or that sleeper sees the new generation before it waits.
            generation.wrappingAdd(1, ordering: .sequentiallyConsistent)
            if sleepers.load(ordering: .sequentiallyConsistent) > 0 {
                condition.lock()
                condition.broadcast()
                condition.unlock()
            }
            return
        }
        for _ in 0..<spinIterations {
            if generation.load(ordering: .acquiring) != myGeneration { return }
            if failed.load(ordering: .relaxed) { break }
        }
        condition.lock()
        defer { condition.unlock() }
        sleepers.wrappingAdd(1, ordering: .sequentiallyConsistent)
        defer { sleepers.wrappingSubtract(1, ordering: .sequentiallyConsistent) }
        let deadline = Date(timeIntervalSinceNow: timeoutSeconds)
        while generation.load(ordering: .sequentiallyConsistent) == myGeneration && failure == nil {
            if !condition.wait(until: deadline) && generation.load(ordering: .acquiring) == myGeneration && failure == nil {
                // Plain reads of the other replicas' progress: a stale value only makes the message a step old.
                let missing = (0..<count).filter { arrivedIn[$0] != myGeneration }.map { r in
                    "replica \(r) (last at step \(steps[r]), \(StepPhase(rawValue: phases[r])?.name ?? "starting"))"
                }.joined(separator: ", ")
                failure = "stall: \(missing) did not reach the exchange of step \(steps[replica]) within \(wholeSeconds(timeoutSeconds)) s"
                failed.store(true, ordering: .releasing)
                condition.broadcast()
            }
        }
        if generation.load(ordering: .acquiring) == myGeneration, let failure { throw TandemError(.replicasStopped, failure) }
    }

    private func failureError() -> TandemError {
        condition.lock()
        defer { condition.unlock() }
        return TandemError(.replicasStopped, failure ?? "a replica failed")
    }

    /// Marks the group failed: every replica waiting now or later stops with this message.
    func fail(replica: Int, message: String) {
        condition.lock()
        if failure == nil { failure = "replica \(replica) failed: \(message)" }
        failed.store(true, ordering: .releasing)
        condition.broadcast()
        condition.unlock()
    }
}
