import Foundation
import TandemCore
import TandemData
import TandemNN
import TandemTestSupport
import TandemTrain
import Testing

@Suite struct TrainingStateTests {
    static func model(_ hidden: Int = 4, extraLayer: Bool = false, seed: UInt64 = 1) throws -> Sequential {
        var layers = [ModelSpec.Layer(units: hidden, activation: .tanh)]
        if extraLayer { layers.append(ModelSpec.Layer(units: 3, activation: .relu)) }
        layers.append(ModelSpec.Layer(units: 2, activation: .identity))
        return try Sequential(spec: ModelSpec(inputSize: 3, layers: layers), seed: seed, maxBatchSize: 4)
    }

    /// A model and a momentum optimizer with non-trivial state after two updates.
    static func trained() throws -> (Sequential, SGD) {
        let model = try model()
        let optimizer = SGD(parameterCount: model.parameterCount, learningRate: 0.1, momentum: 0.9)
        for step in 0..<2 {
            let gradients = (0..<model.parameterCount).map { Float(($0 + step) % 7) - 3 }
            optimizer.apply(parameters: model.parameters.base, gradients: gradients)
        }
        return (model, optimizer)
    }

    @Test func checkpointRestoresParametersStateAndCounters() throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let (model, optimizer) = try Self.trained()
        let scaling = FeatureScaling(scale: [1, 2, 3], shift: [-1, 0, 1])
        let path = directory.file("state.safetensors")
        try TrainingState.checkpoint(model: model, optimizer: optimizer, epoch: 3, seed: 9, config: nil, scaling: scaling)
            .write(to: path)
        let checkpoint = try Checkpoint.read(path: path)
        #expect(checkpoint.metadata["format"] == "tandem")
        #expect(checkpoint.metadata["epoch"] == "3" && checkpoint.metadata["step"] == "2" && checkpoint.metadata["seed"] == "9")
        #expect(checkpoint.entries.map(\.name).prefix(4) == ["dense_0/kernel", "dense_0/bias", "dense_1/kernel", "dense_1/bias"])
        #expect(checkpoint.entry(named: "optimizer/momentum/dense_1/kernel")?.shape == [4, 2])

        let fresh = try Self.model(seed: 2)
        let freshOptimizer = SGD(parameterCount: fresh.parameterCount, learningRate: 0.1, momentum: 0.9)
        #expect(fresh.parameterBits != model.parameterBits)
        let epoch = try TrainingState.restore(checkpoint, path: path, into: fresh, optimizer: freshOptimizer)
        #expect(epoch == 3)
        #expect(fresh.parameterBits == model.parameterBits)
        #expect(freshOptimizer.state[0].arena.array == optimizer.state[0].arena.array)
        #expect(freshOptimizer.iterations == 2)
        #expect(TrainingState.scaling(in: checkpoint, features: 3) == scaling)
        #expect(TrainingState.scaling(in: checkpoint, features: 5) == .identity(features: 5))
        #expect(try TrainingState.modelSpec(in: checkpoint, path: path) == model.spec)
    }

    @Test func restoreIntoADifferentShapeNamesTheTensor() throws {
        let (model, optimizer) = try Self.trained()
        let checkpoint = TrainingState.checkpoint(model: model, optimizer: optimizer, epoch: 1, seed: 0, config: nil)
        let wider = try Self.model(5)
        expectTandemError(.badCheckpoint, mentioning: ["/runs/a.safetensors", "dense_0/kernel", "[3, 4]", "[3, 5]"]) {
            try TrainingState.restore(checkpoint, path: "/runs/a.safetensors", into: wider, optimizer: nil)
        }
        let deeper = try Self.model(extraLayer: true)
        expectTandemError(.badCheckpoint, mentioning: ["/runs/a.safetensors", "dense_1/kernel"]) {
            try TrainingState.restore(checkpoint, path: "/runs/a.safetensors", into: deeper, optimizer: nil)
        }
        // The right model but an optimizer whose state the checkpoint lacks.
        let same = try Self.model()
        let adam = Adam(parameterCount: same.parameterCount, learningRate: 0.01)
        expectTandemError(.badCheckpoint, mentioning: ["/runs/a.safetensors", "optimizer/m/dense_0/kernel"]) {
            try TrainingState.restore(checkpoint, path: "/runs/a.safetensors", into: same, optimizer: adam)
        }
    }

    @Test func modelSpecNeedsTandemMetadata() {
        let foreign = Checkpoint(entries: [], metadata: [:])
        expectTandemError(.badCheckpoint, mentioning: ["/x.safetensors", "model"]) {
            _ = try TrainingState.modelSpec(in: foreign, path: "/x.safetensors")
        }
    }

    @Test func checkpointDirectoryKeepsTheNewest() throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let folder = CheckpointDirectory.self
        let checkpoints = try folder.init(path: directory.file("runs/a"), keep: 2)
        #expect(checkpoints.newest == nil)
        for epoch in 1...5 {
            let written = try checkpoints.save(Checkpoint(entries: [], metadata: ["epoch": String(epoch)]), epoch: epoch)
            #expect(written == directory.file("runs/a/epoch-000\(epoch).safetensors"))
        }
        #expect(checkpoints.existing() == [4, 5].map { directory.file("runs/a/epoch-000\($0).safetensors") })
        #expect(checkpoints.newest == directory.file("runs/a/epoch-0005.safetensors"))
        #expect(try Checkpoint.read(path: checkpoints.newest!).metadata["epoch"] == "5")
    }
}
