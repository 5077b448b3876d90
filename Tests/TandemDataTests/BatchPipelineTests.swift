import Foundation
import TandemCore
import TandemData
import TandemTestSupport
import Testing

/// One batch copied out of the pipeline's buffers.
struct CopiedBatch: Equatable {
    let step: Int
    let features: [Float]
    let targets: [Float]
}

extension BatchPipeline {
    /// Every batch of `epoch`.
    func epoch(_ epoch: Int) throws -> [CopiedBatch] {
        startEpoch(epoch)
        defer { finishEpoch() }
        var batches: [CopiedBatch] = []
        while let batch = try next() {
            batches.append(CopiedBatch(
                step: batch.step,
                features: Array(UnsafeBufferPointer(start: batch.features, count: batch.rows * examples.featureCount)),
                targets: Array(UnsafeBufferPointer(start: batch.targets, count: batch.rows * examples.targetWidth))))
        }
        return batches
    }
}

/// Examples whose row i has features (i, 1000 + i) and target i, so every batch row says which example it is.
func numberedExamples(_ count: Int) throws -> Examples {
    try Examples(features: .floats((0..<count).flatMap { [Float($0), Float(1000 + $0)] }), featureCount: 2,
                 targets: (0..<count).map(Float.init))
}

@Suite struct BatchPipelineTests {
    static let rows = 103, batch = 12
    static let scaling = FeatureScaling(scale: [2, 0.5], shift: [1, -500])

    static func pipeline(shards: Int = 1, index: Int = 0, seed: UInt64 = 1, prefetches: Bool = true,
                         shuffles: Bool = true, rows: [Int32]? = nil) throws -> BatchPipeline {
        try BatchPipeline(examples: numberedExamples(Self.rows), rows: rows, scaling: scaling, globalBatchSize: batch,
                          shard: (shards, index), seed: seed, shuffles: shuffles, prefetches: prefetches)
    }

    @Test func batchesCarryScaledFeaturesOfTheirTargets() throws {
        let batches = try Self.pipeline().epoch(0)
        #expect(batches.count == 8)  // ⌊103 / 12⌋, the incomplete last batch dropped
        #expect(batches.map(\.step) == Array(0..<8))
        var seen = Set<Float>()
        for batch in batches {
            #expect(batch.targets.count == 12)
            for (r, target) in batch.targets.enumerated() {
                #expect(batch.features[2 * r] == target * 2 + 1)
                #expect(batch.features[2 * r + 1] == (1000 + target) * 0.5 - 500)
                seen.insert(target)
            }
        }
        #expect(seen.count == 96, "an epoch must not repeat a row")
    }

