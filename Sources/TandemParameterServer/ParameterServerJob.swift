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
/// one epoch of data), evaluates and checkpoints after every epoch's worth, and stops the job. Workers and the chief
/// both run `Trainer.fit`: the worker's side of the wire is `ParameterServerWorker`, the chief's
/// `ParameterServerCoordinator`.
public struct ParameterServerJob {
    public let job: JobConfig
    public let spec: ClusterSpec
    private let addresses: [ClusterSpec.Address]
    private let ranges: [Range<Int>]
    /// Workers in the job.
    public let workerCount: Int
    private let security: ChannelSecurity
    /// How long a worker waits for a ps's reply: longer than a ps holds one for a straggler under max_staleness.
    let replyTimeoutSeconds = 30.0

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
    func join(_ clients: [ParameterServerClient], worker: Int, fingerprint: Fingerprint, timeoutSeconds: Double) throws -> [ExchangeLink] {
        let deadline = ProcessStatistics.now() + timeoutSeconds
        return try retrying(until: deadline) {
            let links = clients.indices.map { i in
                ExchangeLink(client: clients[i], worker: worker, messageCapacity: max(pushBytes(i), 8 + fingerprint.encoded.count),
                             replyBytes: replyBytes(i))
            }
            for link in links {
                link.outgoing.reset()
                link.outgoing.append(string: fingerprint.encoded)
                link.send()
            }
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

    /// Bytes of a push to ps `index`, and of its reply.
    func pushBytes(_ index: Int) -> Int { ExchangeLayout.pushBytes(floats: ranges[index].count) }
    func replyBytes(_ index: Int) -> Int { ExchangeLayout.replyBytes(floats: ranges[index].count) }

    /// A client of every ps (connections open lazily, on the first call or stream).
    func makeClients() throws -> [ParameterServerClient] {
        try addresses.map { try ParameterServerClient(host: $0.host, port: $0.port, security: security) }
    }

    /// Reads one reply from every ps into `parameters`; true when the chief has ended the job.
    func receiveParameters(_ links: [ExchangeLink], into parameters: FlatArena) throws -> Bool {
        var stopped = false
        for (i, link) in links.enumerated() {
            // The landing's size was checked against `replyBytes(i)` when the reply arrived.
            let reply = try link.receive(timeoutSeconds: replyTimeoutSeconds)
            stopped = Int64(littleEndian: reply.loadUnaligned(as: Int64.self)) != 0 || stopped
            UnsafeMutableRawPointer(parameters.base + ranges[i].lowerBound).copyMemory(from: reply.baseAddress! + 16, byteCount: 4 * ranges[i].count)
        }
        return stopped
    }

    /// Sends one step's gradient to every ps, each its shard (ps 0 also the step's loss statistics), each in the
    /// link's own message: nothing is allocated.
    func push(_ gradients: FlatArena, statistics: LossStatistics, on links: [ExchangeLink]) {
        for (i, link) in links.enumerated() {
            let message = link.outgoing
            message.reset()
            message.append(UnsafeBufferPointer(start: gradients.base + ranges[i].lowerBound, count: ranges[i].count))
            let carriesStatistics = i == 0
            message.append(carriesStatistics ? Float(statistics.lossSum) : 0)
            message.append(carriesStatistics ? Float(statistics.correct) : 0)
            message.append(carriesStatistics ? Float(statistics.count) : 0)
            link.send()
        }
    }

    /// What the chief and every worker must agree on: the job, the model, the data and the cluster.
    func fingerprint(model: Sequential, data: DataSource) -> Fingerprint {
        Fingerprint(config: job, model: model, data: data, stepsPerEpoch: data.trainRows.count / job.training.batchSize,
                    replicas: workerCount,
                    extra: [("cluster", spec.tasks.map { "\($0.task.label) \($0.address.text)" }.joined(separator: ", "))])
    }

    // MARK: chief

    /// The chief's clients of every ps, once they all answer.
    func connectToParameterServers(timeoutSeconds: Double) throws -> [ParameterServerClient] {
        let clients = try makeClients()
        try waitForParameterServers(clients, timeoutSeconds: timeoutSeconds)
        return clients
    }

    /// Every ps starts from the chief's parameters, optimizer state and push count; only then are workers let in.
    func open(_ clients: [ParameterServerClient], model: Sequential, optimizer: Optimizer, data: DataSource, pushes: Int) throws {
        let opening = fingerprint(model: model, data: data)
        for (i, client) in clients.enumerated() {
            var message = Wire(reservingCapacity: 4 * ranges[i].count * (1 + optimizer.state.count) + 1024)
            message.append(Int64(pushes))
            message.append(string: opening.encoded)
            for arena in stateArenas(parameters: model.parameters, optimizer: optimizer) {
                message.append(UnsafeBufferPointer(start: arena.base + ranges[i].lowerBound, count: ranges[i].count))
            }
            _ = try client.call(.open, message.bytes)
        }
    }

    /// Every ps's parameters and optimizer state, into the chief's copies.
    func pullAll(_ clients: [ParameterServerClient], into model: Sequential, optimizer: Optimizer) throws {
        for (i, client) in clients.enumerated() {
            var reader = Wire.Reader(try client.call(.pull, []))
            for arena in stateArenas(parameters: model.parameters, optimizer: optimizer) {
                try reader.floats(ranges[i].count, into: arena.base + ranges[i].lowerBound)
            }
        }
    }

    /// A ps that fails to answer for 5 s ends the job with its name.
    func status(_ client: ParameterServerClient, index: Int) throws -> [UInt8] {
        let deadline = ProcessStatistics.now() + 5
        while true {
            do {
                return try client.call(.status, [])
            } catch let error as TandemError {
                if ProcessStatistics.now() > deadline {
                    throw TandemError(.communication, "ps \(index) stopped answering (\(error.message)); once it is back, restart the job with --resume latest and its --checkpoint-dir (a job that saved no checkpoints starts over)")
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
