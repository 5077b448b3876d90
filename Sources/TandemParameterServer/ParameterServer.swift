import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import TandemCore
import TandemNN
import TandemTrain

/// One ps task's share of the model: a contiguous range of the flat parameter arena, its optimizer (the state lives
/// here, not on the workers), and the counters the chief reads. One lock per shard: pushes apply one at a time.
final class ParameterShard: @unchecked Sendable {
    let range: Range<Int>
    private let lock = NSLock()
    private let parameters: FlatArena
    private let optimizer: Optimizer
    private var pushes = 0
    private var stopped = false
    private var statistics: [Float] = [0, 0, 0]

    init(job: JobConfig, range: Range<Int>) throws {
        self.range = range
        // Every ps builds the same initial model from the seed and keeps its range.
        let model = try Sequential(spec: job.model, seed: job.seed, maxBatchSize: 1)
        parameters = FlatArena(count: range.count)
        parameters.base.update(from: model.parameters.base + range.lowerBound, count: range.count)
        optimizer = try job.optimizer.makeOptimizer(parameterCount: range.count)
    }

    var isStopped: Bool { lock.withLock { stopped } }

    func handle(_ method: ParameterServerMethod, _ message: [UInt8]) throws -> [UInt8] {
        var reply = Wire()
        switch method {
        case .pull:
            lock.withLock {
                reply.append(stopped ? 1 : 0)
                reply.append(Int64(pushes))
                reply.append(UnsafeBufferPointer(start: parameters.base, count: range.count))
            }
        case .push:
            var reader = Wire.Reader(message)
            _ = try reader.int64()
            let gradients = try reader.floats(range.count)
            let pushed = try reader.floats(3)
            try lock.withLock {
                guard !stopped else { throw RPCError(code: .failedPrecondition, message: "the job has stopped") }
                gradients.withUnsafeBufferPointer { optimizer.apply(parameters: parameters.base, gradients: $0.baseAddress!) }
                for i in 0..<3 { statistics[i] += pushed[i] }
                pushes += 1
                reply.append(Int64(pushes))
            }
        case .status:
            lock.withLock {
                reply.append(Int64(pushes))
                reply.append(stopped ? 1 : 0)
                reply.append(statistics)
                statistics = [0, 0, 0]
            }
        case .stop:
            lock.withLock { stopped = true }
        }
        return reply.bytes
    }
}

/// The gRPC face of a shard. Requests without the job's token are refused (and logged).
struct ParameterServerService: RegistrableRPCService {
    let shard: ParameterShard
    let label: String

    func registerMethods<Transport: ServerTransport>(with router: inout RPCRouter<Transport>) {
        for method in ParameterServerMethod.allCases {
            let shard = self.shard, label = self.label
            router.registerHandler(forMethod: method.descriptor, deserializer: BytesDeserializer(), serializer: BytesSerializer()) { request, context in
                let single = try await ServerRequest(stream: request)
                let token = Array(single.metadata[stringValues: JobToken.metadataKey]).first ?? ""
                guard token == JobToken.current else {
                    FileHandle.standardError.write(Data("tandem: \(label): refused a \(method.rawValue) request from \(context.remotePeer) without the job's token\n".utf8))
                    throw RPCError(code: .permissionDenied, message: "wrong or missing job token")
                }
                return StreamingServerResponse(single: ServerResponse(message: try shard.handle(method, single.message)))
            }
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
    let address = first.pointee.ai_addr.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { $0.pointee.sin_addr }
    var copy = address
    inet_ntop(AF_INET, &copy, &text, socklen_t(INET_ADDRSTRLEN))
    return String(decoding: text.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
}
