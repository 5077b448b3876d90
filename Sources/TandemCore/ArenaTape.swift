/// Reverse-mode automatic differentiation for a training loop that runs thousands of steps: the variables live in a
/// `ParameterArena`, and each step's recording goes into storage the tape keeps, so a steady-state step allocates
/// nothing.
///
/// Every operation computes its output into the tape's scratch space and appends one record — an operation and the
/// indices of its operands, a value type — to an array whose capacity survives `reset()`. `backward(from:)` walks
/// those records in reverse (the summation order is fixed by the program) and accumulates into the arena's gradient
/// buffer, so zeroing every gradient is one memset and a strategy sums them with one collective. Activations are
/// sized by the first steps and reused; a larger batch later grows the scratch space once.
///
/// Values are matrices (a vector of n is 1 × n, a scalar 1 × 1). Inputs given as pointers are used in place, not
/// copied: they must stay valid until the backward pass. `GradientTape` is the Tensor-valued tape for small
/// programs; this one is for loops where speed matters.
///
/// ```swift
/// let tape = ArenaTape(variables: variables)
/// for batch in batches {
///     tape.reset()
///     let images = tape.constant(batch.features, rows: batch.rows, columns: 784)
///     let hidden = addBias(matmul(images, tape.variable(w1)), tape.variable(b1), activation: .relu)
///     let logits = addBias(matmul(hidden, tape.variable(w2)), tape.variable(b2))
///     let loss = sparseSoftmaxCrossEntropy(logits: logits, labels: batch.targets)
///     variables.zeroGradients()
///     tape.backward(from: loss)
///     optimizer.apply(parameters: variables.parameters.base, gradients: variables.gradients.base)
/// }
/// ```
public final class ArenaTape {
    /// The arena whose variables this tape differentiates; `backward(from:)` accumulates into its gradients.
    public let variables: ParameterArena

    /// The records of this step: first one leaf per variable (kept across resets), then the operations in order.
    private(set) var records: [Record] = []
    private let variableCount: Int
    private let valueScratch = ScratchSpace()
    private let gradientScratch = ScratchSpace()
    private var differentiated = false

    public init(variables: ParameterArena) {
        self.variables = variables
        variableCount = variables.variables.count
        records.reserveCapacity(variableCount + 64)
        for variable in variables.variables {
            let offset = variable.view.offset
            records.append(Record(operation: .leaf, rows: variable.rows, columns: variable.columns,
                                  value: variables.parameters.base + offset, gradient: variables.gradients.base + offset))
        }
    }

    /// Forgets the last step's operations, keeping every buffer: records, activations and their gradients are
    /// written over by the next step. Values of the last step are invalid afterwards.
    public func reset() {
        records.removeLast(records.count - variableCount)
        valueScratch.reset()
        gradientScratch.reset()
        differentiated = false
    }

    /// A variable of the tape's arena, as a value operations take. Costs nothing: variables are always recorded.
    public func variable(_ variable: TapeVariable) -> Value {
        precondition(variable.index < variableCount && records[variable.index].value == variables.parameters.base + variable.view.offset,
                     "\(variable.view.name) is not a variable of this tape's arena")
        return Value(tape: self, index: variable.index)
    }

    /// Input data (a batch, labels as targets), used in place without a copy; no gradient flows into it.
    public func constant(_ values: UnsafePointer<Float>, rows: Int, columns: Int) -> Value {
        precondition(rows > 0 && columns > 0, "constant: \(rows) × \(columns) is empty")
        return append(Record(operation: .leaf, rows: rows, columns: columns, value: UnsafeMutablePointer(mutating: values), gradient: nil))
    }

    /// A tensor (rank 0, 1 or 2) copied into the tape's scratch space; no gradient flows into it.
    public func constant(_ tensor: Tensor) -> Value {
        precondition(tensor.shape.count <= 2 && tensor.count > 0, "constant: shape \(tensor.shape) is not a non-empty scalar, vector or matrix")
        let rows = tensor.shape.count == 2 ? tensor.shape[0] : 1
        let output = allocateOutput(rows: rows, columns: tensor.shape.last ?? 1, needsGradient: false)
        tensor.scalars.withUnsafeBufferPointer { output.value.update(from: $0.baseAddress!, count: $0.count) }
        return append(Record(operation: .leaf, rows: output.rows, columns: output.columns, value: output.value, gradient: nil))
    }

    /// Accumulates d(target)/d(x) into the gradient of every recorded x that depends on a variable — the arena's
    /// gradient buffer for the variables. `target` must be a scalar (a loss). Gradients add to what is there:
    /// zero the arena first (`ParameterArena.zeroGradients()`) unless you mean to sum several batches.
    /// Once per recording: `reset()` before recording the next step.
    public func backward(from target: Value) {
        precondition(target.tape === self, "backward(from:) of a value from another tape")
        precondition(!differentiated, "backward(from:) twice on one recording: reset() and record the step again")
        let targetRecord = records[target.index]
        precondition(targetRecord.count == 1, "backward(from:) needs a scalar target, found \(targetRecord.rows) × \(targetRecord.columns)")
        differentiated = true
        guard let seed = targetRecord.gradient else { return } // the target depends on no variable
        seed[0] += 1
        records.withUnsafeBufferPointer { records in
            for index in stride(from: target.index, through: variableCount, by: -1) {
                let record = records[index]
                guard let dOutput = record.gradient else { continue }
                record.operation.backward(output: record, dOutput: dOutput, records: records)
            }
        }
    }

