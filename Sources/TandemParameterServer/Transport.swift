import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import TandemCore
import TandemNN
import TandemTrain

/// The parameter-server protocol over gRPC. Messages are raw bytes — little-endian Int64 counters, Float32 arrays
/// and length-prefixed byte strings, written and read by `Wire` — so the build needs no protoc step.
enum ParameterServerMethod: String, CaseIterable {
    /// Chief → ps, once: [pushes so far] + [chief's fingerprint] + this ps's starting parameters and optimizer
    /// state (each state arena's range in turn). Until then the ps turns workers away (unavailable), so a resumed
    /// job never trains from the wrong start.
    case open = "Open"
    /// A worker's one stream for the whole job. Worker → ps: [fingerprint] first, then
    /// [gradients of this ps's range + (loss sum, hits, rows)] per step. Ps → worker after each:
    /// [stop flag, pushes so far] + this ps's parameters — a push and the next pull in one round trip.
    case exchange = "Exchange"
    /// → [pushes so far, stop flag] + [loss sum, hits, rows] since the last status + [refusals since the last status].
    case status = "Status"
    /// → this ps's parameters and optimizer state, as in `open` (the chief's evaluations and checkpoints).
    case pull = "Pull"
    /// Ends the job: every later exchange says stop.
    case stop = "Stop"
    /// A stream like `exchange` that trains nothing: each message is answered with as many bytes as an exchange reply
    /// of this ps. What the transport itself costs a worker's step (`TransportProbe`), next to what the step costs.
    case echo = "Echo"

    static let service = ServiceDescriptor(fullyQualifiedService: "tandem.ParameterServer")
    var descriptor: MethodDescriptor { MethodDescriptor(service: Self.service, method: rawValue) }
}

/// The sizes of an exchange's messages for a ps holding `floats` parameters, as both ends check them.
enum ExchangeLayout {
    /// A push: the range of the gradient, then (loss sum, hits, rows).
    static func pushBytes(floats: Int) -> Int { 4 * floats + 12 }
    /// A reply: [stop flag, pushes so far] as Int64s, then the range of the parameters.
    static func replyBytes(floats: Int) -> Int { 16 + 4 * floats }
}

/// What `open` and `pull` carry of a ps's range, in order: the parameters, then each optimizer state arena.
func stateArenas(parameters: FlatArena, optimizer: Optimizer) -> [FlatArena] {
    [parameters] + optimizer.state.map(\.arena)
}

/// Request metadata: the per-job token every request carries (launch.sh makes one and hands it to the tasks in
/// TANDEM_JOB_TOKEN), and which worker opened an exchange.
enum RequestMetadata {
    static let tokenKey = "tandem-job-token"
    static let workerKey = "tandem-worker"
    /// Read once: building the environment dictionary on every request cost the ps ~90 allocations per chief poll.
    static let jobToken = ProcessInfo.processInfo.environment["TANDEM_JOB_TOKEN"] ?? ""

    static func make(worker: Int? = nil) -> Metadata {
        var metadata = Metadata()
        metadata.addString(jobToken, forKey: tokenKey)
        if let worker { metadata.addString(String(worker), forKey: workerKey) }
        return metadata
    }
}

/// HTTP/2 frames large enough that one step's parameters travel in a frame or two instead of dozens of 16 KiB ones.
enum HTTP2Tuning {
    static let maxFrameSize = 1 << 20
    static let windowSize = 16 << 20
}

/// How the job's gRPC connections are secured: plaintext on a trusted network, or mutual TLS — every task presents
/// its certificate and accepts only peers whose certificates the job's CA signed; clients also check that the
/// server's certificate names the host they dialled.
enum ChannelSecurity: Sendable {
    case plaintext
    case mutualTLS(certificate: String, key: String, ca: String)

    init(job: JobConfig) {
        if let tls = job.tls {
            self = .mutualTLS(certificate: job.resolvedPath(tls.certificate), key: job.resolvedPath(tls.key), ca: job.resolvedPath(tls.ca))
        } else {
            self = .plaintext
        }
    }

    var server: HTTP2ServerTransport.Posix.TransportSecurity {
        guard case let .mutualTLS(certificate, key, ca) = self else { return .plaintext }
        return .mTLS(certificateChain: [.file(path: certificate, format: .pem)], privateKey: .file(path: key, format: .pem)) {
            $0.trustRoots = .certificates([.file(path: ca, format: .pem)])
        }
    }