    @Test func withoutShufflingRowsComeInOrder() throws {
        let batches = try Self.pipeline(shuffles: false).epoch(5)
        for (s, batch) in batches.enumerated() { #expect(batch.targets == (s * 12..<(s + 1) * 12).map(Float.init)) }
    }

    @Test func drawsOnlyFromTheGivenRows() throws {
        let even = (0..<51).map { Int32($0 * 2) }
        let pipeline = try Self.pipeline(rows: even)
        #expect(pipeline.stepsPerEpoch == 4)
        let targets = try pipeline.epoch(0).flatMap(\.targets)
        #expect(targets.count == 48 && Set(targets).count == 48)
        #expect(targets.allSatisfy { Int($0) % 2 == 0 })
    }

    @Test(arguments: [1, 2, 3])
    func shardsSplitEveryGlobalBatch(shards: Int) throws {
        let single = try Self.pipeline().epoch(2)
        let parts = try (0..<shards).map { try Self.pipeline(shards: shards, index: $0).epoch(2) }
        for (index, part) in parts.enumerated() {
            #expect(part.count == single.count, "shard \(index) of \(shards) has \(part.count) steps")
        }
        for step in 0..<single.count {
            let slices = parts.map { $0[step].targets }
            #expect(slices.allSatisfy { $0.count == 12 / shards })
            // Disjoint, and in shard order exactly the single-process global batch (features too).
            #expect(Set(slices.flatMap { $0 }).count == 12)
            #expect(slices.flatMap { $0 } == single[step].targets)
            #expect(parts.flatMap { $0[step].features } == single[step].features)
        }
    }

    @Test func stepsPerEpochIsTheSameOnEveryShard() throws {
        for shards in [1, 2, 3, 4, 6] {
            for index in 0..<shards {
                let pipeline = try Self.pipeline(shards: shards, index: index)
                #expect(pipeline.stepsPerEpoch == 8 && pipeline.perShardBatchSize == 12 / shards)
            }
        }
    }

    @Test func orderDependsOnlyOnSeedAndEpoch() throws {
        let first = try Self.pipeline()
        let epochs = try (0..<4).map { try first.epoch($0) }
        // A new pipeline (a resumed run) starting at epoch 3 sees what the old one saw.
        let resumed = try Self.pipeline()
        #expect(try resumed.epoch(3) == epochs[3])
        #expect(try resumed.epoch(0) == epochs[0])
        for a in 0..<4 { for b in a + 1..<4 { #expect(epochs[a] != epochs[b], "epochs \(a) and \(b) are identical") } }
        #expect(try Self.pipeline(seed: 2).epoch(0) != epochs[0])
    }

    @Test func prefetchingChangesNothing() throws {
        let eager = try Self.pipeline(shards: 3, index: 1, prefetches: true)
        let lazy = try Self.pipeline(shards: 3, index: 1, prefetches: false)
        for epoch in 0..<5 { #expect(try eager.epoch(epoch) == lazy.epoch(epoch)) }
    }

    @Test func finishingAnEpochEarlyThenStartingAnother() throws {
        let reference = try Self.pipeline(prefetches: false)
        let expected1 = try reference.epoch(1), expected2 = try reference.epoch(2)
        let pipeline = try Self.pipeline(prefetches: true)
        let outcome = Outcome()
        let finished = finishes {
            do {
                pipeline.startEpoch(0)
                _ = try pipeline.next()
                _ = try pipeline.next()
                pipeline.finishEpoch()
                outcome.afterFinish = try pipeline.next() == nil
                pipeline.finishEpoch()  // twice is harmless
                outcome.epoch1 = try pipeline.epoch(1)
                // startEpoch in the middle of an epoch ends it first.
                pipeline.startEpoch(1)
                _ = try pipeline.next()
                outcome.epoch2 = try pipeline.epoch(2)
                // Finishing right after starting, before any batch was taken.
                pipeline.startEpoch(3)
                pipeline.finishEpoch()
                outcome.epoch2Again = try pipeline.epoch(2)
            } catch {
                outcome.error = error
            }
        }
        try #require(finished, "the pipeline deadlocked")
        #expect(outcome.error == nil)
        #expect(outcome.afterFinish)
        #expect(outcome.epoch1 == expected1)
        #expect(outcome.epoch2 == expected2)
        #expect(outcome.epoch2Again == expected2)
    }

    final class Outcome: @unchecked Sendable {
        var afterFinish = false
        var epoch1: [CopiedBatch] = [], epoch2: [CopiedBatch] = [], epoch2Again: [CopiedBatch] = []
        var error: Error?
    }

    @Test func nextOutsideAnEpochReturnsNil() throws {
        let pipeline = try Self.pipeline()
        #expect(try pipeline.next() == nil)
        _ = try pipeline.epoch(0)
        #expect(try pipeline.next() == nil)
    }

    @Test func batchThatDoesNotDivideAmongShardsThrows() throws {
        expectTandemError(.badConfig, mentioning: ["batch_size 12", "5 replicas"]) {
            _ = try BatchPipeline(examples: numberedExamples(50), scaling: .identity(features: 2), globalBatchSize: 12,
                                  shard: (5, 0), seed: 0)
        }
    }

    @Test func otherInvalidPipelines() throws {
        let examples = try numberedExamples(10)
        expectTandemError(.badConfig, mentioning: ["batch_size 11", "10"]) {
            _ = try BatchPipeline(examples: examples, scaling: .identity(features: 2), globalBatchSize: 11, seed: 0)
        }
        expectTandemError(.badConfig, mentioning: ["batch_size"]) {
            _ = try BatchPipeline(examples: examples, scaling: .identity(features: 2), globalBatchSize: 0, seed: 0)
        }
        expectTandemError(.usage, mentioning: ["shard index 2"]) {
            _ = try BatchPipeline(examples: examples, scaling: .identity(features: 2), globalBatchSize: 4, shard: (2, 2), seed: 0)
        }
    }
}
