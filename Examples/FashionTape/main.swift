// TensorFlow's "custom training loop" tutorial on Fashion-MNIST, written against the tape instead of the fused
// trainer: a 784-20-10 ReLU network, sparse softmax cross-entropy, SGD at 0.1, batches of 64.
// The `tandem train` path does the same with preallocated kernels and is much faster; this shows the building blocks.
//
//   swift run -c release FashionTapeExample [epochs] [data folder]
import TandemCore
import TandemData

let arguments = CommandLine.arguments
let epochs = arguments.count > 1 ? Int(arguments[1]) ?? 1 : 1
let folder = arguments.count > 2 ? arguments[2] : "/usr/share/datasets/fashion-mnist"

do {
    let train = try IDXReader.readLabelled(images: folder + "/train-images-idx3-ubyte.gz", labels: folder + "/train-labels-idx1-ubyte.gz")
    let test = try IDXReader.readLabelled(images: folder + "/t10k-images-idx3-ubyte.gz", labels: folder + "/t10k-labels-idx1-ubyte.gz")
    let scaling = FeatureScaling.unit(features: train.featureCount)

    var generator = SeededGenerator(seed: 42, stream: 1)
    var parameters = [
        Tensor.glorotUniform(fanIn: 784, fanOut: 20, generator: &generator), Tensor(zeros: [20]),
        Tensor.glorotUniform(fanIn: 20, fanOut: 10, generator: &generator), Tensor(zeros: [10]),
    ]

    func model(_ tape: GradientTape, _ images: TapeValue, _ weights: [TapeValue]) -> TapeValue {
        let hidden = relu(matmul(images, weights[0]) + weights[1])
        return matmul(hidden, weights[2]) + weights[3]
    }

    func batch(_ examples: Examples, rows: ArraySlice<Int>) -> (Tensor, [Int]) {
        var pixels = [Float](repeating: 0, count: rows.count * 784)
        pixels.withUnsafeMutableBufferPointer { buffer in
            for (i, row) in rows.enumerated() { examples.convertRow(row, scaling: scaling, into: buffer.baseAddress! + i * 784) }
        }
        return (Tensor(shape: [rows.count, 784], scalars: pixels), rows.map { Int(examples.targets[$0]) })
    }

    func accuracy(_ logits: Tensor, _ labels: [Int]) -> Int {
        labels.indices.filter { r in
            let row = logits.scalars[r * 10..<(r + 1) * 10]
            return row.firstIndex(of: row.max()!)! - r * 10 == labels[r]
        }.count
    }

    for epoch in 1...epochs {
        var order = Array(0..<train.count)
        order.shuffle(using: &generator)
        var lossSum: Float = 0, correct = 0, seen = 0
        for start in stride(from: 0, to: order.count - 63, by: 64) {
            let (images, labels) = batch(train, rows: order[start..<start + 64])
            let tape = GradientTape()
            let weights = parameters.map { tape.variable($0) }
            let logits = model(tape, tape.constant(images), weights)
            let loss = sparseSoftmaxCrossEntropy(logits: logits, labels: labels)
            let gradients = tape.gradient(of: loss, withRespectTo: weights)
            for p in parameters.indices {
                for i in parameters[p].scalars.indices { parameters[p].scalars[i] -= 0.1 * gradients[p].scalars[i] }
            }
            lossSum += loss.value.scalar * 64
            correct += accuracy(logits.value, labels)
            seen += 64
        }
        print("epoch \(epoch)  loss \(lossSum / Float(seen))  accuracy \(Float(correct) / Float(seen))")
    }

    var testCorrect = 0
    for start in stride(from: 0, to: test.count, by: 1000) {
        let (images, labels) = batch(test, rows: Array(start..<min(start + 1000, test.count))[...])
        let tape = GradientTape()
        testCorrect += accuracy(model(tape, tape.constant(images), parameters.map { tape.constant($0) }).value, labels)
    }
    print("test accuracy \(Float(testCorrect) / Float(test.count))")
} catch {
    print("error: \(error)")
}