    var client: HTTP2ClientTransport.Posix.TransportSecurity {
        guard case let .mutualTLS(certificate, key, ca) = self else { return .plaintext }
        return .mTLS(certificateChain: [.file(path: certificate, format: .pem)], privateKey: .file(path: key, format: .pem)) {
            $0.trustRoots = .certificates([.file(path: ca, format: .pem)])
        }
    }
}

/// A message a worker sends again and again (its push to one ps, its hello): bytes allocated once and rewritten in
/// place before each send, so a step allocates nothing of its own. The transport copies them into its buffer when
/// it serializes them, before the ps can answer — so once the answer is in, the message may be rewritten.
final class OutgoingMessage: @unchecked Sendable {
    private let storage: UnsafeMutableRawBufferPointer
    private(set) var count = 0
    /// The NIO transport's bytes of the last message serialized, kept to be rewritten for the next one of the same
    /// size: the transport has copied them into its frame and let go of them by the time the ps answers, so the
    /// rewrite is in place instead of a new buffer per message. Touched only by the serializer, on gRPC's thread.
    private var reusableTransportBytes: GRPCNIOTransportBytes?

    init(capacity: Int) { storage = .allocate(byteCount: capacity, alignment: 16) }

    deinit { storage.deallocate() }

    var bytes: UnsafeRawBufferPointer { UnsafeRawBufferPointer(rebasing: storage[0..<count]) }

    /// The message in the NIO transport's own bytes, reusing the last message's when it has the same size. (Were the
    /// transport still to hold them, the write would copy them first — correct, and one allocation.)
    func transportBytes() -> GRPCNIOTransportBytes {
        var wire = reusableTransportBytes ?? GRPCNIOTransportBytes(repeating: 0, count: count)
        reusableTransportBytes = nil  // `wire` alone holds them now: rewritten in place
        if wire.count != count { wire = GRPCNIOTransportBytes(repeating: 0, count: count) }
        wire.withUnsafeMutableBytes { $0.copyMemory(from: bytes) }
        reusableTransportBytes = wire
        return wire
    }

    func reset() { count = 0 }

    func append(bytes source: UnsafeRawBufferPointer) {
        precondition(count + source.count <= storage.count, "an outgoing message outgrew the capacity it was made with")
        if let base = source.baseAddress { (storage.baseAddress! + count).copyMemory(from: base, byteCount: source.count) }
        count += source.count
    }

    func append(_ value: Int64) { withUnsafeBytes(of: value.littleEndian) { append(bytes: $0) } }
    func append(_ value: Float) { withUnsafeBytes(of: value.bitPattern.littleEndian) { append(bytes: $0) } }
    func append(_ values: UnsafeBufferPointer<Float>) { append(bytes: UnsafeRawBufferPointer(values)) }

    /// `byteCount` zero bytes (the echo's and the probe's messages, which carry nothing but their size).
    func append(zeros byteCount: Int) {
        precondition(count + byteCount <= storage.count, "an outgoing message outgrew the capacity it was made with")
        (storage.baseAddress! + count).initializeMemory(as: UInt8.self, repeating: 0, count: byteCount)
        count += byteCount
    }
    /// A length-prefixed byte string, as `Wire.append(string:)` writes it.
    func append(string: [UInt8]) {
        append(Int64(string.count))
        string.withUnsafeBytes { append(bytes: $0) }
    }
}

/// The messages a worker hands its stream, in order: the synchronous loop sends, the stream's writer takes them as
/// an async sequence. Unlike `AsyncStream`, which allocates on every yield to a waiting reader, it allocates nothing
/// once running: a waiting writer is resumed with the message directly.
final class OutgoingChannel: AsyncSequence, @unchecked Sendable {
    typealias Element = OutgoingMessage
    private let lock = NSLock()
    /// Sent while the writer was not waiting (its capacity is kept: the queue is at most a message or two long).
    private var queued: [OutgoingMessage] = []
    private var waiter: UnsafeContinuation<OutgoingMessage?, Never>?
    private var finished = false

    func send(_ message: OutgoingMessage) {
        lock.lock()
        if let waiter {
            self.waiter = nil
            lock.unlock()
            waiter.resume(returning: message)
        } else {
            if !finished { queued.append(message) }
            lock.unlock()
        }
    }

    /// No more messages: the writer's sequence ends once it has taken those already sent.
    func finish() {
        lock.lock()
        finished = true
        let waiter = self.waiter
        self.waiter = nil
        lock.unlock()
        waiter?.resume(returning: nil)
    }

