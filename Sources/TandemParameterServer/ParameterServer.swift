import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import TandemCore
import TandemNN
import TandemTrain

/// One ps task's share of the model: a contiguous range of the flat parameter arena, its optimizer (the state lives
/// here, not on the workers), the workers' step counts for bounded staleness, and the counters the chief reads.
/// One lock per shard: pushes apply one at a time.
final class ParameterShard: @unchecked Sendable {
    let range: Range<Int>
    let label: String
    private let lock = NSLock()
    private let parameters: FlatArena
    private let optimizer: Optimizer
    private let maxStaleness: Int?
    /// A worker that has not pushed for this long is not waited for until it pushes again.
    private let stragglerSeconds: Double
    private var chiefFingerprint: Fingerprint?
    private var pushes = 0
    private var stopped = false
    private var statistics: [Float] = [0, 0, 0]
    private var refusals: [String] = []
    private var workers: [Int: WorkerState] = [:]
    /// The process's CPU time and the push count when the chief (last) opened the job: what serving costs per push.
    private var cpuAtOpen = 0.0
    private var pushesAtOpen = 0
    /// The most steps any worker was ahead of the slowest connected one when it got its parameters back.
    private var largestLead = 0

    /// A class, so a push updates it in place: mutating a struct inside the dictionary cost three allocations per push.
    private final class WorkerState {
        var steps = 0
        var connected = false
        var lastPush = ProcessStatistics.now()
        /// Already reported as a straggler (until its next push).
        var named = false
    }

    init(job: JobConfig, range: Range<Int>, label: String, stragglerSeconds: Double = 10) throws {
        self.range = range
        self.label = label
        self.stragglerSeconds = stragglerSeconds
        maxStaleness = job.training.maxStaleness
        parameters = FlatArena(count: range.count)
        // Statistics (batch normalization's moving averages) sit after every trainable parameter of the model.
        let trainable = try job.model.placement().trainableCount
        optimizer = try job.optimizer.makeOptimizer(parameterCount: range.count,
                                                    trainableCount: min(max(trainable - range.lowerBound, 0), range.count))
    }

    var isStopped: Bool { lock.withLock { stopped } }

    /// The chief's start (or restart from a checkpoint): pushes so far, its fingerprint, this range's parameters and
    /// optimizer state.
    func open(_ message: [UInt8]) throws {
        var reader = Wire.Reader(message)
        let start = Int(try reader.int64())
        let fingerprint = Fingerprint(encoded: try reader.string())
        try lock.withLock {
            for arena in stateArenas(parameters: parameters, optimizer: optimizer) { try reader.floats(range.count, into: arena.base) }
            if chiefFingerprint != nil { log("the chief reopened the job at push \(start)") }
            chiefFingerprint = fingerprint
            pushes = start
            (cpuAtOpen, pushesAtOpen) = (ProcessStatistics.cpuSeconds(), start)
            optimizer.iterations = start
            stopped = false
        }
    }

    /// A worker's stream: admit it (the chief's fingerprint must match), then answer each push with the new
    /// parameters — after waiting, under bounded staleness, for workers too far behind. The reply and the landing
    /// for a push's gradient are made once per stream: a push allocates nothing here.
    func serveExchange(worker: Int, requests: RPCAsyncSequence<IncomingMessage, any Error>, writer: RPCWriter<OutgoingMessage>) async throws {
        var incoming = requests.makeAsyncIterator()
        guard let hello = try await incoming.next() else { return }
        var reader = Wire.Reader(hello.withUnsafeBytes { Array($0) })
        try admit(worker: worker, fingerprint: Fingerprint(encoded: try reader.string()))
        defer { leave(worker: worker) }
        // The worker sends its next push only once it has this reply: by then the transport has serialized it.
        let reply = OutgoingMessage(capacity: ExchangeLayout.replyBytes(floats: range.count))
        let gradients = FlatArena(count: range.count)
        write(into: reply)
        try await writer.write(reply)
        while let message = try await incoming.next() {
            let steps = try push(message, from: worker, landing: gradients)
            if let steps {
                try await waitForStragglers(worker: worker, steps: steps)
                recordLead(of: worker)
            }
            write(into: reply)
            try await writer.write(reply)
        }
    }

    /// The transport alone (`TransportProbe`): a reply's bytes, zeros, for every message.
    func serveEcho(requests: RPCAsyncSequence<IncomingMessage, any Error>, writer: RPCWriter<OutgoingMessage>) async throws {
        let reply = OutgoingMessage(capacity: ExchangeLayout.replyBytes(floats: range.count))
        reply.append(zeros: ExchangeLayout.replyBytes(floats: range.count))
        for try await _ in requests { try await writer.write(reply) }
    }

