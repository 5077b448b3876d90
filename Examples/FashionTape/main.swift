// TensorFlow's "custom training loop" tutorial on Fashion-MNIST, written against the arena tape: a 784-20-10 ReLU
// network, sparse softmax cross-entropy, SGD at 0.1, batches of 64. Each step is the tutorial's: record the forward
// pass, take the gradients, apply them — on storage the tape reuses, so a step allocates nothing and runs as fast
// as `tandem train` on the same model (same initial weights, batches and kernels: the same losses, too).
//
// It prints each epoch's loss, accuracy and seconds, the median epoch time of epochs 2..N (the first includes
// warming up) and the test accuracy. benchmarks/tape-vs-fused.sh runs it alternately with `tandem train`.
//
//   swift run -c release FashionTapeExample [epochs] [data folder]
import Foundation
import TandemCore
import TandemData
import TandemNN

// OpenBLAS picks slow fallback kernels on CPUs it does not know; `tandem` corrects that the same way.
BLASKernelChoice.reexecIfBetterKernelsExist()
setBLASThreads(1)

let arguments = CommandLine.arguments
let epochs = arguments.count > 1 ? max(Int(arguments[1]) ?? 1, 1) : 1
let folder = arguments.count > 2 ? arguments[2] : "/usr/share/datasets/fashion-mnist"
let batchSize = 64, seed: UInt64 = 42

do {
    let train = try IDXReader.readLabelled(images: folder + "/train-images-idx3-ubyte.gz", labels: folder + "/train-labels-idx1-ubyte.gz")
    let test = try IDXReader.readLabelled(images: folder + "/t10k-images-idx3-ubyte.gz", labels: folder + "/t10k-labels-idx1-ubyte.gz")
    let scaling = FeatureScaling.unit(features: train.featureCount)
    let batches = try BatchPipeline(examples: train, scaling: scaling, globalBatchSize: batchSize, seed: seed)

    // The model's variables, in one arena; Glorot-uniform kernels and zero biases, drawn as `tandem train` draws them.
    let variables = ParameterArena(shapes: ["dense_0/kernel": [784, 20], "dense_0/bias": [20], "dense_1/kernel": [20, 10], "dense_1/bias": [10]])
    let (w1, b1, w2, b2) = (variables["dense_0/kernel"], variables["dense_0/bias"], variables["dense_1/kernel"], variables["dense_1/bias"])
    var generator = SeededGenerator(seed: seed, stream: 0x1417)
    for kernel in [w1, w2] {
        variables.assign(kernel, Tensor.glorotUniform(fanIn: kernel.rows, fanOut: kernel.columns, generator: &generator))
    }
    let optimizer = SGD(parameterCount: variables.count, learningRate: 0.1)
    let tape = ArenaTape(variables: variables)

    func logits(_ images: UnsafePointer<Float>, rows: Int) -> ArenaTape.Value {
        let x = tape.constant(images, rows: rows, columns: 784)
        let hidden = addBias(matmul(x, tape.variable(w1)), tape.variable(b1), activation: .relu)
        return addBias(matmul(hidden, tape.variable(w2)), tape.variable(b2))
    }

    var epochSeconds: [Double] = []
    for epoch in 0..<epochs {
        let start = ProcessStatistics.now()
        batches.startEpoch(epoch)
        var statistics = LossStatistics()
        while let batch = try batches.next() {
            tape.reset()
            let loss = sparseSoftmaxCrossEntropy(logits: logits(batch.features, rows: batch.rows), labels: batch.targets,
                                                 statistics: &statistics)
            variables.zeroGradients()
            tape.backward(from: loss)
            optimizer.apply(parameters: variables.parameters.base, gradients: variables.gradients.base)
        }
        batches.finishEpoch()
        epochSeconds.append(ProcessStatistics.now() - start)
        print("epoch \(epoch + 1)  loss \(String(format: "%.4f", statistics.meanLoss))  accuracy \(String(format: "%.4f", statistics.accuracy))  \(String(format: "%.4f", epochSeconds[epoch])) s")
    }
    if epochs > 1 {
        let later = epochSeconds.dropFirst().sorted()
        print("median epoch \(String(format: "%.4f", later[later.count / 2])) s (epochs 2-\(epochs))")
    }

    // The test set through the same forward pass, in chunks (the tape grows its scratch once for the larger rows).
    let chunk = 1000
    let features = FlatArena(count: chunk * 784), labels = FlatArena(count: chunk)
    var testStatistics = LossStatistics()
    for first in stride(from: 0, to: test.count, by: chunk) {
        let rows = (Int32(first)..<Int32(min(first + chunk, test.count))).map { $0 }
        rows.withUnsafeBufferPointer { test.gather($0, scaling: scaling, features: features.base, targets: labels.base) }
        tape.reset()
        _ = sparseSoftmaxCrossEntropy(logits: logits(features.base, rows: rows.count), labels: labels.base, statistics: &testStatistics)
    }
    print("test loss \(String(format: "%.4f", testStatistics.meanLoss))  accuracy \(String(format: "%.4f", testStatistics.accuracy))")
} catch {
    print("error: \(error)")
    exit(1)
}
