import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import NIOCore
import NIOPosix
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
    fileprivate let addresses: [ClusterSpec.Address]
    private let ranges: [Range<Int>]
    /// Workers in the job.
    public let workerCount: Int
    fileprivate let security: ChannelSecurity
    /// How long a worker waits for a ps's reply: longer than a ps holds one for a straggler under max_staleness.
    private let replyTimeoutSeconds = 30.0

    public init(job: JobConfig, spec: ClusterSpec) throws {
        try spec.validate(for: .parameterServer)
        self.job = job
        self.spec = spec
        addresses = spec.tasks.filter { $0.task.type == .ps }.map(\.address)
        ranges = shardRanges(count: try Sequential(spec: job.model, seed: job.seed, maxBatchSize: 1).parameterCount, parts: addresses.count)
        workerCount = spec.roles[.worker]?.count ?? 0
        security = ChannelSecurity(job: job)
    }

    /// Makes gRPC's event-loop threads Swift's global executor, so a stream's async code runs on the thread its
    /// bytes arrived on instead of hopping to Swift's own pool and back for every message (measured: the ps's CPU per
    /// push 250–350 µs instead of 330–600 µs, five paired runs). Call once, from the main thread, before any async
    /// work has started; if it is too late, the job runs as it would without it.
    public static func runAsyncWorkOnEventLoops() {
        _ = NIOSingletons.unsafeTryInstallSingletonPosixEventLoopGroupAsConcurrencyGlobalExecutor()
    }

    // MARK: ps

    /// Serves this task's shard until the chief stops the job (plus a moment for workers to hear it).
    public func serve(index: Int) throws {
        let shard = try ParameterShard(job: job, range: ranges[index], label: "ps \(index)")
        let address = addresses[index]
        var config = HTTP2ServerTransport.Posix.Config.defaults
        config.http2.maxFrameSize = HTTP2Tuning.maxFrameSize
        config.http2.targetWindowSize = HTTP2Tuning.windowSize
        let server = GRPCServer(
            transport: .http2NIOPosix(address: .ipv4(host: try ipv4Address(of: address.host), port: address.port),
                                      transportSecurity: security.server, config: config),
            services: [ParameterServerService(shard: shard)])
        let finished = DispatchSemaphore(value: 0)
        let failure = Box<Error>()
        Task.detached {
            do { try await server.serve() } catch { failure.value = error }
            finished.signal()
        }
        print("ps \(index): serving parameters \(ranges[index].lowerBound)..<\(ranges[index].upperBound) at \(address.text)")
        fflush(nil)
        while !shard.isStopped {
            if finished.wait(timeout: .now() + 0.2) == .success {
                throw TandemError(.communication, "ps \(index) at \(address.text): \(failure.value.map { String(describing: $0) } ?? "server ended")")
            }
        }
        print(shard.summary)
        Thread.sleep(forTimeInterval: 2)
        server.beginGracefulShutdown()
        _ = finished.wait(timeout: .now() + 5)
    }

    // MARK: worker

    /// What a worker did: its steps, the time spent on gradients and on the exchange with the ps, and the CPU time
    /// all of it took (gRPC's threads included).
    public struct WorkerSummary: Sendable {
        public var steps = 0
        public var computeSeconds = 0.0
        public var exchangeSeconds = 0.0
        public var cpuSeconds = 0.0

        public init() {}
    }

    /// Opens this worker's stream to every ps and sends its fingerprint. Retries with back-off for `timeoutSeconds`
    /// while a ps is not up yet or the chief has not opened the job; a fingerprint the chief's differs from is final.
    fileprivate func join(_ clients: [ParameterServerClient], worker: Int, fingerprint: Fingerprint, timeoutSeconds: Double) throws -> [ExchangeLink] {
        var hello = Wire()
        hello.append(string: fingerprint.encoded)
        let deadline = ProcessStatistics.now() + timeoutSeconds
        return try retrying(until: deadline) {
            let links = clients.map { ExchangeLink(client: $0, worker: worker) }
            for link in links { link.send(hello.bytes) }
            // The answer is the first reply, which carries the parameters: wait until every link has one or ended.
            let failed = links.first { !$0.waitForFirstReply(timeoutSeconds: min(max(deadline - ProcessStatistics.now(), 1), 86_400)) }
            guard let failed else { return .done(links) }
            for link in links { link.close() }
            let failure = failed.failure ?? TandemError(.timeout, "ps at \(failed.address) did not admit worker \(worker) within \(wholeSeconds(timeoutSeconds)) s")
            if failed.endingStatus?.isTLSRefusal == true { throw failure }  // a certificate does not mend with waiting
            switch failed.endingStatus?.code {
            case .failedPrecondition?: throw TandemError(.badConfig, failed.endingStatus?.message ?? "refused by the chief")
            case .unavailable?, .alreadyExists?: return .retry(failure)  // not up yet, not opened yet, or our old stream not yet gone
            default: throw failure
            }
        }
    }

    /// Reads one reply from every ps into `parameters`; true when the chief has ended the job.
    fileprivate func receiveParameters(_ links: [ExchangeLink], into parameters: FlatArena) throws -> Bool {
        var stopped = false
        for (i, link) in links.enumerated() {
            var reader = Wire.Reader(try link.receive(timeoutSeconds: replyTimeoutSeconds))
            stopped = try reader.int64() != 0 || stopped
            _ = try reader.int64()
            try reader.floats(ranges[i].count, into: parameters.base + ranges[i].lowerBound)
        }
        return stopped
    }

    /// Sends one step's gradient to every ps, each its shard (ps 0 also the step's loss statistics).
    fileprivate func push(_ gradients: FlatArena, statistics: LossStatistics, on links: [ExchangeLink]) {
        for (i, link) in links.enumerated() {
            var message = Wire(reservingCapacity: 4 * ranges[i].count + 12)
            message.append(UnsafeBufferPointer(start: gradients.base + ranges[i].lowerBound, count: ranges[i].count))
            message.append(i == 0 ? [Float(statistics.lossSum), Float(statistics.correct), Float(statistics.count)] : [0, 0, 0])
            link.send(message.bytes)
        }
    }

    /// What the chief and every worker must agree on: the job, the model, the data and the cluster.
    fileprivate func fingerprint(model: Sequential, data: DataSource) -> Fingerprint {
        Fingerprint(config: job, model: model, data: data, stepsPerEpoch: data.trainRows.count / job.training.batchSize,
                    replicas: workerCount,
                    extra: [("cluster", spec.tasks.map { "\($0.task.label) \($0.address.text)" }.joined(separator: ", "))])
    }

    // MARK: chief

    /// Runs the job to its budget (from a checkpoint with `resume`); returns the summary the CLI reports.
    public func lead(data: DataSource, options: TrainingOptions, resume: String? = nil, stallSeconds: Double = 60) throws -> TrainingSummary {
        let start = ProcessStatistics.now()
        let clients = try addresses.map { try ParameterServerClient(host: $0.host, port: $0.port, security: security) }
        try waitForParameterServers(clients, timeoutSeconds: stallSeconds)
        let loss = try Loss(name: job.loss)
        let model = try Sequential(spec: job.model, seed: job.seed, maxBatchSize: 256)
        // A full copy of the ps tasks' optimizer state, gathered for checkpoints and handed back on resume.
        let optimizer = try job.optimizer.makeOptimizer(parameterCount: model.parameterCount, trainableCount: model.trainableCount)
        let evaluator = Evaluator(model: model, loss: loss, scaling: data.scaling, targetWidth: data.train.targetWidth)
        let stepsPerEpoch = data.trainRows.count / job.training.batchSize
        let budget = stepsPerEpoch * job.training.epochs
        var epoch = 0
        if let resume {
            epoch = try TrainingState.restore(try Checkpoint.read(path: resume), path: resume, into: model, optimizer: optimizer)
            guard epoch < job.training.epochs else {
                throw TandemError(.usage, "\(resume) already holds \(epoch) epochs and the job asks for \(job.training.epochs): raise --epochs to train further")
            }
            print("Resuming from \(resume) after epoch \(epoch)")
        }
        // Every ps starts from the chief's parameters and push count; only then are workers let in.
        let opening = fingerprint(model: model, data: data)
        for (i, client) in clients.enumerated() {
            var message = Wire(reservingCapacity: 4 * ranges[i].count * (1 + optimizer.state.count) + 1024)
            message.append(Int64(epoch * stepsPerEpoch))
            message.append(string: opening.encoded)
            for arena in stateArenas(parameters: model.parameters, optimizer: optimizer) {
                message.append(UnsafeBufferPointer(start: arena.base + ranges[i].lowerBound, count: ranges[i].count))
            }
            _ = try client.call(.open, message.bytes)
        }
        // The epoch's end is every chief's: the progress line, metrics, TensorBoard and the checkpoint.
        let recorder = try EpochRecorder(options: options, isChief: true, epochs: job.training.epochs, stepsPerEpoch: stepsPerEpoch,
                                         batchSize: job.training.batchSize, reportsAccuracy: loss.reportsAccuracy)
        var summary = TrainingSummary()
        var epochStatistics = LossStatistics()
        var epochStart = ProcessStatistics.now()
        var lastPushes = -1, lastProgress = ProcessStatistics.now()
        defer { for client in clients { _ = try? client.call(.stop, []) } }

        while epoch < job.training.epochs {
            Thread.sleep(forTimeInterval: 0.02)
            var reader = Wire.Reader(try status(clients[0], index: 0, checkpointDirectory: options.checkpointDirectory))
            let pushes = Int(try reader.int64())
            _ = try reader.int64()
            let pushed = try reader.floats(3)
            for refusal in String(decoding: try reader.string(), as: UTF8.self).split(separator: "\n") {
                FileHandle.standardError.write(Data("tandem: \(refusal) (refused; the job goes on with the other workers)\n".utf8))
            }
            epochStatistics += LossStatistics(lossSum: Double(pushed[0]), correct: Int(pushed[1]), count: Int(pushed[2]))
            if pushes != lastPushes {
                (lastPushes, lastProgress) = (pushes, ProcessStatistics.now())
            } else if ProcessStatistics.now() - lastProgress > stallSeconds {
                throw TandemError(.timeout, "no worker has pushed gradients for \(wholeSeconds(stallSeconds)) s (\(pushes) of \(budget) pushes done): are the workers running? Their logs say why not")
            }
            guard pushes >= (epoch + 1) * stepsPerEpoch || pushes >= budget else { continue }
            for (i, client) in clients.enumerated().dropFirst() { _ = try status(client, index: i, checkpointDirectory: options.checkpointDirectory) }  // every ps still there
            if epoch + 1 == job.training.epochs {
                // Stop before the last pull, so the final figures are those of the parameters the job ends with.
                for client in clients { _ = try? client.call(.stop, []) }
            }
            try pullAll(clients, into: model, optimizer: optimizer)
            let test = try data.test.map { try evaluator.evaluate($0) }
            let seconds = ProcessStatistics.now() - epochStart
            var result = EpochResult(epoch: epoch, train: epochStatistics, validation: nil, seconds: seconds)
            result.test = test
            result.pushes = pushes
            summary.epochs.append(result)
            if summary.startupSeconds == 0 { summary.startupSeconds = ProcessStatistics.secondsSinceProcessStart() ?? 0 }
            optimizer.iterations = pushes
            try recorder.epochEnded(result, learningRate: Double(optimizer.currentLearningRate))
            try recorder.save(epochs: epoch + 1) {
                TrainingState.checkpoint(model: model, optimizer: optimizer, epoch: epoch + 1, seed: job.seed, config: job, scaling: data.scaling)
            }
            epoch += 1
            epochStatistics = LossStatistics()
            epochStart = ProcessStatistics.now()
        }
        summary.test = summary.epochs.last?.test
        summary.wallSeconds = ProcessStatistics.now() - start
        summary.peakResidentBytes = ProcessStatistics.peakResidentBytes()
        try recorder.finish(summary)
        return summary
    }

    /// Every ps's parameters and optimizer state, into the chief's copies.
    private func pullAll(_ clients: [ParameterServerClient], into model: Sequential, optimizer: Optimizer) throws {
        for (i, client) in clients.enumerated() {
            var reader = Wire.Reader(try client.call(.pull, []))
            for arena in stateArenas(parameters: model.parameters, optimizer: optimizer) {
                try reader.floats(ranges[i].count, into: arena.base + ranges[i].lowerBound)
            }
        }
    }

    /// A ps that fails to answer for 5 s ends the job with its name.
    private func status(_ client: ParameterServerClient, index: Int, checkpointDirectory: String?) throws -> [UInt8] {
        let deadline = ProcessStatistics.now() + 5
        while true {
            do {
                return try client.call(.status, [])
            } catch let error as TandemError {
                if ProcessStatistics.now() > deadline {
                    let resume = checkpointDirectory.map { "restart the job with --checkpoint-dir \($0) --resume latest" }
                        ?? "without --checkpoint-dir there is no checkpoint to resume from"
                    throw TandemError(.communication, "ps \(index) stopped answering (\(error.message)); once it is back, \(resume)")
                }
                Thread.sleep(forTimeInterval: 0.2)
            }
        }
    }

    /// Waits until every ps answers, for up to `timeoutSeconds`.
    private func waitForParameterServers(_ clients: [ParameterServerClient], timeoutSeconds: Double) throws {
        let deadline = ProcessStatistics.now() + timeoutSeconds
        for (i, client) in clients.enumerated() {
            try retrying(until: deadline) {
                do {
                    _ = try client.call(.status, [])
                    return .done(())
                } catch let error as TandemError where !error.message.contains("permissionDenied") {
                    return .retry(TandemError(.timeout, "ps \(i) at \(client.address) did not answer within \(wholeSeconds(timeoutSeconds)) s (\(error.message))"))
                }
            }
        }
    }
}

