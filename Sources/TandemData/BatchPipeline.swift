import Dispatch
import Foundation
import TandemCore

/// One batch as the training step sees it: converted features and targets in buffers the pipeline owns.
public struct Batch {
    public let features: UnsafePointer<Float>
    public let targets: UnsafePointer<Float>
    public let rows: Int
    public let step: Int
    /// Each row's index in the data set (what dropout masks are drawn from); valid as long as the batch.
    public let exampleIndices: UnsafePointer<Int32>
}

/// The input pipeline of one replica: shuffle (a new order every epoch, fixed by seed and epoch), cut into global
/// batches, keep this shard's slice of each, convert UInt8 → Float with the scaling, and prefetch the next batch on
/// a background thread while the current one trains.
///
/// Note [Equal steps per shard]: a shard is a slice of every *global* batch (rows [i·B, (i+1)·B) of each global
/// batch of N·B), not a slice of the data set, and the last incomplete global batch is dropped. So every shard yields
/// exactly ⌊rows / (N·B)⌋ steps — a collective step can never wait for a shard that has run out — and the N shards
/// of one step together hold exactly the rows one process would see at batch N·B.
public final class BatchPipeline: @unchecked Sendable {
    public let examples: Examples
    public let scaling: FeatureScaling
    public let globalBatchSize: Int
    public let shardCount: Int
    public let shardIndex: Int
    public let seed: UInt64
    public let shuffles: Bool
    public let prefetches: Bool
    public let stepsPerEpoch: Int
    /// How long `next()` waits for the background thread before reporting the pipeline as stuck.
    public var waitTimeoutSeconds: Double = 120

    private let rows: [Int32]
    private let order: UnsafeMutableBufferPointer<Int32>
    private let slots: [(features: FlatArena, targets: FlatArena)]
    private let filled = [DispatchSemaphore(value: 0), DispatchSemaphore(value: 0)]
    private let free = [DispatchSemaphore(value: 1), DispatchSemaphore(value: 1)]
    private let producerFinished = DispatchSemaphore(value: 1)
    private var nextStep = 0
    private var epochRunning = false

    public var perShardBatchSize: Int { globalBatchSize / shardCount }

    /// - Parameters:
    ///   - rows: the example indices this pipeline draws from (e.g. the training part of a validation split).
    ///   - maxSteps: at most this many global batches per epoch (the first ones of each shuffle).
    public init(examples: Examples, rows: [Int32]? = nil, scaling: FeatureScaling, globalBatchSize: Int,
                shard: (count: Int, index: Int) = (1, 0), seed: UInt64, shuffles: Bool = true, prefetches: Bool = true,
                maxSteps: Int? = nil) throws {
        let rows = rows ?? (0..<Int32(examples.count)).map { $0 }
        guard globalBatchSize > 0 else { throw TandemError(.badConfig, "batch_size must be positive, found \(globalBatchSize)") }
        guard shard.count > 0, (0..<shard.count).contains(shard.index) else {
            throw TandemError(.usage, "shard index \(shard.index) is not in 0..<\(shard.count)")
        }
        guard globalBatchSize % shard.count == 0 else {
            throw TandemError(.badConfig, "batch_size \(globalBatchSize) (the global batch) does not divide among \(shard.count) replicas; use a multiple of \(shard.count)")
        }
        guard rows.count >= globalBatchSize else {
            throw TandemError(.badConfig, "batch_size \(globalBatchSize) is larger than the \(rows.count) examples to train on")
        }
        self.examples = examples
        self.rows = rows
        self.scaling = scaling
        self.globalBatchSize = globalBatchSize
        shardCount = shard.count
        shardIndex = shard.index
        self.seed = seed
        self.shuffles = shuffles
        self.prefetches = prefetches
        stepsPerEpoch = min(rows.count / globalBatchSize, maxSteps ?? Int.max)
        order = .allocate(capacity: rows.count)
        _ = order.initialize(from: rows)
        let perShard = globalBatchSize / shard.count
        slots = (0..<2).map { _ in
            (FlatArena(count: perShard * examples.featureCount), FlatArena(count: perShard * examples.targetWidth))
        }
    }

    deinit {
        finishEpoch()
        order.deallocate()
    }

    /// Prepares epoch `epoch` (0-based): its shuffle depends only on (seed, epoch), so a resumed run sees the same
    /// order as an uninterrupted one.
    public func startEpoch(_ epoch: Int) {
        finishEpoch()
        _ = order.update(fromContentsOf: rows)
        if shuffles {
            var generator = SeededGenerator(seed: seed, stream: 0x5EED_0000 + UInt64(epoch))
            generator.shuffle(order)
        }
        nextStep = 0
        epochRunning = true
        guard prefetches else { return }
        producerFinished.wait()
        let thread = Thread { [self] in
            for step in 0..<stepsPerEpoch {
                free[step % 2].wait()
                fill(slot: step % 2, step: step)
                filled[step % 2].signal()
            }
            producerFinished.signal()
        }
        thread.name = "tandem-prefetch"
        thread.start()
    }

    /// The next batch of this epoch, or nil at its end. The batch stays valid until the following call.
    public func next() throws -> Batch? {
        guard epochRunning, nextStep < stepsPerEpoch else { return nil }
        let step = nextStep
        let slot = step % 2
        if prefetches {
            if step > 0 { free[(step - 1) % 2].signal() }
            guard filled[slot].wait(timeout: .now() + waitTimeoutSeconds) == .success else {
                throw TandemError(.timeout, "the input pipeline produced no batch for \(wholeSeconds(waitTimeoutSeconds)) s (step \(step + 1))")
            }
        } else {
            fill(slot: slot, step: step)
        }
        nextStep += 1
        return Batch(features: slots[slot].features.base, targets: slots[slot].targets.base, rows: perShardBatchSize, step: step,
                     exampleIndices: UnsafePointer(order.baseAddress! + firstRow(of: step)))
    }

    /// Ends the epoch early or normally: lets the producer run out and waits for it, so buffers are never shared.
    public func finishEpoch() {
        guard epochRunning else { return }
        epochRunning = false
        guard prefetches else { return }
        // Drain: release every slot until the producer has produced its last batch.
        while nextStep < stepsPerEpoch {
            if nextStep > 0 { free[(nextStep - 1) % 2].signal() }
            filled[nextStep % 2].wait()
            nextStep += 1
        }
        if nextStep > 0 { free[(nextStep - 1) % 2].signal() }
        producerFinished.wait()
        producerFinished.signal()
        // Reset the slot semaphores to "free" for the next epoch.
        for semaphore in free { while semaphore.wait(timeout: .now()) == .success {} }
        for semaphore in free { semaphore.signal() }
    }

    /// Where this shard's rows of global batch `step` start in the epoch's order.
    private func firstRow(of step: Int) -> Int { step * globalBatchSize + shardIndex * perShardBatchSize }

    private func fill(slot: Int, step: Int) {
        let first = firstRow(of: step)
        examples.gather(UnsafeBufferPointer(rebasing: order[first..<first + perShardBatchSize]), scaling: scaling,
                        features: slots[slot].features.base, targets: slots[slot].targets.base)
    }
}
