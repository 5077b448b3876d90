import Testing
import TandemCore

func transposedCopy(_ matrix: Tensor) -> Tensor {
    let rows = matrix.shape[0], columns = matrix.shape[1]
    var scalars = [Float](repeating: 0, count: matrix.count)
    for r in 0..<rows { for c in 0..<columns { scalars[c * rows + r] = matrix.scalars[r * columns + c] } }
    return Tensor(shape: [columns, rows], scalars: scalars)
}

/// Checks the arena tape's gradients of `op` against central finite differences, and — when `reference` is given —
/// its values and gradients against the same computation on the Tensor-valued `GradientTape`.
///
/// The inputs are the variables of an arena; the op's output is reduced to a scalar with fixed, distinct weights
/// (as `checkGradients` does for the Tensor tape), so every output element gets its own upstream gradient. The
/// finite differences re-record the op on the same tape after `reset()`, with one parameter moved.
func checkArenaGradients(
    _ inputs: [Tensor], epsilon: Float = 1e-2, tolerance: Double = 2e-3, reference: (([TapeValue]) -> TapeValue)?,
    sourceLocation: SourceLocation = #_sourceLocation, _ op: ([ArenaTape.Value]) -> ArenaTape.Value
) {
    let shapes = KeyValuePairs<String, [Int]>(dictionaryLiteral: ("x0", inputs[0].shape), ("x1", inputs.count > 1 ? inputs[1].shape : [1]),
                                              ("x2", inputs.count > 2 ? inputs[2].shape : [1]), ("x3", inputs.count > 3 ? inputs[3].shape : [1]))
    precondition(inputs.count <= 4)
    let variables = ParameterArena(shapes: shapes)
    for (i, input) in inputs.enumerated() { variables.assign(variables.variables[i], input) }
    let tape = ArenaTape(variables: variables)
    var weights: Tensor?

    /// Σ weight · output in Double, from a fresh recording; the weights are fixed by the first output's shape.
    func projection(differentiate: Bool) -> (values: [Float], projected: Double) {
        tape.reset()
        let output = op(inputs.indices.map { tape.variable(variables.variables[$0]) })
        if weights == nil { weights = testTensor([output.rows, output.columns], seed: 9_999, magnitude: 1.5, awayFromZero: 0.5) }
        let w = weights!
        if differentiate {
            variables.zeroGradients()
            tape.backward(from: sum(output * tape.constant(w)))
        }
        return (Array(output.values), zip(output.values, w.scalars).reduce(0.0) { $0 + Double($1.0) * Double($1.1) })
    }

    let values = projection(differentiate: true).values
    let analytic = inputs.indices.map { variables.gradient(of: variables.variables[$0]) }
    for (i, input) in inputs.enumerated() {
        for j in 0..<input.count {
            let offset = variables.variables[i].view.offset + j
            let original = variables.parameters[offset]
            variables.parameters[offset] = original + epsilon
            let plus = projection(differentiate: false).projected
            variables.parameters[offset] = original - epsilon
            let minus = projection(differentiate: false).projected
            variables.parameters[offset] = original
            let step = Double(original + epsilon) - Double(original - epsilon)
            let numeric = (plus - minus) / step, tapeValue = Double(analytic[i].scalars[j])
            #expect(abs(tapeValue - numeric) <= tolerance * max(1, abs(numeric)),
                    "input \(i) element \(j): arena tape \(tapeValue), finite difference \(numeric)", sourceLocation: sourceLocation)
        }
    }

    guard let reference else { return }
    let plain = GradientTape()
    let sources = inputs.map { plain.variable($0) }
    let output = reference(sources)
    #expect(output.value.count == values.count, "output sizes differ", sourceLocation: sourceLocation)
    guard output.value.count == values.count else { return }
    // Values agree to float rounding (tanh and sigmoid are the trainer's fast forms on the arena tape, libm's there).
    for (mine, theirs) in zip(values, output.value.scalars) {
        #expect(abs(Double(mine) - Double(theirs)) <= 1e-6 * max(1, abs(Double(theirs))), "value \(mine) vs \(theirs)", sourceLocation: sourceLocation)
    }
    let w = weights!
    let expected = plain.gradient(of: sum(output * plain.constant(Tensor(shape: output.shape, scalars: w.scalars))), withRespectTo: sources)
    for i in inputs.indices {
        for (mine, theirs) in zip(analytic[i].scalars, expected[i].scalars) {
            #expect(abs(Double(mine) - Double(theirs)) <= 1e-5 * max(1, abs(Double(theirs))),
                    "input \(i): arena tape gradient \(mine), Tensor tape \(theirs)", sourceLocation: sourceLocation)
        }
    }
}