    private func admit(worker: Int, fingerprint: Fingerprint) throws {
        try lock.withLock {
            guard let chief = chiefFingerprint else {
                throw RPCError(code: .unavailable, message: "\(label) is waiting for the chief to open the job")
            }
            if let problem = chief.disagreement(of: fingerprint, who: "worker \(worker)", reference: "the chief") {
                refusals.append(problem)
                log("refused worker \(worker): \(problem)")
                throw RPCError(code: .failedPrecondition, message: problem)
            }
            let state = workers[worker] ?? WorkerState()
            if state.connected { throw RPCError(code: .alreadyExists, message: "worker \(worker) is already connected to \(label)") }
            // A worker (re)joining starts level with the slowest connected one: the others need not wait for it
            // to replay steps it will never take again.
            let others = workers.values.filter(\.connected).map(\.steps)
            state.steps = max(state.steps, others.min() ?? state.steps)
            state.connected = true
            state.lastPush = ProcessStatistics.now()
            if workers[worker] != nil { log("worker \(worker) rejoined at step \(state.steps)") }
            workers[worker] = state
        }
    }

    private func leave(worker: Int) {
        lock.withLock { workers[worker]?.connected = false }
    }

    /// Applies a push; returns the worker's step count after it (nil once the job has stopped: nothing applied).
    /// `message`: this range's gradient, then (loss sum, hits, rows); the gradient is copied into `landing` (the
    /// transport's bytes need not be aligned for floats).
    private func push(_ message: IncomingMessage, from worker: Int, landing: FlatArena) throws -> Int? {
        let expected = ExchangeLayout.pushBytes(floats: range.count)
        guard message.count == expected else {
            throw RPCError(code: .invalidArgument, message: "a push of \(message.count) bytes where \(label) expects \(expected): does the worker run the same model?")
        }
        let pushed = message.withUnsafeBytes { raw in
            UnsafeMutableRawPointer(landing.base).copyMemory(from: raw.baseAddress!, byteCount: 4 * range.count)
            let tail = 4 * range.count
            return (raw.loadUnaligned(fromByteOffset: tail, as: Float.self), raw.loadUnaligned(fromByteOffset: tail + 4, as: Float.self),
                    raw.loadUnaligned(fromByteOffset: tail + 8, as: Float.self))
        }
        return lock.withLock {
            guard !stopped else { return nil }
            optimizer.apply(parameters: parameters.base, gradients: landing.base)
            statistics[0] += pushed.0
            statistics[1] += pushed.1
            statistics[2] += pushed.2
            pushes += 1
            let state = workers[worker]
            state?.steps += 1
            state?.lastPush = ProcessStatistics.now()
            state?.named = false
            return state?.steps
        }
    }

    /// Stale synchronous parallel: holds the reply until the slowest connected worker is at most `maxStaleness`
    /// steps behind. A worker silent for `stragglerSeconds` is named once and not waited for until it pushes again.
    private func waitForStragglers(worker: Int, steps: Int) async throws {
        guard let maxStaleness else { return }
        while true {
            let slowest: Int? = lock.withLock {
                guard !stopped else { return nil }
                let now = ProcessStatistics.now()
                var slowest: Int?
                for (other, state) in workers where other != worker && state.connected {
                    if now - state.lastPush >= stragglerSeconds {
                        if !state.named {
                            state.named = true
                            log("worker \(other) has not pushed for \(wholeSeconds(stragglerSeconds)) s (it is at step \(state.steps)); not waiting for it")
                        }
                        continue
                    }
                    slowest = min(slowest ?? state.steps, state.steps)
                }
                return slowest
            }
            guard let slowest, steps - slowest > maxStaleness else { return }
            try await Task.sleep(for: .microseconds(50))
        }
    }

    private func recordLead(of worker: Int) {
        lock.withLock {
            // A reply released by the job's stop, not by the bound, says nothing about the bound.
            guard !stopped, let steps = workers[worker]?.steps else { return }
            var slowest: Int?
            for (other, state) in workers where other != worker && state.connected { slowest = min(slowest ?? state.steps, state.steps) }
            if let slowest { largestLead = max(largestLead, steps - slowest) }
        }
    }

    /// One line for the ps's log at the end of the job.
    var summary: String {
        lock.withLock {
            let served = pushes - pushesAtOpen
            let cpuPerPush = served > 0 ? (ProcessStatistics.cpuSeconds() - cpuAtOpen) / Double(served) * 1e6 : 0
            return "\(label): \(pushes) pushes applied, \(Int(cpuPerPush.rounded())) µs of CPU per push (gRPC included); "
                + "a worker was at most \(largestLead) steps ahead of the slowest when it got parameters"
                + (maxStaleness.map { " (max_staleness \($0))" } ?? " (no max_staleness)")
        }
    }

