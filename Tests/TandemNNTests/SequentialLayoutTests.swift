import Testing
import TandemCore
import TandemNN
import TandemTestSupport

@Suite struct SequentialLayoutTests {
    @Test func parameterViewsTileTheArenasInOrder() throws {
        let model = try Sequential(spec: spec(5, [(4, .tanh), (3, .relu)]), seed: 1, maxBatchSize: 2)
        let views = model.parameterViews
        #expect(views == [
            ArenaView(name: "dense_0/kernel", offset: 0, shape: [5, 4]),
            ArenaView(name: "dense_0/bias", offset: 20, shape: [4]),
            ArenaView(name: "dense_1/kernel", offset: 24, shape: [4, 3]),
            ArenaView(name: "dense_1/bias", offset: 36, shape: [3]),
        ])
        #expect(model.parameterCount == 39)
        #expect(model.parameters.count == 39)
        #expect(model.gradients.count == 39 + Sequential.statisticsSlots)
        #expect(model.layers.map(\.parameterCount) == [24, 15])
        #expect(model.denseLayers.map(\.kernel) == [views[0], views[2]])
        #expect(model.denseLayers.map(\.bias) == [views[1], views[3]])
        #expect(model.inputSize == 5 && model.outputSize == 3 && model.lastActivation == .relu)
    }

    @Test func gradientOfEachViewLandsAtItsOffset() throws {
        // A single identity layer with MSE: dW = xᵀ · dY, db = Σ dY, with dY = 2 (y − t) / (rows · columns).
        let model = try Sequential(spec: spec(2, [(3, .identity)]), seed: 2, maxBatchSize: 2)
        let input: [Float] = [1, 2, -1, 0.5]
        let targets: [Float] = [0, 1, 2, 3, 4, 5]
        let outputs = try input.withUnsafeBufferPointer {
            Array(UnsafeBufferPointer(start: try model.forward($0.baseAddress!, rows: 2), count: 6))
        }
        let dY = zip(outputs, targets).map { 2 * ($0 - $1) / 6 }
        model.gradients.zero()
        model.accumulateGradients(input, targets: targets, rows: 2, loss: .meanSquaredError, gradientScale: 0.5)
        let gradient = model.gradientArray
        let kernel = model.parameterViews[0], bias = model.parameterViews[1]
        for i in 0..<2 {
            for o in 0..<3 {
                let expected = input[i] * dY[o] + input[2 + i] * dY[3 + o]
                #expect(abs(gradient[kernel.offset + i * 3 + o] - expected) < 1e-6)
            }
        }
        for o in 0..<3 { #expect(abs(gradient[bias.offset + o] - (dY[o] + dY[3 + o])) < 1e-6) }
        // The statistics slots after the parameters' gradients are left alone by backward.
        #expect(model.gradients[model.parameterCount] == 0 && model.gradients[model.parameterCount + 1] == 0)
    }

    @Test func glorotInitialisationWithinBoundsAndZeroBiases() throws {
        let model = try Sequential(spec: spec(100, [(50, .tanh), (10, .softmax)]), seed: 42, maxBatchSize: 1)
        for layer in model.denseLayers {
            let limit = (6 / Float(layer.inputSize + layer.outputSize)).squareRoot()
            let kernel = model.parameterArray[layer.kernel.offset..<layer.kernel.offset + layer.kernel.count]
            #expect(kernel.allSatisfy { abs($0) <= limit }, "\(layer.kernel.name) exceeds ±\(limit)")
            #expect(kernel.map(abs).max()! > 0.9 * limit, "\(layer.kernel.name) does not use its range")
            #expect(Set(kernel).count > kernel.count * 9 / 10)
            let mean = kernel.reduce(0.0) { $0 + Double($1) } / Double(kernel.count)
            #expect(abs(mean) < 0.1 * Double(limit))
            let bias = model.parameterArray[layer.bias.offset..<layer.bias.offset + layer.bias.count]
            #expect(bias.allSatisfy { $0 == 0 })
        }
    }

    @Test func sameSeedSameParametersDifferentSeedDifferent() throws {
        let layers: [(Int, Activation)] = [(8, .relu), (4, .identity)]
        let a = try Sequential(spec: spec(6, layers), seed: 7, maxBatchSize: 4)
        let b = try Sequential(spec: spec(6, layers), seed: 7, maxBatchSize: 32)
        let c = try Sequential(spec: spec(6, layers), seed: 8, maxBatchSize: 4)
        #expect(a.parameterArray.map(\.bitPattern) == b.parameterArray.map(\.bitPattern))
        #expect(a.parameterArray != c.parameterArray)
        #expect(a.denseLayers[0].kernel.count == 48)
        // The two layers' kernels are different draws, not the same numbers reused.
        #expect(Array(a.parameterArray[0..<8]) != Array(a.parameterArray[a.denseLayers[1].kernel.offset..<a.denseLayers[1].kernel.offset + 8]))
    }

    @Test func aModelBuiltInCodeIsTheModelItsConfigDescribes() throws {
        let coded = try Sequential(inputSize: 784, seed: 3, maxBatchSize: 8) {
            Dense(50, activation: .tanh)
            Dense(50, activation: .tanh)
            Dense(10, activation: .softmax)
        }
        let configured = try Sequential(spec: spec(784, [(50, .tanh), (50, .tanh), (10, .softmax)]), seed: 3, maxBatchSize: 8)
        #expect(coded.spec == configured.spec)
        #expect(coded.parameterViews == configured.parameterViews)
        #expect(coded.parameterArray.map(\.bitPattern) == configured.parameterArray.map(\.bitPattern))
        #expect(coded.outputShapes == [[50], [50], [10]])
    }

    @Test func aLayerThatDoesNotFitItsInputIsNamedWithBothShapes() throws {
        final class ImageLayer: Layer, @unchecked Sendable {
            var specification: ModelSpec.Layer { ModelSpec.Layer(units: 1, activation: .identity) }
            var activation: Activation { .identity }
            func build(name: String, inputShape: [Int], layout: inout ArenaLayout) throws -> [Int] { [28, 28, 1] }
            var parameterViews: [ArenaView] { [] }
            func initializeParameters(_ parameters: UnsafeMutablePointer<Float>, generator: inout SeededGenerator) {}
            func forward(parameters: UnsafePointer<Float>, input: UnsafePointer<Float>, output: UnsafeMutablePointer<Float>, rows: Int, context: LayerContext) {}
            func backward(parameters: UnsafePointer<Float>, gradients: UnsafeMutablePointer<Float>, input: UnsafePointer<Float>,
                          output: UnsafePointer<Float>, dOutput: UnsafeMutablePointer<Float>, dInput: UnsafeMutablePointer<Float>?,
                          rows: Int, activationIsFused: Bool, context: LayerContext) {}
        }
        expectTandemError(.badConfig, mentioning: ["dense_1 (Dense)", "[28, 28, 1]", "Flatten"]) {
            _ = try Sequential(inputSize: 784) {
                ImageLayer()
                Dense(10)
            }
        }
        expectTandemError(.badConfig, mentioning: ["model.layers[0].activation", "softmax"]) {
            _ = try Sequential(inputSize: 4) {
                Dense(3, activation: .softmax)
                Dense(2)
            }
        }
    }
}