enum Attempt<Value> {
    case done(Value)
    /// Not yet: try again after a pause, or give up with this error once the deadline has passed.
    case retry(Error)
}

/// Repeats `attempt` with pauses growing from 50 ms to 1 s until it is done, throws, or `deadline` passes.
func retrying<Value>(until deadline: Double, _ attempt: () throws -> Attempt<Value>) throws -> Value {
    var pause = 0.05
    while true {
        switch try attempt() {
        case .done(let value):
            return value
        case .retry(let error):
            guard ProcessStatistics.now() < deadline else { throw error }
            Thread.sleep(forTimeInterval: pause)
            pause = min(pause * 2, 1)
        }
    }
}

/// A worker's side of the parameter-server exchange, which its `Trainer` trains through (`AsynchronousUpdate`):
/// each step's gradient goes to the ps tasks, shard by shard, and their reply is the parameters of its next step.
/// Each push and the next pull are one round trip on the worker's stream to each ps.
final class ParameterServerWorker: AsynchronousUpdate {
    let job: ParameterServerJob
    let workerIndex: Int
    var workerCount: Int { job.workerCount }
    private let joinTimeoutSeconds: Double
    private var links: [ExchangeLink] = []
    /// Steps so far and where their time went (compute: from one reply to the next push).
    private(set) var summary = ParameterServerJob.WorkerSummary()
    private var lastReply = 0.0, cpuAtStart = 0.0