    /// A worker's reply: [stop flag, pushes so far] + this range's parameters.
    private func write(into reply: OutgoingMessage) {
        reply.reset()
        lock.withLock {
            reply.append(Int64(stopped ? 1 : 0))
            reply.append(Int64(pushes))
            reply.append(UnsafeBufferPointer(start: parameters.base, count: range.count))
        }
    }

    /// The chief's unary calls.
    func handle(_ method: ParameterServerMethod, _ message: [UInt8]) throws -> [UInt8] {
        var reply = Wire()
        switch method {
        case .open:
            try open(message)
        case .pull:
            lock.withLock {
                for arena in stateArenas(parameters: parameters, optimizer: optimizer) { reply.append(UnsafeBufferPointer(start: arena.base, count: range.count)) }
            }
        case .status:
            lock.withLock {
                reply.append(Int64(pushes))
                reply.append(stopped ? 1 : 0)
                reply.append(statistics)
                statistics = [0, 0, 0]
                reply.append(string: Array(refusals.joined(separator: "\n").utf8))
                refusals = []
            }
        case .stop:
            lock.withLock { stopped = true }
        case .exchange, .echo:
            throw RPCError(code: .unimplemented, message: "\(method.rawValue) is a stream")
        }
        return reply.bytes
    }

    private func log(_ text: String) {
        FileHandle.standardError.write(Data("tandem: \(label): \(text)\n".utf8))
    }
}

/// The gRPC face of a shard. Requests without the job's token are refused (and logged).
struct ParameterServerService: RegistrableRPCService {
    let shard: ParameterShard

    func registerMethods<Transport: ServerTransport>(with router: inout RPCRouter<Transport>) {
        let shard = self.shard
        for method in ParameterServerMethod.allCases where method != .exchange && method != .echo {
            router.registerHandler(forMethod: method.descriptor, deserializer: BytesDeserializer(), serializer: BytesSerializer()) { request, context in
                try Self.checkToken(request.metadata, method: method, peer: context.remotePeer, shard: shard)
                let single = try await ServerRequest(stream: request)
                return StreamingServerResponse(single: ServerResponse(message: try shard.handle(method, single.message)))
            }
        }
        // The streams read each message where the transport put it and answer from buffers made once per stream.
        for method in [ParameterServerMethod.exchange, .echo] {
            router.registerHandler(forMethod: method.descriptor, deserializer: IncomingDeserializer(), serializer: OutgoingSerializer()) { request, context in
                try Self.checkToken(request.metadata, method: method, peer: context.remotePeer, shard: shard)
                guard method == .exchange else {
                    return StreamingServerResponse { writer in
                        try await shard.serveEcho(requests: request.messages, writer: writer)
                        return [:]
                    }
                }
                guard let worker = Array(request.metadata[stringValues: RequestMetadata.workerKey]).first.flatMap({ Int($0) }) else {
                    throw RPCError(code: .invalidArgument, message: "an exchange must say which worker it is")
                }
                return StreamingServerResponse { writer in
                    try await shard.serveExchange(worker: worker, requests: request.messages, writer: writer)
                    return [:]
                }
            }
        }
    }

    private static func checkToken(_ metadata: Metadata, method: ParameterServerMethod, peer: String, shard: ParameterShard) throws {
        guard Array(metadata[stringValues: RequestMetadata.tokenKey]).first == RequestMetadata.jobToken else {
            FileHandle.standardError.write(Data("tandem: \(shard.label): refused a \(method.rawValue) request from \(peer) without the job's token\n".utf8))
            throw RPCError(code: .permissionDenied, message: "wrong or missing job token")
        }
    }
}

/// Splits `count` parameters into `parts` contiguous ranges of near-equal size.
func shardRanges(count: Int, parts: Int) -> [Range<Int>] {
    (0..<parts).map { (count * $0 / parts)..<(count * ($0 + 1) / parts) }
}

/// The IPv4 address a ps binds to: its own address from the spec, never every interface.
func ipv4Address(of host: String) throws -> String {
    if host == "localhost" { return "127.0.0.1" }
    var hints = addrinfo()
    hints.ai_family = AF_INET
    var found: UnsafeMutablePointer<addrinfo>?
    guard getaddrinfo(host, nil, &hints, &found) == 0, let first = found else {
        throw TandemError(.badConfig, "cannot resolve \(host) to an IPv4 address")
    }
    defer { freeaddrinfo(first) }
    var text = [CChar](repeating: 0, count: Int(INET_ADDRSTRLEN))
    var address = first.pointee.ai_addr.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { $0.pointee.sin_addr }
    inet_ntop(AF_INET, &address, &text, socklen_t(INET_ADDRSTRLEN))
    return String(decoding: text.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
}