    private func next() async -> OutgoingMessage? {
        await withTaskCancellationHandler {
            await withUnsafeContinuation { (continuation: UnsafeContinuation<OutgoingMessage?, Never>) in
                lock.lock()
                if !queued.isEmpty {
                    let message = queued.removeFirst()
                    lock.unlock()
                    continuation.resume(returning: message)
                } else if finished {
                    lock.unlock()
                    continuation.resume(returning: nil)
                } else {
                    waiter = continuation
                    lock.unlock()
                }
            }
        } onCancel: {
            finish()  // the stream is over: the writer stops waiting
        }
    }

    struct AsyncIterator: AsyncIteratorProtocol {
        let channel: OutgoingChannel
        mutating func next() async -> OutgoingMessage? { await channel.next() }
    }

    func makeAsyncIterator() -> AsyncIterator { AsyncIterator(channel: self) }
}

/// Where one stream's replies land: a buffer of exactly a reply's size, filled by the deserializer on gRPC's thread
/// and read by the worker once `ExchangeLink.receive` hands it over. The protocol answers each message with one
/// reply, and the worker sends its next message only after reading this one, so a reply never lands on one being read.
final class ReplyLanding: @unchecked Sendable {
    let storage: UnsafeMutableRawBufferPointer

    init(byteCount: Int) { storage = .allocate(byteCount: byteCount, alignment: 16) }

    deinit { storage.deallocate() }
}

struct OutgoingSerializer: MessageSerializer {
    func serialize<Bytes: GRPCContiguousBytes>(_ message: OutgoingMessage) throws -> Bytes {
        // The HTTP/2 transport's bytes are reused from message to message; any other transport gets a copy.
        guard Bytes.self == GRPCNIOTransportBytes.self else { return Bytes(message.bytes) }
        return unsafeBitCast(message.transportBytes(), to: Bytes.self)
    }
}

/// Copies a reply into the stream's landing (a reply of another size is a ps of another job or version).
struct LandingDeserializer: MessageDeserializer {
    let landing: ReplyLanding

    func deserialize<Bytes: GRPCContiguousBytes>(_ serializedMessageBytes: Bytes) throws -> Int {
        let expected = landing.storage.count
        guard serializedMessageBytes.count == expected else {
            throw RPCError(code: .internalError, message: "a reply of \(serializedMessageBytes.count) bytes where this worker expects \(expected): does the ps run the same model and version?")
        }
        serializedMessageBytes.withUnsafeBytes { landing.storage.copyMemory(from: $0) }
        return expected
    }
}

/// A message as the transport delivered it, read in place: with the HTTP/2 transport its own bytes (no copy, no
/// allocation), with any other a copy.
struct IncomingMessage: @unchecked Sendable {
    private let transportBytes: GRPCNIOTransportBytes?
    private let copy: [UInt8]

    init(transportBytes: GRPCNIOTransportBytes) { (self.transportBytes, copy) = (transportBytes, []) }
    init(copy: [UInt8]) { (transportBytes, self.copy) = (nil, copy) }

    var count: Int { transportBytes?.count ?? copy.count }

    func withUnsafeBytes<Result>(_ body: (UnsafeRawBufferPointer) throws -> Result) rethrows -> Result {
        if let transportBytes { return try transportBytes.withUnsafeBytes(body) }
        return try copy.withUnsafeBytes(body)
    }
}

struct IncomingDeserializer: MessageDeserializer {
    func deserialize<Bytes: GRPCContiguousBytes>(_ serializedMessageBytes: Bytes) throws -> IncomingMessage {
        guard Bytes.self == GRPCNIOTransportBytes.self else { return IncomingMessage(copy: serializedMessageBytes.withUnsafeBytes { Array($0) }) }
        return IncomingMessage(transportBytes: unsafeBitCast(serializedMessageBytes, to: GRPCNIOTransportBytes.self))
    }
}

struct BytesSerializer: MessageSerializer {
    func serialize<Bytes: GRPCContiguousBytes>(_ message: [UInt8]) throws -> Bytes { Bytes(message) }
}

struct BytesDeserializer: MessageDeserializer {
    func deserialize<Bytes: GRPCContiguousBytes>(_ serializedMessageBytes: Bytes) throws -> [UInt8] {
        serializedMessageBytes.withUnsafeBytes { Array($0) }
    }
}

/// Little-endian framing of the messages (x86-64 and arm64 are little-endian, so floats are copied as they are).
struct Wire {
    var bytes: [UInt8] = []

    init(reservingCapacity capacity: Int = 0) { bytes.reserveCapacity(capacity) }

    mutating func append(_ value: Int64) { withUnsafeBytes(of: value.littleEndian) { bytes.append(contentsOf: $0) } }

    mutating func append(_ values: UnsafeBufferPointer<Float>) { values.withMemoryRebound(to: UInt8.self) { bytes.append(contentsOf: $0) } }

