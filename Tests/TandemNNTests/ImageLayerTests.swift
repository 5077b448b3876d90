import Foundation
import TandemCore
import TandemNN
import TandemTestSupport
import Testing

/// The image layers (Conv2D, pooling, Flatten, Dropout, BatchNormalization): gradients against finite differences
/// and against the gradient tape, shapes and their errors, and what each does at evaluation.
@Suite struct ImageLayerTests {
    struct Case: CustomTestStringConvertible, Sendable {
        let name: String
        let inputShape: [Int]
        let layers: @Sendable () -> [any Layer]
        var testDescription: String { name }
    }

    static let cases: [Case] = [
        Case(name: "conv same tanh → conv stride 2 → max pool → dense", inputShape: [6, 6, 2]) {
            [Conv2D(3, kernelSize: 3, padding: .same, activation: .tanh), Conv2D(4, kernelSize: 2, strides: 2, activation: .sigmoid),
             MaxPool2D(poolSize: 2, padding: .same), Flatten(), Dense(3, activation: .softmax)]
        },
        Case(name: "conv relu → max pool (takes over the ReLU derivative) → dense", inputShape: [6, 6, 1]) {
            [Conv2D(3, kernelSize: 3, activation: .relu), MaxPool2D(poolSize: 2), Flatten(), Dense(3, activation: .softmax)]
        },
        Case(name: "conv → overlapping average pool, same padding → batch norm → dropout → dense", inputShape: [5, 5, 2]) {
            [Conv2D(2, kernelSize: 3, padding: .same), AveragePool2D(poolSize: 2, strides: 1, padding: .same),
             BatchNormalization(momentum: 0.9), Flatten(), Dropout(rate: 0.4), Dense(3, activation: .softmax)]
        },
        Case(name: "first conv relu, 16 filters → max pool on an odd size (the pair runs fused) → dense", inputShape: [5, 5, 1]) {
            [Conv2D(16, kernelSize: 3, activation: .relu), MaxPool2D(poolSize: 2), Flatten(), Dense(3, activation: .softmax)]
        },
        Case(name: "first conv stride 2 on 2 channels, no activation → max pool (fused) → dense", inputShape: [11, 11, 2]) {
            [Conv2D(16, kernelSize: 3, strides: 2), MaxPool2D(poolSize: 2), Flatten(), Dense(3, activation: .softmax)]
        },
        // (Smooth activations before the fused pairs below: with a ReLU there too, too many units sit within a finite
        // difference of zero; `fusedPairsWithAnInputGradientMatchTheTape` has ReLUs throughout.)
        Case(name: "conv tanh → max pool → conv relu, 16 filters → max pool (fused, scattering the input gradient) → dense", inputShape: [8, 8, 1]) {
            [Conv2D(3, kernelSize: 3, activation: .tanh), MaxPool2D(poolSize: 2), Conv2D(16, kernelSize: 2, activation: .relu),
             MaxPool2D(poolSize: 2), Flatten(), Dropout(rate: 0.3), Dense(3, activation: .softmax)]
        },
        Case(name: "conv tanh, same → conv stride 2, no activation → max pool (fused, scattering the input gradient) → dense", inputShape: [6, 6, 2]) {
            [Conv2D(3, kernelSize: 3, padding: .same, activation: .tanh), Conv2D(16, kernelSize: 2, strides: 2), MaxPool2D(poolSize: 2),
             Flatten(), Dense(3, activation: .softmax)]
        },
        Case(name: "dense tanh → batch norm (flat) → dense", inputShape: [5]) {
            [Dense(4, activation: .tanh), BatchNormalization(epsilon: 0.01), Dense(3, activation: .softmax)]
        },
    ]

    /// A training context whose dropout masks are fixed by seed, epoch and the rows' example indices.
    static let exampleIndices: [Int32] = [7, 3, 11, 0, 5, 9]

