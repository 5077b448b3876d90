import Testing
import TandemCore

/// Deterministic test values. With `awayFromZero` > 0 every value has magnitude in [awayFromZero, magnitude]
/// (random sign), which keeps finite differences clear of kinks (relu) and poles (division, log).
func testValues(_ count: Int, seed: UInt64, magnitude: Float = 1, awayFromZero: Float = 0, positive: Bool = false) -> [Float] {
    var generator = SeededGenerator(seed: seed, stream: 77)
    return (0..<count).map { _ in
        let size = awayFromZero + (magnitude - awayFromZero) * generator.nextUnitFloat()
        if positive { return size }
        let negative = generator.next() & 1 == 1
        return negative ? -size : size
    }
}

func testTensor(_ shape: [Int], seed: UInt64, magnitude: Float = 1, awayFromZero: Float = 0, positive: Bool = false) -> Tensor {
    Tensor(shape: shape, scalars: testValues(shape.reduce(1, *), seed: seed, magnitude: magnitude,
                                             awayFromZero: awayFromZero, positive: positive))
}

/// Checks the tape's gradient of `op` against central finite differences.
///
/// The op's output (any shape) is reduced to a scalar with fixed, distinct weights, so every output element gets a
/// different upstream gradient (a plain sum would hide e.g. softmax's gradient, which is zero for a uniform
/// upstream). The finite differences evaluate the op's forward values and accumulate the projection in Double.
@discardableResult
func checkGradients(
    _ inputs: [Tensor], epsilon: Float = 1e-2, tolerance: Double = 2e-3,
    sourceLocation: SourceLocation = #_sourceLocation, _ op: ([TapeValue]) -> TapeValue
) -> [Tensor] {
    let tape = GradientTape()
    let variables = inputs.map { tape.variable($0) }
    let output = op(variables)
    let weights = testTensor(output.shape, seed: 9_999, magnitude: 1.5, awayFromZero: 0.5)
    let projection = sum(output * tape.constant(weights))
    let analytic = tape.gradient(of: projection, withRespectTo: variables)

    func evaluate(_ values: [Tensor]) -> Double {
        let scratch = GradientTape()
        let result = op(values.map { scratch.constant($0) }).value
        return zip(result.scalars, weights.scalars).reduce(0.0) { $0 + Double($1.0) * Double($1.1) }
    }

    for (i, input) in inputs.enumerated() {
        #expect(analytic[i].shape == input.shape, "gradient shape of input \(i)", sourceLocation: sourceLocation)
        guard analytic[i].count == input.count else { continue }
        for j in 0..<input.count {
            var plus = inputs, minus = inputs
            plus[i].scalars[j] += epsilon
            minus[i].scalars[j] -= epsilon
            let step = Double(plus[i].scalars[j]) - Double(minus[i].scalars[j])
            let numeric = (evaluate(plus) - evaluate(minus)) / step
            let tapeValue = Double(analytic[i].scalars[j])
            #expect(abs(tapeValue - numeric) <= tolerance * max(1, abs(numeric)),
                    "input \(i) element \(j): tape \(tapeValue), finite difference \(numeric)",
                    sourceLocation: sourceLocation)
        }
    }
    return analytic
}

func maxAbsDifference(_ a: [Float], _ b: [Float]) -> Float {
    precondition(a.count == b.count)
    return zip(a, b).map { abs($0 - $1) }.max() ?? 0
}