    mutating func append(_ values: [Float]) { values.withUnsafeBufferPointer { append($0) } }

    /// A length-prefixed byte string.
    mutating func append(string: [UInt8]) {
        append(Int64(string.count))
        bytes.append(contentsOf: string)
    }

    /// Reads in order from a message.
    struct Reader {
        let bytes: [UInt8]
        var offset = 0

        init(_ bytes: [UInt8]) { self.bytes = bytes }

        var isAtEnd: Bool { offset == bytes.count }

        private func need(_ count: Int, for what: String) throws {
            guard count >= 0, offset + count <= bytes.count else {
                throw TandemError(.communication, "parameter-server message has \(bytes.count - offset) bytes left for \(what)")
            }
        }

        mutating func int64() throws -> Int64 {
            try need(8, for: "a counter")
            defer { offset += 8 }
            return bytes[offset..<offset + 8].reversed().reduce(Int64(0)) { $0 << 8 | Int64($1) }
        }

        mutating func floats(_ count: Int, into destination: UnsafeMutablePointer<Float>) throws {
            try need(4 * count, for: "\(count) floats")
            bytes.withUnsafeBytes { raw in
                UnsafeMutableRawPointer(destination).copyMemory(from: raw.baseAddress! + offset, byteCount: 4 * count)
            }
            offset += 4 * count
        }

        mutating func floats(_ count: Int) throws -> [Float] {
            var values = [Float](repeating: 0, count: count)
            try values.withUnsafeMutableBufferPointer { try floats(count, into: $0.baseAddress!) }
            return values
        }

        mutating func string() throws -> [UInt8] {
            let count = Int(try int64())
            try need(count, for: "a \(count)-byte string")
            defer { offset += count }
            return Array(bytes[offset..<offset + count])
        }
    }
}

/// A gRPC client of one ps task. The chief's occasional calls are blocking unary calls with a deadline; a worker's
/// steps go through one long-lived `exchange` stream.
final class ParameterServerClient: Sendable {
    let address: String
    private let client: GRPCClient<HTTP2ClientTransport.Posix>
    private let deadline: Duration

    init(host: String, port: Int, security: ChannelSecurity, deadlineSeconds: Double = 10) throws {
        address = "\(host):\(port)"
        var config = HTTP2ClientTransport.Posix.Config.defaults
        config.http2.maxFrameSize = HTTP2Tuning.maxFrameSize
        config.http2.targetWindowSize = HTTP2Tuning.windowSize
        client = GRPCClient(transport: try .http2NIOPosix(target: .dns(host: host, port: port), transportSecurity: security.client,
                                                          config: config))
        deadline = .milliseconds(Int64(deadlineSeconds * 1000))
        let client = self.client
        Task.detached { try? await client.runConnections() }
    }

    deinit { client.beginGracefulShutdown() }

    /// One unary call, waited for with the deadline: a dead ps turns into an error naming it, never a hang.
    func call(_ method: ParameterServerMethod, _ message: [UInt8]) throws -> [UInt8] {
        var callOptions = CallOptions.defaults
        callOptions.timeout = deadline
        let options = callOptions
        let request = ClientRequest(message: message, metadata: RequestMetadata.make())
        let client = self.client
        do {
            return try waitFor {
                try await client.unary(request: request, descriptor: method.descriptor, serializer: BytesSerializer(),
                                       deserializer: BytesDeserializer(), options: options) { try $0.message }
            }
        } catch {
            throw describe(error, method)
        }
    }

    /// Runs a worker's stream (`exchange`, or `echo`): sends what `requests` yields, lands every reply in `landing`
    /// and then calls `onReply`; returns when the ps closes the stream after `requests` has finished. Throws gRPC's
    /// own errors (see `describe`).
    func stream(_ method: ParameterServerMethod, worker: Int, requests: OutgoingChannel, landing: ReplyLanding,
                onReply: @escaping @Sendable () -> Void) async throws {
        let request = StreamingClientRequest<OutgoingMessage>(metadata: RequestMetadata.make(worker: worker)) { writer in
            for await message in requests { try await writer.write(message) }
        }
        try await client.bidirectionalStreaming(request: request, descriptor: method.descriptor,
                                                serializer: OutgoingSerializer(), deserializer: LandingDeserializer(landing: landing),
                                                options: .defaults) { response in
            for try await _ in response.messages { onReply() }
        }
    }

