/// Reverse-mode automatic differentiation in the spirit of TensorFlow's GradientTape, for custom models and losses.
///
/// Every operation computes its value and appends, right beside it, a closure that pushes the output's gradient
/// back to its inputs. `gradient(of:withRespectTo:)` walks that append-only list in reverse, so the order in which
/// gradients are summed is fixed by the program, never by a set or a hash.
///
/// ```swift
/// let tape = GradientTape()
/// let w = tape.variable(Tensor(0.5)), b = tape.variable(Tensor(0))
/// let loss = meanSquaredError(w * tape.constant(x) + b, tape.constant(y))
/// let (dw, db) = tape.gradient(of: loss, withRespectTo: w, b)
/// ```
public final class GradientTape {
    typealias Backward = (_ gradients: inout [Tensor]) -> Void

    private(set) var values: [Tensor] = []
    private var backwards: [Backward?] = []

    public init() {}

    /// A value whose gradient you want: a model parameter.
    public func variable(_ value: Tensor) -> TapeValue { record(value, backward: nil) }

    /// An input that is not differentiated (data, labels); recorded the same way, its gradient is simply unused.
    public func constant(_ value: Tensor) -> TapeValue { record(value, backward: nil) }

    func record(_ value: Tensor, backward: Backward?) -> TapeValue {
        values.append(value)
        backwards.append(backward)
        return TapeValue(tape: self, index: values.count - 1)
    }

    /// d(target)/d(source) for every source; target must be a scalar.
    public func gradient(of target: TapeValue, withRespectTo sources: [TapeValue]) -> [Tensor] {
        precondition(target.tape === self && sources.allSatisfy { $0.tape === self }, "values from another tape")
        precondition(values[target.index].count == 1, "gradient(of:) needs a scalar target")
        var gradients = values.map { Tensor(zeros: $0.shape) }
        gradients[target.index].scalars[0] = 1
        for index in stride(from: target.index, through: 0, by: -1) {
            backwards[index]?(&gradients)
        }
        return sources.map { gradients[$0.index] }
    }

    public func gradient(of target: TapeValue, withRespectTo a: TapeValue, _ b: TapeValue) -> (Tensor, Tensor) {
        let result = gradient(of: target, withRespectTo: [a, b])
        return (result[0], result[1])
    }
}

/// A value recorded on a tape: what tape operations take and return.
public struct TapeValue {
    public let tape: GradientTape
    let index: Int

    public var value: Tensor { tape.values[index] }
    public var shape: [Int] { value.shape }
}
