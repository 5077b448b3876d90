import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import TandemCore
import TandemData
import TandemNN
import TandemTrain

/// The asynchronous parameter-server strategy (TensorFlow's ParameterServerStrategy): ps tasks hold the parameters
/// in contiguous shards and apply pushed gradients with the optimizer; workers loop pull → gradients on their own
/// data shard → push, never waiting for each other; the chief counts pushes against the budget (epochs × steps of
/// one epoch of data), evaluates and checkpoints after every epoch's worth, and stops the job.
public struct ParameterServerJob {
    public let job: JobConfig
    public let spec: ClusterSpec
    private let addresses: [ClusterSpec.Address]
    private let ranges: [Range<Int>]
    private let parameterCount: Int

    public init(job: JobConfig, spec: ClusterSpec) throws {
        try spec.validate(for: .parameterServer)
        self.job = job
        self.spec = spec
        addresses = spec.tasks.filter { $0.task.type == .ps }.map(\.address)
        parameterCount = try Sequential(spec: job.model, seed: job.seed, maxBatchSize: 1).parameterCount
        ranges = shardRanges(count: parameterCount, parts: addresses.count)
    }

    // MARK: ps

    /// Serves this task's shard until the chief stops the job (plus a moment for workers to hear it).
    public func serve(index: Int) throws {
        let shard = try ParameterShard(job: job, range: ranges[index])
        let address = addresses[index]
        let server = GRPCServer(
            transport: .http2NIOPosix(address: .ipv4(host: try ipv4Address(of: address.host), port: address.port),
                                      transportSecurity: .plaintext),
            services: [ParameterServerService(shard: shard, label: "ps \(index)")])
        let finished = DispatchSemaphore(value: 0)
        let failure = Failure()
        Task.detached {
            do { try await server.serve() } catch { failure.error = error }
            finished.signal()
        }
        print("ps \(index): serving parameters \(ranges[index].lowerBound)..<\(ranges[index].upperBound) at \(address.text)")
        fflush(nil)
        while !shard.isStopped {
            if finished.wait(timeout: .now() + 0.2) == .success {
                throw TandemError(.communication, "ps \(index) at \(address.text): \(failure.error.map { String(describing: $0) } ?? "server ended")")
            }
        }
        Thread.sleep(forTimeInterval: 2)
        server.beginGracefulShutdown()
        _ = finished.wait(timeout: .now() + 5)
    }

    // MARK: worker

    public func work(index: Int, workers: Int, data: DataSource) throws {
        let clients = try addresses.map { try ParameterServerClient(host: $0.host, port: $0.port) }
        try waitForParameterServers(clients)
        let loss = try Loss(name: job.loss)
        let batch = job.training.batchSize
        let pipeline = try BatchPipeline(examples: data.train, rows: data.trainRows, scaling: data.scaling,
                                         globalBatchSize: batch * workers, shard: (workers, index), seed: job.seed)
        let model = try Sequential(spec: job.model, seed: job.seed, maxBatchSize: batch)
        let fusesLast = loss.fusesSoftmax && [.softmax, .identity].contains(model.lastActivation)
        var epoch = 0
        while true {
            pipeline.startEpoch(epoch)
            defer { pipeline.finishEpoch() }
            while let next = try pipeline.next() {
                for (i, client) in clients.enumerated() {
                    var reader = Wire.Reader(try client.call(.pull, []))
                    if try reader.int64() != 0 { return }  // the chief has ended the job
                    _ = try reader.int64()
                    try reader.floats(ranges[i].count, into: model.parameters.base + ranges[i].lowerBound)
                }
                model.gradients.base.update(repeating: 0, count: parameterCount)
                let output = model.forward(next.features, rows: next.rows)
                let statistics = loss.compute(outputs: output, targets: next.targets, rows: next.rows, columns: model.outputSize,
                                              dOutputs: model.dOutput, gradientScale: 1 / Float(next.rows))
                model.backward(lossFusesLastActivation: fusesLast)
                for (i, client) in clients.enumerated() {
                    var message = Wire()
                    message.append(Int64(index))
                    message.append(UnsafeBufferPointer(start: model.gradients.base + ranges[i].lowerBound, count: ranges[i].count))
                    message.append(i == 0 ? [Float(statistics.lossSum), Float(statistics.correct), Float(statistics.count)] : [0, 0, 0])
                    do {
                        _ = try client.call(.push, message.bytes)
                    } catch let error as TandemError where error.message.contains("failedPrecondition") {
                        return  // stopped between our pull and push
                    }
                }
            }
            epoch += 1
        }
    }

    // MARK: chief

