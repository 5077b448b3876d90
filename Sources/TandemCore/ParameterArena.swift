/// The variables of a custom training loop: named tensors laid out one after another in one parameter arena, with
/// a gradient arena of the same layout.
///
/// Because every variable's gradient sits at the same offset of one flat buffer, a strategy sums the gradients of a
/// user's loop with one collective over `gradients`, and an optimizer updates every variable in one pass — the
/// layout the fused trainer's `Sequential` uses, so the same optimizers and communicators work on both.
///
/// ```swift
/// let variables = ParameterArena(shapes: ["dense/kernel": [784, 20], "dense/bias": [20]])
/// let kernel = variables["dense/kernel"]
/// variables.assign(kernel, Tensor.glorotUniform(fanIn: 784, fanOut: 20, generator: &generator))
/// variables.zeroGradients()        // one memset before each backward pass
/// ```
public final class ParameterArena: @unchecked Sendable {
    /// The variables in arena order.
    public let variables: [TapeVariable]
    public let parameters: FlatArena
    /// dLoss/dParameter, laid out like `parameters`. Backward passes accumulate into it.
    public let gradients: FlatArena

    /// Lays the variables out in the order given, each right after the previous one.
    public init(shapes: KeyValuePairs<String, [Int]>) {
        var variables: [TapeVariable] = []
        var offset = 0
        for (index, (name, shape)) in shapes.enumerated() {
            precondition(shape.count <= 2 && shape.allSatisfy { $0 > 0 },
                         "variable \(name): shape \(shape) is not a positive scalar, vector or matrix")
            precondition(!variables.contains { $0.view.name == name }, "variable \(name) is declared twice")
            let view = ArenaView(name: name, offset: offset, shape: shape)
            variables.append(TapeVariable(index: index, view: view))
            offset += view.count
        }
        self.variables = variables
        parameters = FlatArena(count: offset)
        gradients = FlatArena(count: offset)
    }

    /// How many floats the variables hold together (the length of both arenas).
    public var count: Int { parameters.count }

    /// The variable named `name`; a name that was not declared is a programming error.
    public subscript(name: String) -> TapeVariable {
        guard let variable = variables.first(where: { $0.view.name == name }) else {
            preconditionFailure("no variable named \(name) (declared: \(variables.map(\.view.name)))")
        }
        return variable
    }

    /// Sets every gradient to zero: what a step does before its backward pass, since backward accumulates.
    public func zeroGradients() { gradients.zero() }

    /// Copies `value` into the variable's slice of the parameter arena.
    public func assign(_ variable: TapeVariable, _ value: Tensor) {
        precondition(value.count == variable.view.count, "\(variable.view.name): \(value.count) values for shape \(variable.view.shape)")
        value.scalars.withUnsafeBufferPointer { (parameters.base + variable.view.offset).update(from: $0.baseAddress!, count: $0.count) }
    }

    /// The variable's current value, as a tensor of its declared shape (a copy, for inspection and tests).
    public func value(of variable: TapeVariable) -> Tensor { tensor(parameters, variable) }

    /// The variable's accumulated gradient, as a tensor of its declared shape (a copy).
    public func gradient(of variable: TapeVariable) -> Tensor { tensor(gradients, variable) }

    private func tensor(_ arena: FlatArena, _ variable: TapeVariable) -> Tensor {
        let view = variable.view
        return Tensor(shape: view.shape, scalars: Array(UnsafeBufferPointer(start: arena.base + view.offset, count: view.count)))
    }
}

/// A handle to one variable of a `ParameterArena`: its position among the arena's variables and its view (name,
/// offset, shape). A tape turns it into a value with `ArenaTape.variable(_:)`.
public struct TapeVariable: Sendable, Equatable {
    public let index: Int
    public let view: ArenaView

    /// The variable as the tape's matrices see it: a vector of n is one row of n, a scalar one row of one.
    public var rows: Int { view.shape.count == 2 ? view.shape[0] : 1 }
    public var columns: Int { view.shape.last ?? 1 }
}
