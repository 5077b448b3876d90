import TandemCore

/// Batch normalization over the last axis (channels of NHWC images, features of flat data), as Keras's
/// `BatchNormalization`: while training, each channel is normalized with the batch's mean and variance, then scaled
/// by `gamma` and shifted by `beta`; the moving mean and variance (`momentum`) are what evaluation and prediction use,
/// and they are saved in checkpoints.
///
/// `synchronized: true` (TensorFlow's `SyncBatchNormalization`, PyTorch's `SyncBatchNorm`) sums the batch
/// statistics over every replica of the step, forward and backward (one small collective each way), so N replicas
/// at a global batch B compute what one process computes at B. Unsynchronized, each replica normalizes with its
/// own rows, as TensorFlow does by default; the moving statistics are averaged over the replicas either way.
/// With reduction groups, synchronized, it keeps each group's sums apart and adds them in group order (see
/// ``LockstepGroups``), so any replica count computes the same bits.
///
/// ```swift
/// BatchNormalization(synchronized: true)
/// ```
public final class BatchNormalization: Layer, @unchecked Sendable {
    public let momentum: Float
    public let epsilon: Float
    public let synchronized: Bool
    public var synchronizesReplicas: Bool { synchronized }
    public private(set) var gamma = ArenaView(name: "gamma", offset: 0, shape: [0])
    public private(set) var beta = ArenaView(name: "beta", offset: 0, shape: [0])
    public private(set) var movingMean = ArenaView(name: "moving_mean", offset: 0, shape: [0])
    public private(set) var movingVariance = ArenaView(name: "moving_variance", offset: 0, shape: [0])
    private var channels = 0, positions = 0
    /// The batch's mean, 1/√(variance + ε) and variance per channel, from forward for backward.
    private var mean = FlatArena(count: 0), inverseDeviation = FlatArena(count: 0), variance = FlatArena(count: 0)
    /// Sums sent to the other replicas: [Σ, Σ², count] forward, [Σdy, Σdy·x̂] backward.
    private var sums = FlatArena(count: 0)
    /// Where a pass adds up its own rows, in double (preallocated: no allocation per step).
    private var accumulators = UnsafeMutableBufferPointer<Double>.allocate(capacity: 0)
    /// In a lockstep pass: every reduction group's sums in its own slot, this replica's filled in and the others'
    /// zero, so the sum across replicas only fills the slots and adds no two sums (sized on the first such pass).
    private var groupSums = FlatArena(count: 0)

    public init(momentum: Float = 0.99, epsilon: Float = 1e-3, synchronized: Bool = false) {
        self.momentum = momentum
        self.epsilon = epsilon
        self.synchronized = synchronized
    }

    public var specification: ModelSpec.Layer {
        ModelSpec.Layer(type: "batch_normalization", momentum: momentum == 0.99 ? nil : momentum,
                        epsilon: epsilon == 1e-3 ? nil : epsilon, synchronized: synchronized ? true : nil)
    }
    public var activation: Activation { .identity }

    public func build(name: String, inputShape: [Int], layout: inout ArenaLayout) throws -> [Int] {
        guard let last = inputShape.last, last > 0, inputShape.allSatisfy({ $0 > 0 }) else {
            throw TandemError(.badConfig, "\(name) (BatchNormalization) needs a non-empty input, found \(inputShape)")
        }
        guard momentum >= 0, momentum < 1, epsilon > 0 else {
            throw TandemError(.badConfig, "\(name) (BatchNormalization): momentum must be in [0, 1) and epsilon positive, found \(momentum) and \(epsilon)")
        }
        channels = last
        positions = SaturatingSize.product(inputShape.dropLast())
        gamma = layout.parameter("\(name)/gamma", shape: [channels])
        beta = layout.parameter("\(name)/beta", shape: [channels])
        movingMean = layout.statistic("\(name)/moving_mean", shape: [channels])
        movingVariance = layout.statistic("\(name)/moving_variance", shape: [channels])
        mean = FlatArena(count: channels)
        inverseDeviation = FlatArena(count: channels)
        variance = FlatArena(count: channels)
        sums = FlatArena(count: 2 * channels + 1)
        accumulators.deallocate()
        accumulators = .allocate(capacity: 2 * channels)
        return inputShape
    }

    deinit { accumulators.deallocate() }

    public var parameterViews: [ArenaView] { [gamma, beta, movingMean, movingVariance] }

