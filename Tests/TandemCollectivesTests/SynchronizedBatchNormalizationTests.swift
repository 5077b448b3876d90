import Foundation
import TandemCollectives
import TandemCore
import TandemNN
import Testing

/// Synchronized batch normalization across replica threads computes what one process computes on the whole batch.
struct SynchronizedBatchNormalizationTests {
    static let rows = 32
    static let inputShape = [14, 14, 1]
    static let features = inputShape.reduce(1, *)
    static let input = (0..<rows * features).map { Float(max(0, sin(Double($0) * 0.37) * 1.3 + 0.2)) }
    static let labels: [Float] = (0..<rows).map { Float($0 * 7 % 3) }

    static func model(synchronized: Bool) throws -> Sequential {
        try Sequential(inputShape: inputShape, seed: 3, maxBatchSize: rows) {
            Conv2D(8, kernelSize: 3, activation: .relu)
            BatchNormalization(synchronized: synchronized)
            MaxPool2D(poolSize: 2)
            Conv2D(8, kernelSize: 3, activation: .relu)
            BatchNormalization(synchronized: synchronized)
            Flatten()
            Dense(3, activation: .softmax)
        }
    }

    /// The gradient (and statistics' change) of one step: one process on all rows, or `replicas` threads on a slice
    /// each, summed with an all-reduce.
    static func gradient(replicas: Int, synchronized: Bool) throws -> [Float] {
        let share = rows / replicas
        let results = try ThreadReplicas.run(count: replicas, timeoutSeconds: 30) { replica, communicator -> [Float] in
            let model = try model(synchronized: synchronized)
            model.gradients.zero()
            let context = LayerContext(training: true, globalRows: rows, replicas: communicator)
            _ = try input.withUnsafeBufferPointer { x in
                try labels.withUnsafeBufferPointer { y in
                    try model.accumulateGradient(of: .sparseCategoricalCrossentropy, features: x.baseAddress! + replica * share * features,
                                                 targets: y.baseAddress! + replica * share, rows: share,
                                                 gradientScale: 1 / Float(rows), context: context)
                }
            }
            try communicator.allreduceSum(model.gradients.base, count: model.parameterCount)
            return Array(UnsafeBufferPointer(start: model.gradients.base, count: model.parameterCount))
        }
        return results
    }

    @Test(arguments: [2, 4])
    func replicasComputeWhatOneProcessComputes(replicas: Int) throws {
        let single = try Self.gradient(replicas: 1, synchronized: true)
        let synchronized = try Self.gradient(replicas: replicas, synchronized: true)
        // The replicas add their partial sums in another order than one process adds its rows: float32 rounding
        // of sums over thousands of values (measured here: at most 4.1e-6 on gradients of order 1).
        let worst = zip(single, synchronized).map { abs($0 - $1) }.max()!
        #expect(worst < 2e-5, "\(replicas) synchronized replicas differ by \(worst) from one process")
        // Without synchronization each replica normalizes with its own rows: a different gradient (the check above
        // is not vacuous).
        let local = try Self.gradient(replicas: replicas, synchronized: false)
        #expect(zip(single, local).map { abs($0 - $1) }.max()! > 1e-3)
    }

    /// Each of 4 reduction groups' gradients in a lockstep pass, in group order, on `replicas` threads that share the
    /// groups out.
    static func groupGradients(replicas: Int, groups: Int = 4) throws -> [[Float]] {
        let local = groups / replicas, rowsPerGroup = rows / groups
        let perReplica = try ThreadReplicas.run(count: replicas, timeoutSeconds: 30) { replica, communicator -> [Float] in
            let model = try model(synchronized: true)
            let buffers = (0..<local).map { _ in FlatArena(count: model.parameterCount) }
            let pointers = UnsafeMutableBufferPointer<UnsafeMutablePointer<Float>>.allocate(capacity: local)
            defer { pointers.deallocate() }
            for group in 0..<local { pointers[group] = buffers[group].base }
            var context = LayerContext(training: true, globalRows: rows, replicas: communicator)
            context.groups = LockstepGroups(rowsPerGroup: rowsPerGroup, localCount: local, firstGroup: replica * local,
                                            totalCount: groups, gradients: UnsafePointer(pointers.baseAddress!))
            let first = replica * local * rowsPerGroup
            try input.withUnsafeBufferPointer { x in
                try labels.withUnsafeBufferPointer { y in
                    let output = try model.forward(x.baseAddress! + first * features, rows: local * rowsPerGroup, context: context)
                    for group in 0..<local {
                        let at = group * rowsPerGroup * model.outputSize
                        _ = Loss.sparseCategoricalCrossentropy.compute(
                            outputs: output + at, targets: y.baseAddress! + first + group * rowsPerGroup, rows: rowsPerGroup,
                            columns: model.outputSize, dOutputs: model.dOutput + at, gradientScale: 1 / Float(rows))
                    }
                    try model.backward(lossFusesLastActivation: true)
                }
            }
            // Replica 0's result is the one returned: it gathers every replica's groups, in replica order.
            let mine = buffers.flatMap { Array(UnsafeBufferPointer(start: $0.base, count: model.parameterCount)) }
            let gathered = try communicator.allgather(mine.withUnsafeBytes { Array($0) })
            return gathered.flatMap { bytes in
                bytes.withUnsafeBytes { raw in Array(raw.bindMemory(to: Float.self)) }
            }
        }
        let count = perReplica.count / groups
        return (0..<groups).map { Array(perReplica[$0 * count ..< ($0 + 1) * count]) }
    }

    /// With reduction groups the replicas' groups go through the layers in lockstep, and synchronized batch
    /// normalization adds the groups' sums in group order: every group's gradient is the same bits on 1, 2 and 4
    /// replicas (the reducer's fixed tree then gives the same sum), and together they are the whole batch's gradient.
    @Test func lockstepGroupsComputeTheSameBitsOnAnyReplicaCount() throws {
        let one = try Self.groupGradients(replicas: 1)
        for replicas in [2, 4] {
            #expect(try Self.groupGradients(replicas: replicas) == one, "\(replicas) replicas")
        }
        let whole = try Self.gradient(replicas: 1, synchronized: true)
        let summed = (0..<whole.count).map { i in one.reduce(0) { $0 + $1[i] } }
        let worst = zip(whole, summed).map { abs($0 - $1) }.max()!
        #expect(worst < 2e-5, "the groups' gradients add up to \(worst) away from the whole batch's")
    }
}