    // MARK: recording (for the operations)

    /// Scratch for an operation's output and, when a gradient will flow through it, its zeroed gradient.
    func allocateOutput(rows: Int, columns: Int, needsGradient: Bool) -> (rows: Int, columns: Int, value: UnsafeMutablePointer<Float>, gradient: UnsafeMutablePointer<Float>?) {
        precondition(!differentiated, "recording after backward(from:): reset() first")
        let count = rows * columns
        return (rows, columns, valueScratch.take(count), needsGradient ? gradientScratch.take(count, zeroed: true) : nil)
    }

    /// Scratch an operation keeps for its backward pass (e.g. the fused loss's dLogits).
    func scratch(_ count: Int) -> UnsafeMutablePointer<Float> { valueScratch.take(count) }

    func append(_ record: Record) -> Value {
        records.append(record)
        return Value(tape: self, index: records.count - 1)
    }

    subscript(value: Value) -> Record {
        precondition(value.tape === self, "a value from another tape")
        return records[value.index]
    }

    /// How many floats of scratch space the tape holds (activations and their gradients): constant from the
    /// second step on when steps keep their shapes.
    public var scratchCapacity: Int { valueScratch.capacity + gradientScratch.capacity }

    /// One recorded value: where it lives and what produced it. Plain values and pointers only, so appending one
    /// to an array with capacity never allocates.
    struct Record {
        let operation: Operation
        let rows: Int
        let columns: Int
        let value: UnsafeMutablePointer<Float>
        /// nil when no variable is upstream of this value: backward skips it.
        let gradient: UnsafeMutablePointer<Float>?

        var count: Int { rows * columns }
    }

    /// A value recorded on an `ArenaTape`: what its operations take and return. Its storage belongs to the tape
    /// and is valid until the tape's next `reset()`.
    public struct Value {
        public let tape: ArenaTape
        let index: Int

        public var rows: Int { tape[self].rows }
        public var columns: Int { tape[self].columns }
        public var count: Int { tape[self].count }
        /// The first (for a loss, the only) element.
        public var scalar: Float { tape[self].value[0] }
        /// The value's elements, row-major.
        public var values: UnsafeBufferPointer<Float> { UnsafeBufferPointer(start: tape[self].value, count: count) }
        /// d(target)/d(self) after `backward(from:)`; nil when no variable is upstream of this value.
        public var gradient: UnsafeBufferPointer<Float>? {
            let record = tape[self]
            return record.gradient.map { UnsafeBufferPointer(start: $0, count: record.count) }
        }
        /// A copy as a [rows, columns] tensor, for inspection and tests.
        public var tensor: Tensor { Tensor(shape: [rows, columns], scalars: Array(values)) }
    }
}

/// Bump allocation of Float scratch, reused from step to step. A step that needs more than the block holds gets a
/// larger block, and the outgrown one is kept until `reset()` (values recorded in it are still in use); at the
/// reset the block is replaced by one that holds the whole step, so from then on a step of that size allocates
/// nothing.
final class ScratchSpace {
    /// Offsets are rounded to 16 floats: every value starts on a 64-byte line, as BLAS and vector loops like.
    private static let alignmentFloats = 16

    private var block: UnsafeMutablePointer<Float>?
    private(set) var capacity = 0
    private var used = 0
    /// Floats taken since the last reset, across blocks: the size the next block must have.
    private var demand = 0
    private var outgrown: [UnsafeMutablePointer<Float>] = []

    deinit {
        block?.deallocate()
        for old in outgrown { old.deallocate() }
    }

    func take(_ count: Int, zeroed: Bool = false) -> UnsafeMutablePointer<Float> {
        let rounded = (count + Self.alignmentFloats - 1) / Self.alignmentFloats * Self.alignmentFloats
        demand += rounded
        if block == nil || used + rounded > capacity {
            if let block { outgrown.append(block) }
            allocate(max(rounded, 2 * capacity))
        }
        let start = block! + used
        used += rounded
        if zeroed { start.update(repeating: 0, count: count) }
        return start
    }

    func reset() {
        if !outgrown.isEmpty {
            for old in outgrown { old.deallocate() }
            outgrown.removeAll()
            block?.deallocate()
            block = nil
            allocate(demand)
        }
        used = 0
        demand = 0
    }

    private func allocate(_ count: Int) {
        block = UnsafeMutableRawPointer.allocate(byteCount: count * MemoryLayout<Float>.stride, alignment: 64)
            .bindMemory(to: Float.self, capacity: count)
        capacity = count
        used = 0
    }
}
