import Foundation
import TandemCore
import TandemData
import TandemNN
import TandemTestSupport
import TandemTrain
import Testing

@Suite struct TrainerTests {
    /// Loads a job written into `directory` (with its data) and builds its trainer.
    static func trainer(_ directory: TemporaryDirectory, config: String, name: String = "job.json",
                        epochs: Int? = nil) throws -> Trainer {
        var job = try JobConfig.load(path: try directory.write(name, text: config))
        if let epochs { job.training.epochs = epochs }
        return try Trainer(config: job, data: try DataSource.load(config: job))
    }

    static let regressionCSV = "x,y\n0,1.0\n1,1.3\n2,3.1\n3,2.0\n4,5.0\n5,6.3\n6,6.6\n7,7.4\n8,8.0\n9,9.0\n"

    static func regressionConfig(learningRate: String = "0.01", batch: Int = 10, epochs: Int = 2000) -> String {
        """
        {
          "name": "linear-regression",
          "data": { "format": "csv", "train": "linear.csv", "target": "y", "prefetch": false },
          "model": { "input_size": 1, "layers": [ { "type": "dense", "units": 1, "activation": "identity" } ] },
          "loss": "mean_squared_error",
          "optimizer": { "name": "sgd", "learning_rate": \(learningRate) },
          "training": { "batch_size": \(batch), "epochs": \(epochs), "seed": 0 }
        }
        """
    }