    /// Runs the job to its budget; returns the summary the CLI reports.
    public func lead(data: DataSource, options: TrainingOptions) throws -> TrainingSummary {
        let start = ProcessStatistics.now()
        let clients = try addresses.map { try ParameterServerClient(host: $0.host, port: $0.port) }
        try waitForParameterServers(clients)
        let loss = try Loss(name: job.loss)
        let model = try Sequential(spec: job.model, seed: job.seed, maxBatchSize: 256)
        let evaluator = Evaluator(model: model, loss: loss, scaling: data.scaling, targetWidth: data.train.targetWidth)
        let stepsPerEpoch = data.trainRows.count / job.training.batchSize
        let budget = stepsPerEpoch * job.training.epochs
        let metrics = try options.metricsPath.map { try MetricsWriter(path: $0) }
        let checkpoints = try options.checkpointDirectory.map { try CheckpointDirectory(path: $0, keep: options.keepCheckpoints) }
        var summary = TrainingSummary()
        var epochStatistics = LossStatistics()
        var epochStart = ProcessStatistics.now()
        var epoch = 0
        defer { for client in clients { _ = try? client.call(.stop, []) } }

        while epoch < job.training.epochs {
            Thread.sleep(forTimeInterval: 0.02)
            var reader = Wire.Reader(try status(clients[0], index: 0))
            let pushes = Int(try reader.int64())
            _ = try reader.int64()
            let pushed = try reader.floats(3)
            epochStatistics += LossStatistics(lossSum: Double(pushed[0]), correct: Int(pushed[1]), count: Int(pushed[2]))
            guard pushes >= (epoch + 1) * stepsPerEpoch || pushes >= budget else { continue }
            for (i, client) in clients.enumerated().dropFirst() { _ = try status(client, index: i) }  // every ps still there
            if epoch + 1 == job.training.epochs {
                // Stop before the last pull, so the final figures are those of the parameters the job ends with.
                for client in clients { _ = try? client.call(.stop, []) }
            }
            try pullAll(clients, into: model)
            let test = try data.test.map { try evaluator.evaluate($0) }
            let seconds = ProcessStatistics.now() - epochStart
            var result = EpochResult(epoch: epoch, train: epochStatistics, validation: nil, seconds: seconds)
            result.test = test
            summary.epochs.append(result)
            if summary.startupSeconds == 0 { summary.startupSeconds = ProcessStatistics.secondsSinceProcessStart() ?? 0 }
            var line = "Epoch \(epoch + 1)/\(job.training.epochs)  \(pushes) pushes  loss \(fixed(epochStatistics.meanLoss))"
            if loss.reportsAccuracy { line += "  accuracy \(fixed(epochStatistics.accuracy))" }
            if let test, loss.reportsAccuracy { line += "  test_accuracy \(fixed(test.accuracy))" }
            print(line + String(format: "  %.2f s  %.0f samples/s", seconds, result.samplesPerSecond))
            fflush(nil)
            try metrics?.write(epoch: result, reportsAccuracy: loss.reportsAccuracy)
            if let checkpoints {
                let optimizer = SGD(parameterCount: model.parameterCount, learningRate: job.optimizer.learningRate)
                optimizer.iterations = pushes
                try checkpoints.save(TrainingState.checkpoint(model: model, optimizer: optimizer, epoch: epoch + 1,
                                                              seed: job.seed, config: job, scaling: data.scaling), epoch: epoch + 1)
            }
            epoch += 1
            epochStatistics = LossStatistics()
            epochStart = ProcessStatistics.now()
        }
        summary.test = summary.epochs.last?.test
        summary.wallSeconds = ProcessStatistics.now() - start
        summary.peakResidentBytes = ProcessStatistics.peakResidentBytes()
        try metrics?.write(summary: summary, reportsAccuracy: loss.reportsAccuracy)
        return summary
    }

    private func pullAll(_ clients: [ParameterServerClient], into model: Sequential) throws {
        for (i, client) in clients.enumerated() {
            var reader = Wire.Reader(try client.call(.pull, []))
            _ = try reader.int64(); _ = try reader.int64()
            try reader.floats(ranges[i].count, into: model.parameters.base + ranges[i].lowerBound)
        }
    }

    /// A ps that fails to answer for 5 s ends the job with its name.
    private func status(_ client: ParameterServerClient, index: Int) throws -> [UInt8] {
        let deadline = ProcessStatistics.now() + 5
        while true {
            do {
                return try client.call(.status, [])
            } catch let error as TandemError {
                if ProcessStatistics.now() > deadline {
                    throw TandemError(.communication, "ps \(index) stopped answering (\(error.message)); resume with --resume from the last checkpoint once it is back")
                }
                Thread.sleep(forTimeInterval: 0.2)
            }
        }
    }

    /// Retries with back-off until every ps answers, for up to a minute.
    private func waitForParameterServers(_ clients: [ParameterServerClient]) throws {
        for (i, client) in clients.enumerated() {
            var pause = 0.05
            let deadline = ProcessStatistics.now() + 60
            while true {
                do {
                    _ = try client.call(.status, [])
                    break
                } catch let error as TandemError {
                    if error.message.contains("permissionDenied") { throw error }
                    guard ProcessStatistics.now() < deadline else {
                        throw TandemError(.timeout, "ps \(i) at \(client.address) did not answer within 60 s (\(error.message))")
                    }
                    Thread.sleep(forTimeInterval: pause)
                    pause = min(pause * 2, 1)
                }
            }
        }
    }

    private func fixed(_ value: Double) -> String { String(format: "%.4f", value) }
}

private final class Failure: @unchecked Sendable {
    var error: Error?
}
