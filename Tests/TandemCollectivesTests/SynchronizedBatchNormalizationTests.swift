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
}