    init(job: ParameterServerJob, index: Int, joinTimeoutSeconds: Double) {
        self.job = job
        workerIndex = index
        self.joinTimeoutSeconds = joinTimeoutSeconds
    }

    func start(model: Sequential, data: DataSource) throws -> Bool {
        let clients = try job.addresses.map { try ParameterServerClient(host: $0.host, port: $0.port, security: job.security) }
        links = try job.join(clients, worker: workerIndex, fingerprint: job.fingerprint(model: model, data: data), timeoutSeconds: joinTimeoutSeconds)
        let stopped = try job.receiveParameters(links, into: model.parameters)
        cpuAtStart = ProcessStatistics.cpuSeconds()
        lastReply = ProcessStatistics.now()
        return !stopped
    }

    func exchange(gradients: FlatArena, statistics: LossStatistics, parameters: FlatArena) throws -> Bool {
        let pushed = ProcessStatistics.now()
        job.push(gradients, statistics: statistics, on: links)
        let stopped = try job.receiveParameters(links, into: parameters)
        summary.steps += 1
        summary.computeSeconds += pushed - lastReply
        lastReply = ProcessStatistics.now()
        summary.exchangeSeconds += lastReply - pushed
        // The job's last step: the worker's CPU time is complete.
        if stopped { summary.cpuSeconds = ProcessStatistics.cpuSeconds() - cpuAtStart }
        return !stopped
    }

    /// Closes the streams (the ps close theirs in turn).
    func close() {
        for link in links { link.close() }
        links = []
    }
}
