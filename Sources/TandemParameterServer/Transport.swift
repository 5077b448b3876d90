import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import TandemCore

/// The parameter-server protocol over gRPC: four unary methods whose messages are raw bytes — little-endian Int64
/// counters and Float32 arrays, written and read by `Wire` — so the build needs no protoc step.
enum ParameterServerMethod: String, CaseIterable {
    /// → [stop flag, pushes so far] + this ps's parameter range.
    case pull = "Pull"
    /// [worker] + gradients of this ps's range + [loss sum, hits, rows] → [pushes so far].
    case push = "Push"
    /// → [pushes so far, stop flag] + [loss sum, hits, rows] accumulated since the last status.
    case status = "Status"
    /// Ends the job: every later pull says stop.
    case stop = "Stop"

    static let service = ServiceDescriptor(fullyQualifiedService: "tandem.ParameterServer")
    var descriptor: MethodDescriptor { MethodDescriptor(service: Self.service, method: rawValue) }
}

/// The per-job token every request carries (launch.sh makes one and hands it to the tasks in TANDEM_JOB_TOKEN).
enum JobToken {
    static let metadataKey = "tandem-job-token"
    static var current: String { ProcessInfo.processInfo.environment["TANDEM_JOB_TOKEN"] ?? "" }
}

struct BytesSerializer: MessageSerializer {
    func serialize<Bytes: GRPCContiguousBytes>(_ message: [UInt8]) throws -> Bytes { Bytes(message) }
}

struct BytesDeserializer: MessageDeserializer {
    func deserialize<Bytes: GRPCContiguousBytes>(_ serializedMessageBytes: Bytes) throws -> [UInt8] {
        serializedMessageBytes.withUnsafeBytes { Array($0) }
    }
}

/// Little-endian framing of the messages.
struct Wire {
    var bytes: [UInt8] = []

    mutating func append(_ value: Int64) { withUnsafeBytes(of: value.littleEndian) { bytes.append(contentsOf: $0) } }

    mutating func append(_ values: UnsafeBufferPointer<Float>) {
        values.withMemoryRebound(to: UInt8.self) { bytes.append(contentsOf: $0) }  // x86-64 and arm64 are little-endian
    }

    mutating func append(_ values: [Float]) { values.withUnsafeBufferPointer { append($0) } }

    /// Reads in order from a message.
    struct Reader {
        let bytes: [UInt8]
        var offset = 0

        init(_ bytes: [UInt8]) { self.bytes = bytes }

        mutating func int64() throws -> Int64 {
            guard offset + 8 <= bytes.count else { throw TandemError(.communication, "parameter-server message too short") }
            defer { offset += 8 }
            return bytes[offset..<offset + 8].reversed().reduce(Int64(0)) { $0 << 8 | Int64($1) }
        }

        mutating func floats(_ count: Int, into destination: UnsafeMutablePointer<Float>) throws {
            guard offset + 4 * count <= bytes.count else {
                throw TandemError(.communication, "parameter-server message has \(bytes.count - offset) bytes for \(count) floats")
            }
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
    }
}

/// A blocking gRPC client of one ps task, for the synchronous training loop: each call runs on the client's own
/// task and is waited for with a deadline, so a dead ps turns into an error naming it, never a hang.
final class ParameterServerClient: @unchecked Sendable {
    let address: String
    private let client: GRPCClient<HTTP2ClientTransport.Posix>
    private let deadline: Duration

    init(host: String, port: Int, deadlineSeconds: Double = 10) throws {
        address = "\(host):\(port)"
        client = GRPCClient(transport: try .http2NIOPosix(target: .dns(host: host, port: port), transportSecurity: .plaintext))
        deadline = .milliseconds(Int64(deadlineSeconds * 1000))
        let client = self.client
        Task.detached { try? await client.runConnections() }
    }

    deinit { client.beginGracefulShutdown() }

    func call(_ method: ParameterServerMethod, _ message: [UInt8]) throws -> [UInt8] {
        let result = UncheckedResult()
        let done = DispatchSemaphore(value: 0)
        var metadata = Metadata()
        metadata.addString(JobToken.current, forKey: JobToken.metadataKey)
        var options = CallOptions.defaults
        options.timeout = deadline
        let request = ClientRequest(message: message, metadata: metadata)
        let client = self.client
        Task.detached {
            do {
                let bytes = try await client.unary(request: request, descriptor: method.descriptor, serializer: BytesSerializer(),
                                                   deserializer: BytesDeserializer(), options: options) { try $0.message }
                result.value = .success(bytes)
            } catch {
                result.value = .failure(error)
            }
            done.signal()
        }
        done.wait()
        switch result.value! {
        case .success(let bytes): return bytes
        case .failure(let error as RPCError):
            throw TandemError(.communication, "ps at \(address): \(method.rawValue) failed: \(error.code): \(error.message)")
        case .failure(let error):
            throw TandemError(.communication, "ps at \(address): \(method.rawValue) failed: \(error)")
        }
    }
}

private final class UncheckedResult: @unchecked Sendable {
    var value: Result<[UInt8], Error>?
}