    @Test func linearRegressionReachesTheLeastSquaresLine() throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        try directory.write("linear.csv", text: Self.regressionCSV)
        let trainer = try Self.trainer(directory, config: Self.regressionConfig())
        let summary = try trainer.fit(options: silentOptions())
        #expect(summary.epochs.count == 2000 && trainer.completedEpochs == 2000)
        let w = trainer.model.parameters[0], b = trainer.model.parameters[1]
        #expect(abs(w - 0.9424) < 1e-2, "w = \(w)")
        #expect(abs(b - 0.7291) < 1e-2, "b = \(b)")
        // The final loss is the least-squares residual: Σ (y − 0.94242 x − 0.72909)² / 10.
        let ys: [Double] = [1.0, 1.3, 3.1, 2.0, 5.0, 6.3, 6.6, 7.4, 8.0, 9.0]
        let slope = 77.75 / 82.5, intercept = 4.97 - slope * 4.5
        let residual = ys.enumerated().reduce(0.0) { $0 + pow($1.element - slope * Double($1.offset) - intercept, 2) } / 10
        #expect(abs(summary.epochs.last!.train.meanLoss - residual) < 1e-3)
        let evaluated = try trainer.evaluate(trainer.data.train)
        #expect(evaluated.count == 10 && abs(evaluated.meanLoss - residual) < 1e-3)
        #expect(summary.epochs.allSatisfy { $0.validation == nil })
    }

    /// `fit` keeps the scaling it trained with — standardization fitted on the rows the validation split leaves
    /// for training — and `evaluate` uses it, so the test figures `evaluate` gives after `fit` are the ones `fit`
    /// reported (fitted on every training row instead, the scaling differs, and so would they).
    @Test func evaluateAfterFitScalesAsFitDid() throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        try directory.write("train.csv", text: classificationCSV(rows: 96, seed: 3))
        try directory.write("test.csv", text: classificationCSV(rows: 40, seed: 4))
        let data = #"{"format": "csv", "train": "train.csv", "test": "test.csv", "target": "label", "scaling": "standardize"}"#
        let job = try JobConfig.load(path: try directory.write("job.json", text: classificationConfig(data: data)))
        let dataset = try Dataset.load(job.data, relativeTo: job.sourcePath)
        let model = try Sequential(inputSize: 4, seed: 7) {
            Dense(8, activation: .tanh)
            Dense(3, activation: .softmax)
        }
        try model.compile(optimizer: .adam(learningRate: 0.01), loss: .sparseCategoricalCrossentropy, metrics: [.accuracy])
        #expect(model.inputScaling == nil)
        let history = try model.fit(dataset, epochs: 3, batchSize: 16, validationSplit: 0.25, options: silentOptions())
        let trainedScaling = DataSource(dataset, validationSplit: 0.25).scaling
        #expect(model.inputScaling == trainedScaling)
        #expect(trainedScaling != DataSource(dataset, validationSplit: 0).scaling)
        let reported = try #require(history.test), evaluated = try model.evaluate(dataset)
        #expect(evaluated.count == 40 && evaluated.correct == reported.correct && abs(evaluated.meanLoss - reported.meanLoss) < 1e-6,
                "evaluate: \(evaluated.meanLoss), \(evaluated.correct); fit reported \(reported.meanLoss), \(reported.correct)")
    }

    @Test func resumingGivesBitwiseIdenticalParameters() throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        try directory.write("train.csv", text: classificationCSV(rows: 96, seed: 1))
        let config = classificationConfig(epochs: 6, data: #"{"format": "csv", "train": "train.csv", "target": "label", "prefetch": true}"#)

        let straight = try Self.trainer(directory, config: config)
        let straightSummary = try straight.fit(options: silentOptions())

        let firstHalf = try Self.trainer(directory, config: config, epochs: 3)
        var options = silentOptions()
        options.checkpointDirectory = directory.file("checkpoints")
        _ = try firstHalf.fit(options: options)
        let checkpoint = directory.file("checkpoints/epoch-0003.safetensors")
        #expect(FileManager.default.fileExists(atPath: checkpoint))

        let resumed = try Self.trainer(directory, config: config)
        #expect(resumed.model.parameterBits != firstHalf.model.parameterBits)
        try resumed.restore(from: checkpoint)
        #expect(resumed.completedEpochs == 3)
        #expect(resumed.model.parameterBits == firstHalf.model.parameterBits)
        let resumedSummary = try resumed.fit(options: silentOptions())

        #expect(resumedSummary.epochs.map(\.epoch) == [3, 4, 5])
        #expect(resumed.model.parameterBits == straight.model.parameterBits)
        #expect(resumed.optimizer.iterations == straight.optimizer.iterations)
        #expect(resumed.optimizer.iterations == 6 * 6)
        for (a, b) in zip(resumed.optimizer.state, straight.optimizer.state) {
            #expect(a.arena.array.map(\.bitPattern) == b.arena.array.map(\.bitPattern), "optimizer state \(a.name)")
        }
        #expect(resumedSummary.epochs.map(\.train.lossSum) == straightSummary.epochs.suffix(3).map(\.train.lossSum))
        // Training did something: the straight run's loss fell.
        #expect(straightSummary.epochs.last!.train.meanLoss < straightSummary.epochs.first!.train.meanLoss)
    }

    /// An update that applies the optimizer where the gradients arrive, as a parameter server does, and ends the
    /// job after `stopAfter` steps.
    final class ApplyingUpdate: AsynchronousUpdate {
        let workerCount = 1, workerIndex = 0
        let stopAfter: Int, specification: OptimizerSpec
        private(set) var steps = 0
        private var optimizer: Optimizer?
        init(stopAfter: Int, optimizer: OptimizerSpec) { (self.stopAfter, specification) = (stopAfter, optimizer) }

        func start(model: Sequential, data: DataSource) throws -> Bool {
            optimizer = try specification.makeOptimizer(parameterCount: model.parameterCount, trainableCount: model.trainableCount)
            return true
        }

        func exchange(gradients: FlatArena, statistics: LossStatistics, parameters: FlatArena) throws -> Bool {
            optimizer!.apply(parameters: parameters.base, gradients: gradients.base)
            steps += 1
            return steps < stopAfter
        }
    }

    /// An asynchronous worker runs the one training loop: with its update applied where it is received, one worker
    /// trains the bits one synchronous process trains; and it stops where the job ends it, mid-epoch, without
    /// counting that epoch.
    @Test func anAsynchronousWorkerRunsTheSameLoop() throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        try directory.write("train.csv", text: classificationCSV(rows: 96, seed: 4))
        let config = classificationConfig(epochs: 2)
        var job = try JobConfig.load(path: try directory.write("job.json", text: config))
        let data = try DataSource.load(config: job)
        let synchronous = try Trainer(config: job, data: data)
        _ = try synchronous.fit(options: silentOptions())
        let steps = synchronous.pipeline.stepsPerEpoch
        for (stopAfter, epochs) in [(2 * steps, 1), (2 * steps + 1, 2)] {
            job.training.epochs = 2
            let update = ApplyingUpdate(stopAfter: stopAfter, optimizer: job.optimizer)
            let worker = try Trainer(config: job, data: data, asynchronous: .worker(update))
            try worker.synchronizeReplicas()
            let summary = try worker.fit(options: silentOptions())
            #expect(update.steps == stopAfter)
            #expect(summary.epochs.count == epochs && summary.test == nil)
            if stopAfter == 2 * steps {
                #expect(worker.model.parameterBits == synchronous.model.parameterBits)
            }
        }
        // Reduction groups order a synchronous sum: an asynchronous worker refuses them.
        job.training.reductionGroups = 2
        expectTandemError(.usage, mentioning: ["asynchronous worker", "reduction_groups"]) {
            _ = try Trainer(config: job, data: data, asynchronous: .worker(ApplyingUpdate(stopAfter: 1, optimizer: job.optimizer)))
        }
    }

    /// A chief whose workers are one synchronous trainer in this process, run an epoch at a time: the epochs the
    /// coordinator waits for are that trainer's, and the parameters and optimizer state it reached come back.
    final class InProcessJob: AsynchronousCoordinator {
        let workers: Trainer
        private(set) var opened: (completedEpochs: Int, stepsPerEpoch: Int)?
        init(workers: Trainer) { self.workers = workers }

        func open(model: Sequential, optimizer: Optimizer, data: DataSource, completedEpochs: Int, stepsPerEpoch: Int) throws {
            opened = (completedEpochs, stepsPerEpoch)
            workers.model.parameters.copy(from: model.parameters)
        }

        func awaitEpoch(_ epoch: Int, of epochs: Int, model: Sequential, optimizer: Optimizer) throws -> AsynchronousEpoch {
            var train = LossStatistics()
            workers.pipeline.startEpoch(epoch)
            defer { workers.pipeline.finishEpoch() }
            while let batch = try workers.pipeline.next() { train += try workers.step(batch, epoch: epoch) }
            model.parameters.copy(from: workers.model.parameters)
            for ((_, mine), (_, theirs)) in zip(optimizer.state, workers.optimizer.state) { mine.copy(from: theirs) }
            optimizer.iterations = workers.optimizer.iterations
            return AsynchronousEpoch(train: train, pushes: workers.optimizer.iterations, seconds: 0.5)
        }
    }

    /// The chief of an asynchronous job runs the one training loop too: its epochs are its workers' pushes, each
    /// reported with the test figures of the parameters they reached and checkpointed with their optimizer state,
    /// so that a synchronous process resumes from it bit for bit.
    @Test func anAsynchronousChiefRunsTheSameLoop() throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        try directory.write("train.csv", text: classificationCSV(rows: 96, seed: 5))
        try directory.write("test.csv", text: classificationCSV(rows: 40, seed: 6))
        let config = classificationConfig(epochs: 3, data: #"{"format": "csv", "train": "train.csv", "test": "test.csv", "target": "label"}"#)
        var job = try JobConfig.load(path: try directory.write("job.json", text: config))
        let data = try DataSource.load(config: job)
        let synchronous = try Trainer(config: job, data: data)
        _ = try synchronous.fit(options: silentOptions())
        let steps = synchronous.pipeline.stepsPerEpoch

        job.training.epochs = 2
        let workers = InProcessJob(workers: try Trainer(config: job, data: data))
        let chief = try Trainer(config: job, data: data, asynchronous: .coordinator(workers))
        try chief.synchronizeReplicas()
        var options = silentOptions()
        options.checkpointDirectory = directory.file("checkpoints")
        let summary = try chief.fit(options: options)
        #expect(workers.opened?.completedEpochs == 0 && workers.opened?.stepsPerEpoch == steps)
        #expect(summary.epochs.map(\.pushes) == [steps, 2 * steps])
        #expect(summary.epochs.allSatisfy { $0.seconds == 0.5 && $0.train.count == steps * 16 && $0.test?.count == 40 })
        #expect(summary.test?.correct == summary.epochs.last?.test?.correct)
        #expect(summary.test?.meanLoss == (try chief.evaluate(try #require(data.test))).meanLoss)

        // Its checkpoint holds what the workers reached: a synchronous process resumes from it to the same bits.
        job.training.epochs = 3
        let resumed = try Trainer(config: job, data: data)
        try resumed.restore(from: directory.file("checkpoints/epoch-0002.safetensors"))
        _ = try resumed.fit(options: silentOptions())
        #expect(resumed.model.parameterBits == synchronous.model.parameterBits)
    }

    @Test func restoringAFinishedRunAsksForMoreEpochs() throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        try directory.write("train.csv", text: classificationCSV(rows: 64, seed: 2))
        let config = classificationConfig(epochs: 2)
        var options = silentOptions()
        options.checkpointDirectory = directory.file("checkpoints")
        _ = try Self.trainer(directory, config: config).fit(options: options)
        let path = directory.file("checkpoints/epoch-0002.safetensors")
        expectTandemError(.usage, mentioning: [path, "2 epochs"]) { try Self.trainer(directory, config: config).restore(from: path) }
    }

    @Test func validationSplitReportsValidationStatistics() throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        try directory.write("train.csv", text: classificationCSV(rows: 96, seed: 3))
        let config = classificationConfig(epochs: 3, data: #"{"format": "csv", "train": "train.csv", "target": "label", "validation_split": 0.25}"#)
        let trainer = try Self.trainer(directory, config: config)
        #expect(trainer.data.trainRows == (0..<72).map { Int32($0) })
        #expect(trainer.data.validationRows == (72..<96).map { Int32($0) })
        #expect(trainer.pipeline.stepsPerEpoch == 4)
        let summary = try trainer.fit(options: silentOptions())
        #expect(summary.epochs.count == 3)
        for result in summary.epochs {
            #expect(result.train.count == 64)
            let validation = try #require(result.validation)
            #expect(validation.count == 24)
            #expect(validation.meanLoss.isFinite && validation.meanLoss > 0)
            #expect((0...24).contains(validation.correct))
        }
        // The last epoch's figures are those of the trained model on the held-out rows.
        let again = try trainer.evaluate(trainer.data.train, rows: trainer.data.validationRows)
        #expect(summary.epochs.last!.validation == again)
    }

    @Test func nonFiniteLossStopsWithEpochAndStep() throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        try directory.write("linear.csv", text: Self.regressionCSV)
        // Two steps per epoch: the first step's update (lr 1e30) makes the second step's loss overflow.
        let trainer = try Self.trainer(directory, config: Self.regressionConfig(learningRate: "1e30", batch: 5, epochs: 3))
        let error = expectTandemError(.numeric, mentioning: ["epoch 1", "step 2", "learning_rate"]) {
            _ = try trainer.fit(options: silentOptions())
        }
        #expect(error?.message.contains("inf") == true || error?.message.contains("nan") == true)
        #expect(trainer.completedEpochs == 0)
    }

    @Test func metricsAndCheckpointsAreWritten() throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        try directory.write("train.csv", text: classificationCSV(rows: 80, seed: 4))
        try directory.write("test.csv", text: classificationCSV(rows: 30, seed: 5))
        let config = classificationConfig(
            epochs: 4, data: #"{"format": "csv", "train": "train.csv", "test": "test.csv", "target": "label", "validation_split": 0.2}"#)
        let trainer = try Self.trainer(directory, config: config)
        var options = silentOptions()
        options.metricsPath = directory.file("metrics.jsonl")
        options.checkpointDirectory = directory.file("runs")
        options.keepCheckpoints = 2
        let summary = try trainer.fit(options: options)
        #expect(summary.test?.count == 30)

        let lines = try String(contentsOfFile: directory.file("metrics.jsonl"), encoding: .utf8).split(separator: "\n")
        #expect(lines.count == 5)
        let records = try lines.map { try #require(try JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any]) }
        for (index, record) in records.prefix(4).enumerated() {
            #expect(record["event"] as? String == "epoch")
            #expect(record["epoch"] as? Int == index + 1)
            #expect(record["loss"] is Double && record["accuracy"] is Double && record["val_loss"] is Double)
        }
        #expect(records[4]["event"] as? String == "summary")
        #expect(records[4]["test_loss"] as? Double == summary.test?.meanLoss)

        let saved = try FileManager.default.contentsOfDirectory(atPath: directory.file("runs")).sorted()
        #expect(saved == ["epoch-0003.safetensors", "epoch-0004.safetensors"])
        let last = try Checkpoint.read(path: directory.file("runs/epoch-0004.safetensors"))
        #expect(last.metadata["epoch"] == "4" && last.metadata["name"] == "tiny-classifier")
        #expect(last.metadata["step"] == String(trainer.optimizer.iterations))
        let restored = try JSONDecoder().decode(JobConfig.self, from: Data(try #require(last.metadata["config"]).utf8))
        #expect(restored.model == trainer.config.model)
    }

    @Test func inconsistentJobsAreRejected() throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        try directory.write("train.csv", text: classificationCSV(rows: 40, seed: 6))
        // A softmax output trained with MSE.
        let mse = classificationConfig().replacingOccurrences(of: "sparse_categorical_crossentropy", with: "mean_squared_error")
        expectTandemError(.badConfig, mentioning: ["softmax", "mean_squared_error"]) { _ = try Self.trainer(directory, config: mse) }
        // The data has 4 features, the model expects 5.
        let wide = classificationConfig().replacingOccurrences(of: #""input_size": 4"#, with: #""input_size": 5"#)
        expectTandemError(.badInput, mentioning: ["4 features", "model.input_size is 5"]) { _ = try Self.trainer(directory, config: wide) }
        // Labels go up to 2 but the model has 2 outputs.
        let narrow = classificationConfig().replacingOccurrences(of: #"{ "units": 3, "activation": "softmax" }"#,
                                                                  with: #"{ "units": 2, "activation": "softmax" }"#)
        expectTandemError(.badInput, mentioning: ["has label 2.0", "only 2 outputs"]) { _ = try Self.trainer(directory, config: narrow) }
        // Missing training data names the file it looked for.
        let absent = classificationConfig().replacingOccurrences(of: #""train": "train.csv""#, with: #""train": "absent.csv""#)
        expectTandemError(.io, mentioning: [directory.file("absent.csv")]) { _ = try Self.trainer(directory, config: absent) }
        // Reduction groups run a model with synchronized batch normalization in lockstep, where an unsynchronized one
        // would keep only the last group's statistics for backward: refused, naming the layer.
        let mixed = classificationConfig()
            .replacingOccurrences(of: #"{ "units": 8, "activation": "tanh" }, "#,
                                  with: #"{ "units": 8, "activation": "tanh" }, { "type": "batch_normalization", "synchronized": true }, { "type": "batch_normalization" }, "#)
            .replacingOccurrences(of: #""seed": 7"#, with: #""seed": 7, "reduction_groups": 4"#)
        expectTandemError(.badConfig, mentioning: ["model.layers[2]", "every batch_normalization layer must be synchronized"]) {
            _ = try Self.trainer(directory, config: mixed)
        }
        // Every batch normalization synchronized: the lockstep pass trains.
        let synchronized = mixed.replacingOccurrences(of: #"{ "type": "batch_normalization" }"#, with: #"{ "type": "batch_normalization", "synchronized": true }"#)
        let summary = try Self.trainer(directory, config: synchronized, epochs: 2).fit(options: silentOptions())
        #expect(summary.epochs.count == 2 && summary.epochs[1].train.meanLoss.isFinite)
    }
}
