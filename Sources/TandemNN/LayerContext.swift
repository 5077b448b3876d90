import TandemCore

/// What a forward or backward pass is for, beyond its rows: training or inference, which examples the rows are
/// (dropout draws its masks from them), and the replicas a synchronized layer reduces with.
public struct LayerContext {
    /// Training (dropout drops, batch normalization uses and updates batch statistics) or inference.
    public var training: Bool
    /// The run's seed and the 0-based epoch: with `exampleIndices`, what a dropout mask depends on.
    public var seed: UInt64
    public var epoch: Int
    /// Each row's index in the data set (nil: the rows' places in the step, `firstRow`, `firstRow` + 1, ...).
    public var exampleIndices: UnsafePointer<Int32>?
    /// Rows of the whole step across every replica (and reduction group): the weight of these rows' contribution to
    /// statistics a layer keeps (moving averages), as the loss weights their gradients.
    public var globalRows: Int
    /// The replicas a synchronized layer sums its statistics with (nil: this replica's rows alone).
    public var replicas: (any ReplicaSum)?
    /// Where these rows start among the rows of this replica's step (a reduction group's slice): a layer keeps what
    /// it needs from forward for backward per row (dropout masks, pooling windows) at this row of its buffers, so
    /// the groups of a lockstep pass (`groups`) do not overwrite each other's.
    public var firstRow = 0
    /// Set when this replica's reduction groups run through the layers in lockstep (a model with synchronized
    /// batch normalization and reduction groups): see ``LockstepGroups``.
    public var groups: LockstepGroups?

    public init(training: Bool, seed: UInt64 = 0, epoch: Int = 0, exampleIndices: UnsafePointer<Int32>? = nil,
                globalRows: Int, replicas: (any ReplicaSum)? = nil) {
        self.training = training
        self.seed = seed
        self.epoch = epoch
        self.exampleIndices = exampleIndices
        self.globalRows = globalRows
        self.replicas = replicas
    }

    /// Evaluation and prediction: no dropout, moving statistics, no collective.
    public static var inference: LayerContext { LayerContext(training: false, globalRows: 1) }

    /// The data-set index of row `row`.
    @inline(__always)
    public func exampleIndex(_ row: Int) -> Int { exampleIndices.map { Int($0[row]) } ?? firstRow + row }

    /// The context of rows `start...` of this one (a reduction group's slice of the batch).
    public func rows(from start: Int) -> LayerContext {
        var slice = self
        slice.exampleIndices = exampleIndices.map { $0 + start }
        slice.firstRow += start
        return slice
    }
}

/// A replica's reduction groups going through the layers together, layer by layer, so that a synchronized layer can
/// combine every group's statistics before any group goes on. `Sequential` runs every other layer once per group,
/// on the group's slice of the rows and into the group's gradient buffer, as if the group were alone; a layer that
/// synchronizes replicas runs once on all of this replica's rows and keeps each group's sums apart, then adds the
/// groups' sums in group order — the same order on every layout, so N replicas compute the same bits as one.
public struct LockstepGroups {
    /// Rows of each group; this replica's rows are its groups' slices, one after another.
    public var rowsPerGroup: Int
    /// Groups on this replica, and the index among all groups of its first one.
    public var localCount: Int
    public var firstGroup: Int
    /// Groups across every replica.
    public var totalCount: Int
    /// gradients[g]: where local group g's parameter gradients accumulate (buffers of the gradient arena's layout).
    public var gradients: UnsafePointer<UnsafeMutablePointer<Float>>

    public init(rowsPerGroup: Int, localCount: Int, firstGroup: Int, totalCount: Int, gradients: UnsafePointer<UnsafeMutablePointer<Float>>) {
        self.rowsPerGroup = rowsPerGroup
        self.localCount = localCount
        self.firstGroup = firstGroup
        self.totalCount = totalCount
        self.gradients = gradients
    }
}

/// Where a model's layers take their tensors: trainable parameters (what the optimizer updates) first, in layer
/// order, then statistics (moving averages a layer updates itself). Both live in the one parameter arena; a
/// statistic's slot in the gradient arena carries the step's change to it, so the gradient all-reduce also
/// averages the statistics across replicas, and the optimizer subtracts that change as it is.
public struct ArenaLayout: Sendable {
    /// Floats taken so far by trainable parameters and by statistics.
    public private(set) var trainableCount = 0
    public private(set) var statisticsCount = 0
    /// Where statistics start: after every trainable parameter of the model (known on the second pass).
    let statisticsBase: Int

    public init(statisticsBase: Int) { self.statisticsBase = statisticsBase }

    /// A trainable tensor named `name` of `shape`.
    public mutating func parameter(_ name: String, shape: [Int]) -> ArenaView {
        defer { trainableCount = SaturatingSize.sum([trainableCount, SaturatingSize.product(shape)]) }
        return ArenaView(name: name, offset: trainableCount, shape: shape)
    }

    /// A statistic named `name` of `shape` (not trained; see the type's comment).
    public mutating func statistic(_ name: String, shape: [Int]) -> ArenaView {
        defer { statisticsCount = SaturatingSize.sum([statisticsCount, SaturatingSize.product(shape)]) }
        return ArenaView(name: name, offset: statisticsBase + statisticsCount, shape: shape)
    }
}