    /// gamma 1, beta 0, moving mean 0, moving variance 1 (Keras's defaults).
    public func initializeParameters(_ parameters: UnsafeMutablePointer<Float>, generator: inout SeededGenerator) {
        (parameters + gamma.offset).update(repeating: 1, count: channels)
        (parameters + beta.offset).update(repeating: 0, count: channels)
        (parameters + movingMean.offset).update(repeating: 0, count: channels)
        (parameters + movingVariance.offset).update(repeating: 1, count: channels)
    }

    private func sumsAcrossReplicas(_ count: Int, _ context: LayerContext) throws {
        guard synchronized, let replicas = context.replicas, replicas.replicaCount > 1 else { return }
        try replicas.sumAcrossReplicas(sums.base, count: count)
    }

    public func forward(parameters: UnsafePointer<Float>, input: UnsafePointer<Float>, output: UnsafeMutablePointer<Float>,
                        rows: Int, context: LayerContext) throws {
        let c = channels, n = rows * positions
        let g = parameters + gamma.offset, b = parameters + beta.offset
        guard context.training else {
            let mm = parameters + movingMean.offset, mv = parameters + movingVariance.offset
            for k in 0..<c { mean[k] = mm[k]; inverseDeviation[k] = 1 / (mv[k] + epsilon).squareRoot() }
            normalize(input, output, count: n, gamma: g, beta: b)
            return
        }
        // Sums of x − moving mean (the same shift on every replica), in double, so E[x²] − E[x]² loses little.
        let shift = parameters + movingMean.offset
        let count: Float
        if synchronized, let groups = context.groups {
            let perGroup = groups.rowsPerGroup * positions, slots = clearedGroupSlots(groups)
            for group in 0..<groups.localCount {
                addShiftedSums(input + group * perGroup * c, count: perGroup, shift: shift)
                storeAccumulators(into: slots + group * 2 * c)
            }
            try addUpGroups(groups, context)
            count = Float(perGroup * groups.totalCount)
        } else {
            addShiftedSums(input, count: n, shift: shift)
            storeAccumulators(into: sums.base)
            sums[2 * c] = Float(n)
            try sumsAcrossReplicas(2 * c + 1, context)
            count = sums[2 * c]
        }
        for k in 0..<c {
            let shifted = sums[k] / count
            mean[k] = shift[k] + shifted
            variance[k] = max(sums[c + k] / count - shifted * shifted, 0)
            inverseDeviation[k] = 1 / (variance[k] + epsilon).squareRoot()
        }
        normalize(input, output, count: n, gamma: g, beta: b)
    }

    /// accumulators ← Σ (x − shift) and Σ (x − shift)² per channel over `count` positions of `input`, in double.
    private func addShiftedSums(_ input: UnsafePointer<Float>, count n: Int, shift: UnsafePointer<Float>) {
        let c = channels, local = accumulators.baseAddress!
        local.update(repeating: 0, count: 2 * c)
        for p in 0..<n {
            let x = input + p * c
            for k in 0..<c {
                let d = Double(x[k] - shift[k])
                local[k] += d
                local[c + k] += d * d
            }
        }
    }

    private func storeAccumulators(into slot: UnsafeMutablePointer<Float>) {
        for k in 0..<2 * channels { slot[k] = Float(accumulators[k]) }
    }

    /// Zeroes every group's slot of `groupSums` and returns this replica's first group's; its local groups' slots
    /// follow it, 2 · channels floats each.
    private func clearedGroupSlots(_ groups: LockstepGroups) -> UnsafeMutablePointer<Float> {
        let width = 2 * channels, total = groups.totalCount * width
        if groupSums.count < total { groupSums = FlatArena(count: total) }
        groupSums.base.update(repeating: 0, count: total)
        return groupSums.base + groups.firstGroup * width
    }

    /// The first 2 · channels floats of `sums` ← the sum of every group's slot, added in group order once the
    /// replicas have filled in theirs. A collective (when there are several replicas).
    private func addUpGroups(_ groups: LockstepGroups, _ context: LayerContext) throws {
        let width = 2 * channels, total = groups.totalCount * width
        if let replicas = context.replicas, replicas.replicaCount > 1 {
            try replicas.sumAcrossReplicas(groupSums.base, count: total)
        }
        for k in 0..<width {
            var sum = 0.0
            for group in 0..<groups.totalCount { sum += Double(groupSums[group * width + k]) }
            sums[k] = Float(sum)
        }
    }

