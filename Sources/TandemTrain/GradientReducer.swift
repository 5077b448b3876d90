import TandemCollectives
import TandemCore
import TandemData

/// Distributes a training loop you write yourself — the Swift counterpart of TensorFlow's `strategy.run` +
/// `strategy.reduce` and of Horovod's `DistributedGradientTape` + `broadcast_variables`. One reducer per replica
/// (inside `strategy.run`): it broadcasts rank 0's parameters and optimizer state, hands out this replica's rows
/// of every global batch, sums the gradient arena with every other replica's in one collective, and sums metrics.
///
/// Gradients live in one flat arena, so the sum is one call on one buffer — fused, or in buckets, or as bf16 when
/// the strategy's communicator says so. With `reductionGroups` G, every global batch is cut into G fixed groups
/// whose gradients are computed apart and summed in one fixed binary tree, so any replica count that divides G
/// trains bit-identically (see `groups(of:)`).
///
/// ```swift
/// try strategy.run { communicator in
///     let reducer = try GradientReducer(communicator: communicator, parameters: variables.parameters,
///                                       gradients: variables.gradients)
///     try reducer.broadcastParameters()
///     let batches = try reducer.batches(of: data.train, scaling: data.scaling, globalBatchSize: 128, seed: 1)
///     batches.startEpoch(0)
///     while let batch = try batches.next() {
///         variables.zeroGradients()
///         // forward and backward on `batch`, the loss scaled by 1 / 128 (the global batch)
///         try reducer.reduce()
///         // apply the summed gradients
///     }
///     batches.finishEpoch()
/// }
/// ```
public final class GradientReducer {
    public let communicator: Communicator
    public let parameters: FlatArena
    public let gradients: FlatArena
    /// Groups per global batch (nil: one fused sum in whatever order the collective chooses).
    public let reductionGroups: Int?
    /// With more than one group on this replica, a gradient buffer of the arena's layout for each.
    private let groupGradients: [FlatArena]
    /// How many reduction groups this replica computes per batch (1 without reduction groups): group g of a batch
    /// of `rows` rows is rows `g * rows / localGroups ..< (g + 1) * rows / localGroups`. Compute each group's
    /// gradient apart — zero the gradient arena, forward and backward on its rows — and hand it over with
    /// `collect(group:)` before the next group.
    public let localGroups: Int
    /// Each local group's gradient buffer, by group (see `gradient(ofGroup:)`): what a pass that runs the groups
    /// together is given (`LockstepGroups.gradients`).
    public let groupGradientBases: UnsafeMutableBufferPointer<UnsafeMutablePointer<Float>>

    public var rank: Int { communicator.rank }
    public var size: Int { communicator.size }
    /// Whether this is replica 0: the one that prints and writes.
    public var isChief: Bool { communicator.rank == 0 }

    /// - Parameters:
    ///   - parameters, gradients: the loop's parameter arena and its gradient arena (same layout; the gradient
    ///     arena may be longer — a loss or metric tail summed with it).
    ///   - reductionGroups: a power of two that the replica count divides, or nil.
    public init(communicator: Communicator, parameters: FlatArena, gradients: FlatArena, reductionGroups: Int? = nil) throws {
        guard gradients.count >= parameters.count else {
            throw TandemError(.usage, "the gradient arena (\(gradients.count) floats) is shorter than the parameters (\(parameters.count))")
        }
        if let groups = reductionGroups {
            guard groups >= 1, groups & (groups - 1) == 0, groups % communicator.size == 0 else {
                throw TandemError(.usage, "reduction groups must be a power of two that the \(communicator.size) replicas divide, found \(groups)")
            }
            try MemoryBudget.require(floats: SaturatingSize.product(groups / communicator.size, gradients.count),
                                     for: "reduction groups: \(groups / communicator.size) gradient buffers of \(gradients.count) floats")
        }
        self.communicator = communicator
        self.parameters = parameters
        self.gradients = gradients
        self.reductionGroups = reductionGroups
        localGroups = reductionGroups.map { $0 / communicator.size } ?? 1
        groupGradients = localGroups > 1 ? (0..<localGroups).map { _ in FlatArena(count: gradients.count) } : []
        groupGradientBases = .allocate(capacity: localGroups)
        _ = groupGradientBases.initialize(from: groupGradients.isEmpty ? [gradients.base] : groupGradients.map(\.base))
    }

    deinit { groupGradientBases.deallocate() }

    /// Replaces every replica's parameters (and each of `state`, e.g. optimizer moments) with rank 0's, then checks
    /// that every replica holds the same bits: call before the first step.
    public func broadcastParameters(andState state: [FlatArena] = []) throws {
        guard size > 1 else { return }
        for arena in [parameters] + state {
            try communicator.broadcast(arena.base, count: arena.count, root: 0)
        }
        try communicator.requireSameBits(in: [parameters] + state, after: "the broadcast of the parameters")
    }

    /// This replica's rows of every global batch of `examples` (each replica gets `globalBatchSize / size` rows
    /// of the same shuffled global batch), converted with `scaling` and prefetched: call `startEpoch(e)`, then
    /// `next()` until nil, then `finishEpoch()`.
    public func batches(of examples: Examples, rows: [Int32]? = nil, scaling: FeatureScaling, globalBatchSize: Int,
                        seed: UInt64) throws -> BatchPipeline {
        try BatchPipeline(examples: examples, rows: rows, scaling: scaling, globalBatchSize: globalBatchSize,
                          shard: (size, rank), seed: seed)
    }

    /// Keeps the gradient arena's content as group `group`'s gradient (nothing to keep with one group).
    public func collect(group: Int) {
        guard !groupGradients.isEmpty else { return }
        groupGradients[group].copy(from: gradients)
    }

    /// Where group `group`'s gradient is kept until `reduce()`: a buffer of the arena's layout (the arena itself
    /// with one group per replica). A loop that computes each group's gradient straight into it — the trainer does
    /// — skips `collect(group:)`'s copy.
    public func gradient(ofGroup group: Int) -> UnsafeMutablePointer<Float> { groupGradientBases[group] }

    /// Sums the gradient arena over every replica, in place: after it, every replica holds the same sum. With
    /// reduction groups, first this replica's groups in a fixed binary tree, then across replicas in rank order.
    /// `exactTail`: the last floats of the arena (a loss or hit count) stay float32 even with bf16 gradients.
    public func reduce(exactTail: Int = 0) throws {
        if reductionGroups != nil {
            if !groupGradients.isEmpty {
                fixedTreeSum(count: localGroups, elements: 0..<gradients.count) { groupGradients[$0].base }
                gradients.copy(from: groupGradients[0])
            }
            try communicator.treeAllreduceSum(gradients.base, count: gradients.count)
        } else {
            try communicator.allreduceGradients(gradients.base, count: gradients.count, exactTail: exactTail)
        }
    }

    /// Sums `values` (a loss, a hit count) over every replica, in place: metric reduction.
    public func sum(_ values: UnsafeMutableBufferPointer<Float>) throws {
        try communicator.allreduceSum(values.baseAddress!, count: values.count)
    }
}