    static func model(_ testCase: Case, rows: Int) throws -> Sequential {
        let model = try Sequential(inputShape: testCase.inputShape, seed: 5, maxBatchSize: rows) { testCase.layers() }
        // Non-zero biases and betas, and gammas away from 1, so every gradient flows through a non-trivial region.
        for view in model.parameterViews where view.name.hasSuffix("bias") || view.name.hasSuffix("beta") || view.name.hasSuffix("gamma") {
            let values = testValues(view.count, seed: UInt64(view.offset + 1), magnitude: 0.3)
            for i in 0..<view.count { model.parameters[view.offset + i] = values[i] + (view.name.hasSuffix("gamma") ? 1 : 0) }
        }
        return model
    }

    @Test(arguments: cases)
    func backwardMatchesFiniteDifferences(_ testCase: Case) throws {
        let rows = 6
        let model = try Self.model(testCase, rows: rows)
        let input = testValues(rows * model.inputSize, seed: 21, magnitude: 1.5)
        let targets = (0..<rows).map { Float(($0 * 2 + 1) % 3) }
        try Self.exampleIndices.withUnsafeBufferPointer { indices in
            let context = LayerContext(training: true, seed: 9, epoch: 2, exampleIndices: indices.baseAddress!, globalRows: rows)
            model.gradients.zero()
            model.accumulateGradients(input, targets: targets, rows: rows, loss: .sparseCategoricalCrossentropy,
                                      gradientScale: 1 / Float(rows), context: context)
            let analytic = model.gradientArray
            #expect(analytic[0..<model.trainableCount].map(abs).max()! > 1e-3, "gradients are all tiny: the check would be vacuous")
            let epsilon: Float = 1e-3
            var checked = 0
            for view in model.parameterViews where view.offset < model.trainableCount {
                for k in 0..<view.count {
                    let index = view.offset + k, original = model.parameters[index]
                    model.parameters[index] = original + epsilon
                    let plus = model.meanLoss(input, targets: targets, rows: rows, loss: .sparseCategoricalCrossentropy, context: context)
                    let high = Double(model.parameters[index])
                    model.parameters[index] = original - epsilon
                    let minus = model.meanLoss(input, targets: targets, rows: rows, loss: .sparseCategoricalCrossentropy, context: context)
                    let width = high - Double(model.parameters[index])
                    model.parameters[index] = original
                    let numeric = (plus - minus) / width
                    #expect(abs(Double(analytic[index]) - numeric) <= 1e-3 + 2e-2 * abs(numeric),
                            "\(view.name)[\(k)]: backward \(analytic[index]), finite difference \(numeric)")
                    checked += 1
                }
            }
            #expect(checked == model.trainableCount)
        }
    }

    /// Trains one step of `model` on `input` and records the same model on the gradient tape (`record`: the tape
    /// images and variables, one per tensor of `shapes` in arena order → the logits), then expects the same loss
    /// and every gradient within 1e-5, none of them all but zero.
    static func expectTapeMatches(_ model: Sequential, input: [Float], labels: [Float], shapes: KeyValuePairs<String, [Int]>,
                                  record: (ArenaTape.Value, [ArenaTape.Value]) -> ArenaTape.Value) throws {
        let rows = labels.count
        model.gradients.zero()
        let statistics = model.accumulateGradients(input, targets: labels, rows: rows, loss: .sparseCategoricalCrossentropy, gradientScale: 1 / Float(rows))
        let views = model.parameterViews
        let variables = ParameterArena(shapes: shapes)
        for (variable, view) in zip(variables.variables, views) {
            (variables.parameters.base + variable.view.offset).update(from: model.parameters.base + view.offset, count: view.count)
        }
        let tape = ArenaTape(variables: variables)
        let loss = try input.withUnsafeBufferPointer { x in
            try labels.withUnsafeBufferPointer { y in
                let images = tape.constant(x.baseAddress!, rows: rows, columns: model.inputSize)
                let logits = record(images, variables.variables.map { tape.variable($0) })
                let loss = sparseSoftmaxCrossEntropy(logits: logits, labels: y.baseAddress!)
                variables.zeroGradients()
                tape.backward(from: loss)
                return try #require(Optional(loss.scalar))
            }
        }
        #expect(abs(Double(loss) - statistics.meanLoss) < 1e-5)
        for (variable, view) in zip(variables.variables, views) {
            let tapeGradient = variables.gradient(of: variable).scalars
            #expect(tapeGradient.map(abs).max()! > 1e-4, "\(view.name): the tape's gradient is all but zero")
            for i in 0..<view.count {
                #expect(abs(tapeGradient[i] - model.gradients[view.offset + i]) < 1e-5, "\(view.name)[\(i)]: tape \(tapeGradient[i]), layers \(model.gradients[view.offset + i])")
            }
        }
    }

    /// The same CNN recorded on the gradient tape (conv2d, maxPool2d, averagePool2d, matmul) gives the layers'
    /// outputs and gradients.
    @Test func tapeMatchesTheLayers() throws {
        let model = try Sequential(inputShape: [7, 7, 2], seed: 8, maxBatchSize: 4) {
            Conv2D(3, kernelSize: 3, padding: .same, activation: .relu)
            MaxPool2D(poolSize: 2)
            Conv2D(4, kernelSize: 2, activation: .tanh)
            AveragePool2D(poolSize: 2, strides: 1)
            Flatten()
            Dense(3, activation: .softmax)
        }
        let g1 = try #require(WindowGeometry(input: (7, 7, 2), window: (3, 3), strides: (1, 1), padding: .same))
        let p1 = try #require(WindowGeometry(input: (7, 7, 3), window: (2, 2), strides: (2, 2), padding: .valid))
        let g2 = try #require(WindowGeometry(input: (3, 3, 3), window: (2, 2), strides: (1, 1), padding: .valid))
        let p2 = try #require(WindowGeometry(input: (2, 2, 4), window: (2, 2), strides: (1, 1), padding: .valid))
        try Self.expectTapeMatches(model, input: testValues(4 * model.inputSize, seed: 4, magnitude: 1), labels: [0, 2, 1, 2],
                                   shapes: ["k1": [18, 3], "b1": [3], "k2": [12, 4], "b2": [4], "w": [4, 3], "b": [3]]) { images, v in
            var h = conv2d(images, v[0], v[1], geometry: g1, activation: .relu)
            h = maxPool2d(h, geometry: p1)
            h = conv2d(h, v[2], v[3], geometry: g2, activation: .tanh)
            h = averagePool2d(h, geometry: p2)
            return addBias(matmul(h, v[4]), v[5])
        }
    }

    /// A first convolution and the max pooling after it run fused (`convolveMaxPoolForward`/`Backward`): the
    /// tape, which runs them apart (im2col + GEMM, then pooling), gives the same loss and gradients.
    @Test func theFusedFirstPairMatchesTheTape() throws {
        let model = try Sequential(inputShape: [9, 9, 1], seed: 8, maxBatchSize: 5) {
            Conv2D(16, kernelSize: 3, activation: .relu)
            MaxPool2D(poolSize: 2)
            Flatten()
            Dense(3, activation: .softmax)
        }
        #expect(model.fusedPairs == [0])
        for i in 0..<16 { model.parameters[144 + i] = 0.05 * Float(i) - 0.35 }   // biases either side of zero
        let convolution = try #require(WindowGeometry(input: (9, 9, 1), window: (3, 3), strides: (1, 1), padding: .valid))
        let pooling = try #require(WindowGeometry(input: (7, 7, 16), window: (2, 2), strides: (2, 2), padding: .valid))
        try Self.expectTapeMatches(model, input: testValues(5 * model.inputSize, seed: 6, magnitude: 1), labels: [0, 2, 1, 2, 0],
                                   shapes: ["k": [9, 16], "b": [16], "w": [144, 3], "wb": [3]]) { images, v in
            let pooled = maxPool2d(conv2d(images, v[0], v[1], geometry: convolution, activation: .relu), geometry: pooling)
            return addBias(matmul(pooled, v[2]), v[3])
        }
    }

    /// keras.io's convnet in small: both convolutions run fused with their pooling, the second through im2col + GEMM
    /// forward and a scatter of the nonzero pooled gradients backward (into its kernel and its input's gradient).
    /// The tape runs every layer apart and gives the same loss and gradients.
    @Test func fusedPairsWithAnInputGradientMatchTheTape() throws {
        let model = try Sequential(inputShape: [14, 14, 1], seed: 3, maxBatchSize: 5) {
            Conv2D(16, kernelSize: 3, activation: .relu)
            MaxPool2D(poolSize: 2)
            Conv2D(16, kernelSize: 3, activation: .relu)
            MaxPool2D(poolSize: 2)
            Flatten()
            Dense(3, activation: .softmax)
        }
        #expect(model.fusedPairs == [0, 2])
        for view in model.parameterViews where view.name.hasSuffix("bias") {
            for i in 0..<view.count { model.parameters[view.offset + i] = 0.04 * Float(i % 9) - 0.15 }   // either side of zero
        }
        let g1 = try #require(WindowGeometry(input: (14, 14, 1), window: (3, 3), strides: (1, 1), padding: .valid))
        let p1 = try #require(WindowGeometry(input: (12, 12, 16), window: (2, 2), strides: (2, 2), padding: .valid))
        let g2 = try #require(WindowGeometry(input: (6, 6, 16), window: (3, 3), strides: (1, 1), padding: .valid))
        let p2 = try #require(WindowGeometry(input: (4, 4, 16), window: (2, 2), strides: (2, 2), padding: .valid))
        try Self.expectTapeMatches(model, input: testValues(5 * model.inputSize, seed: 2, magnitude: 1), labels: [1, 0, 2, 2, 1],
                                   shapes: ["k1": [9, 16], "b1": [16], "k2": [144, 16], "b2": [16], "w": [64, 3], "wb": [3]]) { images, v in
            var h = maxPool2d(conv2d(images, v[0], v[1], geometry: g1, activation: .relu), geometry: p1)
            h = maxPool2d(conv2d(h, v[2], v[3], geometry: g2, activation: .relu), geometry: p2)
            return addBias(matmul(h, v[4]), v[5])
        }
    }

    /// Batch normalization (after a convolution and after a dense layer) and dropout, recorded on the tape from its
    /// primitives: per-channel means and variances as products with a ones row and a channel-selection matrix, the
    /// deviation as exp(½ log(variance + ε)), and dropout as a product with the layer's own mask (drawn by running
    /// the model's Dropout on ones, with the step's context). The layers give the same loss and gradients.
    @Test func batchNormalizationAndDropoutMatchTheTape() throws {
        let rows = 6
        let model = try Sequential(inputShape: [6, 6, 2], seed: 4, maxBatchSize: rows) {
            Conv2D(4, kernelSize: 3, activation: .relu)
            BatchNormalization(momentum: 0.9)
            Flatten()
            Dropout(rate: 0.3)
            Dense(5, activation: .tanh)
            BatchNormalization(epsilon: 0.01)
            Dense(3, activation: .softmax)
        }
        for view in model.parameterViews where view.name.hasSuffix("gamma") || view.name.hasSuffix("beta") {
            let values = testValues(view.count, seed: UInt64(view.offset + 3), magnitude: 0.4)
            for i in 0..<view.count { model.parameters[view.offset + i] = values[i] + (view.name.hasSuffix("gamma") ? 1 : 0) }
        }
        // The mask the step draws: the model's own Dropout on ones, in the context `accumulateGradients` uses.
        let features = 4 * 4 * 4
        let ones = [Float](repeating: 1, count: rows * features)
        var mask = [Float](repeating: 0, count: rows * features)
        try ones.withUnsafeBufferPointer { input in
            try mask.withUnsafeMutableBufferPointer { output in
                try model.layers[3].forward(parameters: model.parameters.base, input: input.baseAddress!, output: output.baseAddress!,
                                            rows: rows, context: LayerContext(training: true, globalRows: rows))
            }
        }
        #expect(mask.contains(0) && mask.contains { $0 > 1 }, "the mask drops nothing or keeps nothing")
        let convolution = try #require(WindowGeometry(input: (6, 6, 2), window: (3, 3), strides: (1, 1), padding: .valid))
        try Self.expectTapeMatches(model, input: testValues(rows * model.inputSize, seed: 12, magnitude: 1), labels: [0, 1, 2, 2, 1, 0],
                                   shapes: ["k1": [18, 4], "b1": [4], "gamma1": [4], "beta1": [4], "w2": [64, 5], "b2": [5],
                                            "gamma2": [5], "beta2": [5], "w3": [5, 3], "b3": [3]]) { images, v in
            var h = Self.batchNormalization(conv2d(images, v[0], v[1], geometry: convolution, activation: .relu), gamma: v[2], beta: v[3],
                                            channels: 4, epsilon: 1e-3)
            h = h * images.tape.constant(Tensor(shape: [rows, features], scalars: mask))
            h = Self.batchNormalization(addBias(matmul(h, v[4]), v[5], activation: .tanh), gamma: v[6], beta: v[7], channels: 5, epsilon: 0.01)
            return addBias(matmul(h, v[8]), v[9])
        }
    }

    /// Batch normalization in training, on the tape's primitives: `x` [rows, pixels · channels], statistics per
    /// channel over every row and pixel (biased variance, as Keras), then γ (x − mean) / √(variance + ε) + β.
    static func batchNormalization(_ x: ArenaTape.Value, gamma: ArenaTape.Value, beta: ArenaTape.Value, channels: Int,
                                   epsilon: Float) -> ArenaTape.Value {
        let tape = x.tape, columns = x.columns
        // selection[j, k] = 1 where column j holds channel k (NHWC: channels vary fastest).
        var selection = [Float](repeating: 0, count: columns * channels)
        for j in 0..<columns { selection[j * channels + j % channels] = 1 }
        let select = tape.constant(Tensor(shape: [columns, channels], scalars: selection))
        let onesRow = tape.constant(Tensor(shape: [1, x.rows], scalars: [Float](repeating: 1, count: x.rows)))
        let count = Float(x.rows * columns / channels)
        let mean = matmul(matmul(onesRow, x), select) * (1 / count)
        let centered = x - matmul(mean, select, transposeB: true)
        let variance = matmul(matmul(onesRow, square(centered)), select) * (1 / count)
        let deviation = exp(log(variance + tape.constant(Tensor(epsilon))) * 0.5)
        return centered * matmul(gamma / deviation, select, transposeB: true) + matmul(beta, select, transposeB: true)
    }

    @Test func shapesParametersAndNamesFollowKeras() throws {
        let model = try Sequential(inputShape: [28, 28, 1], maxBatchSize: 2) {
            Conv2D(32, kernelSize: 3, activation: .relu)
            MaxPool2D(poolSize: 2)
            Conv2D(64, kernelSize: 3, activation: .relu)
            BatchNormalization(synchronized: true)
            MaxPool2D(poolSize: 2)
            Flatten()
            Dropout(rate: 0.5)
            Dense(10, activation: .softmax)
        }
        #expect(model.outputShapes == [[26, 26, 32], [13, 13, 32], [11, 11, 64], [11, 11, 64], [5, 5, 64], [1600], [1600], [10]])
        #expect(model.trainableCount == 34_826 + 128 && model.parameterCount == 34_826 + 256)
        #expect(model.parameterViews.map(\.name) == [
            "conv2d_0/kernel", "conv2d_0/bias", "conv2d_2/kernel", "conv2d_2/bias", "batch_normalization_3/gamma",
            "batch_normalization_3/beta", "dense_7/kernel", "dense_7/bias",
            "batch_normalization_3/moving_mean", "batch_normalization_3/moving_variance"])
        #expect(model.parameterViews.first { $0.name == "conv2d_2/kernel" }?.shape == [3, 3, 32, 64])
        // Statistics sit after every trainable parameter: the optimizer trains [0, trainableCount).
        #expect(model.parameterViews.filter { $0.name.contains("moving") }.allSatisfy { $0.offset >= model.trainableCount })
        // "same" padding keeps the size at stride 1 and gives ⌈n / stride⌉ otherwise.
        let same = try Sequential(inputShape: [7, 5, 3], maxBatchSize: 1) { Conv2D(2, kernelSize: 3, strides: 2, padding: .same) }
        #expect(same.outputShapes == [[4, 3, 2]])
    }

    @Test func aConfigAndCodeBuildTheSameModel() throws {
        let json = #"{"input_shape": [28, 28, 1], "layers": [{"type": "conv2d", "filters": 8, "kernel_size": 3, "activation": "relu"}, {"type": "max_pool2d", "pool_size": 2}, {"type": "batch_normalization", "synchronized": true}, {"type": "flatten"}, {"type": "dropout", "rate": 0.25}, {"type": "dense", "units": 10, "activation": "softmax"}]}"#
        let spec = try JSONDecoder().decode(ModelSpec.self, from: Data(json.utf8))
        let configured = try Sequential(spec: spec, seed: 3, maxBatchSize: 2)
        let coded = try Sequential(inputShape: [28, 28, 1], seed: 3, maxBatchSize: 2) {
            Conv2D(8, kernelSize: 3, activation: .relu)
            MaxPool2D(poolSize: 2)
            BatchNormalization(synchronized: true)
            Flatten()
            Dropout(rate: 0.25)
            Dense(10, activation: .softmax)
        }
        #expect(coded.spec == configured.spec)
        #expect(coded.parameterViews == configured.parameterViews)
        #expect(coded.parameterArray.map(\.bitPattern) == configured.parameterArray.map(\.bitPattern))
        // An image model is written with input_shape; a flat one keeps input_size (older checkpoints match).
        let encoded = String(decoding: try JSONEncoder().encode(coded.spec), as: UTF8.self)
        #expect(encoded.contains("\"input_shape\":[28,28,1]") && !encoded.contains("input_size"))
        #expect(try JSONDecoder().decode(ModelSpec.self, from: Data(encoded.utf8)) == coded.spec)
    }

    @Test func shapeErrorsNameTheLayerAndBothShapes() {
        expectTandemError(.badConfig, mentioning: ["conv2d_0 (Conv2D)", "[784]", "input_shape"]) {
            _ = try Sequential(inputSize: 784) { Conv2D(4, kernelSize: 3) }
        }
        expectTandemError(.badConfig, mentioning: ["dense_1 (Dense)", "[26, 26, 4]", "Flatten"]) {
            _ = try Sequential(inputShape: [28, 28, 1]) { Conv2D(4, kernelSize: 3); Dense(10) }
        }
        expectTandemError(.badConfig, mentioning: ["max_pool2d_1 (MaxPool2D)", "5×5", "[2, 2, 4]"]) {
            _ = try Sequential(inputShape: [4, 4, 1]) { Conv2D(4, kernelSize: 3); MaxPool2D(poolSize: 5) }
        }
        expectTandemError(.badConfig, mentioning: ["model.layers[1].rate", "1.5"]) {
            _ = try ModelSpec(inputShape: [4], layers: [.init(units: 3, activation: .relu), .init(type: "dropout", rate: 1.5)]).validated()
        }
        expectTandemError(.badConfig, mentioning: ["model.layers[0].padding", "\"full\""]) {
            _ = try ModelSpec(inputShape: [4, 4, 1], layers: [.init(type: "conv2d", filters: 2, kernelSize: 3, padding: "full")]).validated()
        }
        expectTandemError(.badConfig, mentioning: ["model.layers[0].filters", "missing"]) {
            _ = try ModelSpec(inputShape: [4, 4, 1], layers: [.init(type: "conv2d", kernelSize: 3)]).validated()
        }
        expectTandemError(.badConfig, mentioning: ["model.input_shape", "[28, 0, 1]"]) {
            _ = try ModelSpec(inputShape: [28, 0, 1], layers: [.init(type: "flatten")]).validated()
        }
    }

    /// Dropout draws each example's mask from (seed, layer, epoch, example index): a batch split in two gives the
    /// same outputs as the whole, another epoch another mask, and evaluation passes everything through.
    @Test func dropoutMasksDependOnTheExampleNotOnTheSplit() throws {
        let rows = 6, features = 400
        let make = { try Sequential(inputSize: features, maxBatchSize: rows) { Dropout(rate: 0.3) } }
        let whole = try make(), halves = try make()
        let input = testValues(rows * features, seed: 2).map { abs($0) + 0.5 }
        func run(_ model: Sequential, _ x: ArraySlice<Float>, rows: Int, indices: ArraySlice<Int32>, epoch: Int, training: Bool = true) throws -> [Float] {
            try Array(x).withUnsafeBufferPointer { xs in
                try Array(indices).withUnsafeBufferPointer { ids in
                    let context = LayerContext(training: training, seed: 4, epoch: epoch, exampleIndices: ids.baseAddress!, globalRows: 6)
                    return Array(UnsafeBufferPointer(start: try model.forward(xs.baseAddress!, rows: rows, context: context), count: rows * features))
                }
            }
        }
        let indices = Self.exampleIndices[...]
        let all = try run(whole, input[...], rows: rows, indices: indices, epoch: 1)
        let first = try run(halves, input[0..<3 * features], rows: 3, indices: indices[0..<3], epoch: 1)
        let second = try run(halves, input[(3 * features)...], rows: 3, indices: indices[3...], epoch: 1)
        #expect(all.map(\.bitPattern) == (first + second).map(\.bitPattern))
        let dropped = Double(all.filter { $0 == 0 }.count) / Double(all.count)
        #expect(abs(dropped - 0.3) < 0.03, "dropped \(dropped) of the values at rate 0.3")
        for i in all.indices where all[i] != 0 { #expect(abs(all[i] - input[i] / 0.7) < 1e-5) }
        #expect(try run(whole, input[...], rows: rows, indices: indices, epoch: 2) != all, "another epoch, another mask")
        #expect(try run(whole, input[...], rows: rows, indices: indices, epoch: 1, training: false) == input)
    }

    /// Batch normalization's moving statistics move toward the batch's as Keras's do once the optimizer applies the
    /// step (moving = momentum · moving + (1 − momentum) · batch), and evaluation normalizes with them.
    @Test func batchNormalizationMovingStatistics() throws {
        let rows = 8
        let model = try Sequential(inputSize: 3, maxBatchSize: rows) { BatchNormalization(momentum: 0.9) }
        let input = testValues(rows * 3, seed: 6, magnitude: 2).map { $0 + 1 }
        model.gradients.zero()
        model.accumulateGradients(input, targets: [Float](repeating: 0, count: rows * 3), rows: rows, loss: .meanSquaredError, gradientScale: 1 / Float(rows))
        let optimizer = try OptimizerSpec.adam().makeOptimizer(parameterCount: model.parameterCount, trainableCount: model.trainableCount)
        let gammaBefore = model.parameters[0]
        optimizer.apply(parameters: model.parameters.base, gradients: model.gradients.base)
        #expect(model.parameters[0] != gammaBefore, "gamma trains")
        for k in 0..<3 {
            let column = (0..<rows).map { Double(input[$0 * 3 + k]) }
            let mean = column.reduce(0, +) / Double(rows)
            let variance = column.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / Double(rows)
            #expect(abs(Double(model.parameters[6 + k]) - 0.1 * mean) < 1e-5, "moving mean of channel \(k)")
            #expect(abs(Double(model.parameters[9 + k]) - (0.9 + 0.1 * variance)) < 1e-5, "moving variance of channel \(k)")
        }
        let evaluated = try input.withUnsafeBufferPointer { Array(UnsafeBufferPointer(start: try model.forward($0.baseAddress!, rows: 1), count: 3)) }
        for k in 0..<3 {
            let expected = model.parameters[k] * (input[k] - model.parameters[6 + k]) / (model.parameters[9 + k] + 1e-3).squareRoot() + model.parameters[3 + k]
            #expect(abs(evaluated[k] - expected) < 1e-5)
        }
    }
}
