import Foundation
import TandemCore
import TandemNN
import TandemTestSupport
import TandemTrain
import Testing

/// Checkpoints are never lost or unreadable, and outside numbers never trap: the library half of those guarantees
/// (EndToEndTests.NothingLostTests runs the binary on the same cases).
@Suite struct NothingLostTests {
    // MARK: checkpoints past epoch 9999

    @Test func checkpointsAreOrderedByEpochNumberNotByName() throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let folder = try CheckpointDirectory(path: directory.path, keep: 3)
        for epoch in [9998, 9999, 10000, 10001, 99, 100_000] { try directory.write(folder.fileName(epoch: epoch), text: "") }
        try directory.write("epoch-12x.safetensors", text: "")   // not a checkpoint name: ignored
        #expect(folder.existing().map { URL(fileURLWithPath: $0).lastPathComponent } == [
            "epoch-0099.safetensors", "epoch-9998.safetensors", "epoch-9999.safetensors", "epoch-10000.safetensors",
            "epoch-10001.safetensors", "epoch-100000.safetensors",
        ])
        #expect(folder.newest == directory.file("epoch-100000.safetensors"))
        #expect(CheckpointDirectory.epoch(ofFileName: "epoch-10000.safetensors") == 10000)
        #expect(CheckpointDirectory.epoch(ofFileName: "epoch--1.safetensors") == nil)
        #expect(CheckpointDirectory.epoch(ofFileName: "epoch-99999999999999999999999.safetensors") == nil)
    }

    @Test func keepingThreePastEpoch9999KeepsTheThreeNewest() throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let folder = try CheckpointDirectory(path: directory.path, keep: 3)
        let checkpoint = Checkpoint(entries: [], metadata: ["epoch": "0"])
        for epoch in 9997...10003 { try folder.save(checkpoint, epoch: epoch) }
        #expect(directory.contents() == ["epoch-10001.safetensors", "epoch-10002.safetensors", "epoch-10003.safetensors"])
    }

    // MARK: leftovers of interrupted writes

    @Test func staleTemporaryFilesOfDeadWritersAreRemovedWhenTheFolderIsOpened() throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        _ = try CheckpointDirectory(path: directory.path)
        let live = URL(fileURLWithPath: CheckpointDirectory.temporaryPath(for: directory.file("epoch-0002.safetensors"))).lastPathComponent
        let host = live.components(separatedBy: ".tmp.")[1].split(separator: ".").dropLast().joined(separator: ".")
        let deadPid = try deadProcessID()
        let names = [
            "epoch-0001.safetensors.tmp.\(deadPid)",              // the earlier naming, dead writer: removed
            "epoch-0003.safetensors.tmp.\(host).\(deadPid)",     // this host, dead writer: removed
            live,                                                 // this process: kept
            "epoch-0004.safetensors.tmp.otherhost.\(deadPid)",   // another host's writer may be alive: kept
            "epoch-0005.safetensors",                            // a checkpoint: kept
        ]
        for name in names { try directory.write(name, text: "partial") }
        let removed = try CheckpointDirectory(path: directory.path).removeStaleTemporaryFiles()
        #expect(removed.isEmpty, "the initialiser already removed them")
        #expect(directory.contents() == [names[2], names[3], names[4]].sorted())
    }

    /// A pid no process has: one of a child that has been waited for (its number is free until reused).
    private func deadProcessID() throws -> Int32 {
        let child = Process()
        child.executableURL = URL(fileURLWithPath: "/bin/true")
        try child.run()
        child.waitUntilExit()
        return child.processIdentifier
    }

    // MARK: the writer refuses what the reader refuses

    @Test func aCheckpointWhoseHeaderTheReaderWouldRefuseIsNotWritten() throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let checkpoint = Checkpoint(entries: [], metadata: ["name": String(repeating: "x", count: Checkpoint.maximumHeaderBytes)])
        expectTandemError(.resources, mentioning: ["not written", "\(Checkpoint.maximumHeaderBytes)"]) {
            try checkpoint.write(to: directory.file("big.safetensors"))
        }
        #expect(directory.contents().isEmpty, "no file and no temporary file left")
    }

    @Test func aConfigWhoseCheckpointsCouldNotBeReadIsRefusedNamingTheField() throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let name = String(repeating: "n", count: 50_000_000)
        let path = try directory.write("job.json", text: classificationConfig().replacingOccurrences(of: "\"tiny-classifier\"", with: "\"\(name)\""))
        expectTandemError(.badConfig, mentioning: ["field name is 50000000 bytes", "header", "\(Checkpoint.maximumHeaderBytes)"]) {
            _ = try JobConfig.load(path: path)
        }
    }

    // MARK: counters in checkpoint metadata

    @Test func checkpointCountersMustBeWholeNumbersInRange() throws {
        for bad in ["-7", "abc", "", "1e3", "99999999999999999999999", " 5", "\(TrainingState.maximumCounter + 1)"] {
            let checkpoint = Checkpoint(entries: [], metadata: ["epoch": bad])
            expectTandemError(.badCheckpoint, mentioning: ["c.safetensors", "__metadata__.epoch", "whole number"]) {
                _ = try TrainingState.counter("epoch", in: checkpoint, path: "c.safetensors")
            }
        }
        expectTandemError(.badCheckpoint, mentioning: ["__metadata__ has no step"]) {
            _ = try TrainingState.counter("step", in: Checkpoint(entries: [], metadata: [:]), path: "c.safetensors")
        }
        #expect(try TrainingState.counter("epoch", in: Checkpoint(entries: [], metadata: ["epoch": "10003"]), path: "c") == 10003)
    }

    @Test func resumingFromACheckpointWithANegativeEpochIsAnError() throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        try directory.write("train.csv", text: classificationCSV(rows: 64, seed: 1))
        let config = try JobConfig.load(path: try directory.write("job.json", text: classificationConfig()))
        let trainer = try Trainer(config: config, data: try DataSource.load(config: config))
        var checkpoint = TrainingState.checkpoint(model: trainer.model, optimizer: trainer.optimizer, epoch: 1, seed: 7, config: config)
        for bad in ["-7", "abc"] {
            checkpoint.metadata["epoch"] = bad
            let path = directory.file("epoch-\(bad).safetensors")
            try checkpoint.write(to: path)
            expectTandemError(.badCheckpoint, mentioning: [path, "__metadata__.epoch"]) { try trainer.restore(from: path) }
        }
    }

    @Test func metadataThatIsNotStringToStringIsRefused() throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let json = Array(#"{"__metadata__":{"epoch":5}}"#.utf8)
        let padded = json + [UInt8](repeating: 0x20, count: (8 - json.count % 8) % 8)
        let path = try directory.write("numeric-epoch.safetensors", (0..<8).map { UInt8(truncatingIfNeeded: padded.count >> (8 * $0)) } + padded)
        expectTandemError(.badCheckpoint, mentioning: [path, "__metadata__ must map names to strings"]) { _ = try Checkpoint.read(path: path) }
    }

    // MARK: fields named, sizes checked before allocation

    @Test func numbersThatDoNotFitTheirFieldAreNamed() throws {
        let cases: [(String, String, [String])] = [
            (#""units": 8"#, #""units": 20.5"#, ["model.layers[0].units", "must be an integer", "20.5"]),
            (#""learning_rate": 0.01"#, #""learning_rate": 1e39"#, ["optimizer.learning_rate", "32-bit float"]),
            (#""batch_size": 16"#, #""batch_size": 1e30"#, ["training.batch_size", "out of range"]),
            (#""seed": 7"#, #""seed": -1"#, ["training.seed", "out of range", "-1"]),
        ]
        for (old, new, fragments) in cases {
            let text = classificationConfig()
            #expect(text.contains(old))
            expectTandemError(.badConfig, mentioning: ["job.json: field "] + fragments) {
                _ = try decodeJSON(JobConfig.self, from: Data(text.replacingOccurrences(of: old, with: new).utf8), path: "job.json")
            }
        }
        expectTandemError(.badConfig, mentioning: ["job.json: malformed JSON"]) {
            _ = try decodeJSON(JobConfig.self, from: Data(#"{"name": "#.utf8), path: "job.json")
        }
    }

    @Test func aModelBeyondTheMachinesMemoryIsRefusedBeforeAllocating() throws {
        let spec = ModelSpec(inputSize: 784, layers: Array(repeating: ModelSpec.Layer(units: 1 << 20, activation: .relu), count: 3)
                                                    + [ModelSpec.Layer(units: 10, activation: .softmax)])
        expectTandemError(.resources, mentioning: ["model.layers", "1048576", "memory"]) {
            _ = try Sequential(spec: spec, seed: 1, maxBatchSize: 64)
        }
        // Sizes whose product overflows Int saturate and are refused the same way.
        let absurd = ModelSpec(inputSize: ModelSpec.maximumWidth, layers: Array(repeating: ModelSpec.Layer(units: 1 << 20, activation: .relu), count: 2000))
        let absurdCount = try absurd.placement().parameterCount
        #expect(absurdCount == Int.max || absurdCount > 1 << 50)
        expectTandemError(.resources, mentioning: ["model.layers"]) { try absurd.checkFitsInMemory(maxBatchSize: 1, optimizerSlots: 2) }
    }

    @Test func aCheckpointsModelDescriptionMustBeBackedByItsTensorsBeforeAModelIsBuilt() throws {
        let model = try Sequential(spec: ModelSpec(inputSize: 4, layers: [.init(units: 3, activation: .softmax)]), seed: 1, maxBatchSize: 2)
        let optimizer = try OptimizerSpec(name: "sgd", learningRate: 0.1).makeOptimizer(parameterCount: model.parameterCount)
        var checkpoint = TrainingState.checkpoint(model: model, optimizer: optimizer, epoch: 1, seed: 1, config: nil)
        #expect(try TrainingState.modelSpec(in: checkpoint, path: "c.safetensors") == model.spec)
        // A few bytes of description claiming a 1,048,576-unit layer: refused before gigabytes are allocated for it.
        checkpoint.metadata["model"] = #"{"input_size": 784, "layers": [{"units": 1048576}, {"units": 1048576}]}"#
        expectTandemError(.badCheckpoint, mentioning: ["c.safetensors", "dense_0/kernel"]) {
            _ = try TrainingState.modelSpec(in: checkpoint, path: "c.safetensors")
        }
    }

    @Test func errorMessagesNeverCarryControlCharacters() {
        let error = TandemError(.badInput, "data.csv:1: column 1 \"\u{1B}[2J\r\u{7}\u{85}\" is not a number")
        #expect(!error.message.unicodeScalars.contains { $0.value < 0x20 || (0x7F...0x9F).contains($0.value) })
        #expect(error.message.contains("\\u{1b}[2J\\u{d}\\u{7}\\u{85}"))
        #expect(TandemError.quoted(String(repeating: "a", count: 1000), limit: 10) == "\"aaaaaaaaaa…\"")
    }
}