    /// y = γ · (x − mean) / σ + β with this pass's mean and σ.
    private func normalize(_ input: UnsafePointer<Float>, _ output: UnsafeMutablePointer<Float>, count n: Int,
                           gamma g: UnsafePointer<Float>, beta b: UnsafePointer<Float>) {
        let c = channels, mu = mean.base, inv = inverseDeviation.base
        for p in 0..<n {
            let x = input + p * c, y = output + p * c
            for k in 0..<c { y[k] = g[k] * (x[k] - mu[k]) * inv[k] + b[k] }
        }
    }

    public func backward(parameters: UnsafePointer<Float>, gradients: UnsafeMutablePointer<Float>,
                         input: UnsafePointer<Float>, output: UnsafePointer<Float>, dOutput: UnsafeMutablePointer<Float>,
                         dInput: UnsafeMutablePointer<Float>?, rows: Int, activationIsFused: Bool, context: LayerContext) throws {
        let c = channels, n = rows * positions
        var count = Float(n)
        if synchronized, let groups = context.groups {
            // Each group's parameter gradients go to its own buffer; dInput needs the sums over every group.
            let perGroup = groups.rowsPerGroup * positions, slots = clearedGroupSlots(groups)
            for group in 0..<groups.localCount {
                addParameterGradients(input + group * perGroup * c, dOutput + group * perGroup * c, count: perGroup,
                                      rows: groups.rowsPerGroup, globalRows: context.globalRows,
                                      parameters: parameters, gradients: groups.gradients[group])
                storeAccumulators(into: slots + group * 2 * c)
            }
            guard dInput != nil else { return }
            try addUpGroups(groups, context)
            count = Float(perGroup * groups.totalCount)
        } else {
            addParameterGradients(input, dOutput, count: n, rows: rows, globalRows: context.globalRows,
                                  parameters: parameters, gradients: gradients)
            storeAccumulators(into: sums.base)
            if dInput != nil, synchronized, let replicas = context.replicas, replicas.replicaCount > 1 {
                sums[2 * c] = count
                try sumsAcrossReplicas(2 * c + 1, context)
                count = sums[2 * c]
            }
        }
        guard let dInput else { return }
        let mu = mean.base, inv = inverseDeviation.base
        let g = parameters + gamma.offset
        for p in 0..<n {
            let x = input + p * c, dy = dOutput + p * c, dx = dInput + p * c
            for k in 0..<c {
                let xhat = (x[k] - mu[k]) * inv[k]
                dx[k] = g[k] * inv[k] * (dy[k] - sums[k] / count - xhat * sums[c + k] / count)
            }
        }
    }

    /// Adds `rows` rows' gradients of γ and β (Σ dy · x̂ and Σ dy over their `count` positions, left in
    /// `accumulators` as [Σ dy, Σ dy · x̂] in double) and their share of the moving statistics' change into
    /// `gradients`. The change rides in the statistics' gradient slots (see ArenaLayout): the rows' share of
    /// (1 − momentum) · (moving − batch), which the optimizer subtracts once every replica's share is summed.
    private func addParameterGradients(_ input: UnsafePointer<Float>, _ dOutput: UnsafePointer<Float>, count n: Int, rows: Int,
                                       globalRows: Int, parameters: UnsafePointer<Float>, gradients: UnsafeMutablePointer<Float>) {
        let c = channels, mu = mean.base, inv = inverseDeviation.base
        let share = Float(rows) / Float(max(globalRows, rows)) * (1 - momentum)
        for k in 0..<c {
            gradients[movingMean.offset + k] += share * (parameters[movingMean.offset + k] - mu[k])
            gradients[movingVariance.offset + k] += share * (parameters[movingVariance.offset + k] - variance[k])
        }
        let local = accumulators.baseAddress!
        local.update(repeating: 0, count: 2 * c)
        for p in 0..<n {
            let x = input + p * c, dy = dOutput + p * c
            for k in 0..<c {
                local[k] += Double(dy[k])
                local[c + k] += Double(dy[k] * (x[k] - mu[k]) * inv[k])
            }
        }
        for k in 0..<c {
            gradients[beta.offset + k] += Float(local[k])
            gradients[gamma.offset + k] += Float(local[c + k])
        }
    }
}
