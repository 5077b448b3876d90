// The seed tutorial's ordinary least squares, z = w·x + b, trained in a custom loop: record the forward pass on a
// GradientTape, take the gradients of the mean squared error, and step down them (gradient descent, lr 0.01).
//
//   swift run -c release LinearRegressionExample
import TandemCore

let x = Tensor((0..<10).map(Float.init))
let y = Tensor([1.0, 1.3, 3.1, 2.0, 5.0, 6.3, 6.6, 7.4, 8.0, 9.0])
var w = Tensor(zeros: [1])
var b = Tensor(zeros: [1])
let learningRate: Float = 0.01

for epoch in 1...2000 {
    let tape = GradientTape()
    let (weight, bias) = (tape.variable(w), tape.variable(b))
    let z = weight * tape.constant(x) + bias
    let cost = meanSquaredError(z, tape.constant(y))
    let (dw, db) = tape.gradient(of: cost, withRespectTo: weight, bias)
    w.scalars[0] -= learningRate * dw.scalar
    b.scalars[0] -= learningRate * db.scalar
    if epoch == 1 || epoch % 400 == 0 {
        print("epoch \(epoch)  cost \(cost.value.scalar)  w \(w.scalar)  b \(b.scalar)")
    }
}

// The closed-form least-squares line the loop should have reached.
let n = Float(x.count)
let meanX = x.scalars.reduce(0, +) / n, meanY = y.scalars.reduce(0, +) / n
var covariance: Float = 0, variance: Float = 0
for (xi, yi) in zip(x.scalars, y.scalars) {
    covariance += (xi - meanX) * (yi - meanY)
    variance += (xi - meanX) * (xi - meanX)
}
let slope = covariance / variance
print("least squares: w \(slope)  b \(meanY - slope * meanX)")