    func describe(_ error: Error, _ method: ParameterServerMethod) -> Error {
        if let error = error as? RPCError {
            // What a TLS handshake refused on one side looks like from the other.
            let cause = error.cause.map { " (\($0))" } ?? ""
            let hint = error.isTLSRefusal ? " (do this task and the ps agree on tls? With tls the ps accepts only certificates the job's CA signed)" : ""
            return TandemError(.communication, "ps at \(address): \(method.rawValue) failed: \(error.code): \(error.message)\(cause)\(hint)")
        }
        if error is TandemError || error is CancellationError { return error }
        return TandemError(.communication, "ps at \(address): \(method.rawValue) failed: \(error)")
    }
}

extension RPCError {
    /// A TLS handshake refused by either side (as the other side sees it too): waiting will not mend it.
    var isTLSRefusal: Bool {
        let cause = self.cause.map { String(describing: $0) } ?? ""
        return message.contains("connection preface") || cause.contains("handshake") || cause.contains("SSL")
    }
}

/// Runs async work from the synchronous world (the CLI, the training loop) and waits for it.
func waitFor<Value: Sendable>(_ work: @escaping @Sendable () async throws -> Value) throws -> Value {
    let result = Box<Result<Value, Error>>()
    let done = DispatchSemaphore(value: 0)
    Task.detached {
        do { result.value = .success(try await work()) } catch { result.value = .failure(error) }
        done.signal()
    }
    done.wait()
    return try result.value!.get()
}

/// A value handed between a task and a waiting thread (the semaphore orders the accesses).
final class Box<Value>: @unchecked Sendable {
    var value: Value?
    init(_ value: Value? = nil) { self.value = value }
}

/// A worker's stream to one ps, driven from the synchronous training loop: `send` hands the message to the stream,
/// `receive` waits for the reply with a deadline and names the ps that did not answer. The message and the reply's
/// landing are allocated once, for the whole stream: a step allocates nothing here.
final class ExchangeLink: @unchecked Sendable {
    let address: String
    /// What this worker sends on the stream, rewritten before each send.
    let outgoing: OutgoingMessage
    private let landing: ReplyLanding
    private let requests = OutgoingChannel()
    private let lock = NSLock()
    private var pendingReplies = 0
    private var failed: Error?
    private var status: RPCError?
    private let arrived = DispatchSemaphore(value: 0)

    /// A stream of `method` (`exchange` or `echo`) to `client`'s ps, whose replies are `replyBytes` long and whose
    /// messages at most `messageCapacity`.
    init(client: ParameterServerClient, method: ParameterServerMethod = .exchange, worker: Int, messageCapacity: Int, replyBytes: Int) {
        address = client.address
        outgoing = OutgoingMessage(capacity: messageCapacity)
        landing = ReplyLanding(byteCount: replyBytes)
        Task.detached { [self, landing, requests] in
            do {
                try await client.stream(method, worker: worker, requests: requests, landing: landing) { self.deliver() }
                finish(nil, status: nil)
            } catch {
                finish(client.describe(error, method), status: error as? RPCError)
            }
        }
    }

    deinit { requests.finish() }

    /// Sends `outgoing` as it now is. Rewrite it only once this message's reply has been received.
    func send() { requests.send(outgoing) }

    /// Ends the stream from this side (the ps closes its side in turn).
    func close() { requests.finish() }

    /// The next reply's bytes, valid until the next `send`.
    func receive(timeoutSeconds: Double) throws -> UnsafeRawBufferPointer {
        if arrived.wait(timeout: .now() + timeoutSeconds) == .timedOut {
            throw TandemError(.timeout, "ps at \(address) did not answer within \(wholeSeconds(timeoutSeconds)) s")
        }
        return try lock.withLock {
            guard pendingReplies > 0 else { throw failed ?? TandemError(.communication, "ps at \(address) closed the exchange") }
            pendingReplies -= 1
            return UnsafeRawBufferPointer(landing.storage)
        }
    }

    /// Waits until the first reply has arrived (true) or the stream has ended or timed out (false), leaving the
    /// reply to `receive`.
    func waitForFirstReply(timeoutSeconds: Double) -> Bool {
        guard arrived.wait(timeout: .now() + timeoutSeconds) == .success else { return false }
        arrived.signal()
        return lock.withLock { pendingReplies > 0 }
    }

    /// The error that ended the stream, and its gRPC status if it had one.
    var failure: Error? { lock.withLock { failed } }
    var endingStatus: RPCError? { lock.withLock { status } }

    private func deliver() {
        lock.withLock { pendingReplies += 1 }
        arrived.signal()
    }

    private func finish(_ error: Error?, status: RPCError?) {
        lock.withLock {
            failed = error
            self.status = status
        }
        arrived.signal()
    }
}
