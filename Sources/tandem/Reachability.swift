import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// What a TCP connection attempt to one cluster address found, within a short timeout.
enum Reachability: CustomStringConvertible {
    case listening
    case hostUp          // refused: the host answered, nothing listens on the port (yet)
    case unreachable(String)

    var description: String {
        switch self {
        case .listening: return "reachable, listening"
        case .hostUp: return "reachable, nothing listening yet"
        case .unreachable(let why): return "UNREACHABLE (\(why))"
        }
    }

    var isReachable: Bool { if case .unreachable = self { return false } else { return true } }

    static func probe(host: String, port: Int, timeoutSeconds: Double = 1) -> Reachability {
        var hints = addrinfo()
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        var found: UnsafeMutablePointer<addrinfo>?
        guard getaddrinfo(host, String(port), &hints, &found) == 0, let first = found else {
            return .unreachable("cannot resolve \(host)")
        }
        defer { freeaddrinfo(first) }
        let socket = Glibc.socket(first.pointee.ai_family, first.pointee.ai_socktype, first.pointee.ai_protocol)
        guard socket >= 0 else { return .unreachable(String(cString: strerror(errno))) }
        defer { close(socket) }
        _ = fcntl(socket, F_SETFL, fcntl(socket, F_GETFL) | O_NONBLOCK)
        if connect(socket, first.pointee.ai_addr, first.pointee.ai_addrlen) == 0 { return .listening }
        guard errno == EINPROGRESS else {
            return errno == ECONNREFUSED ? .hostUp : .unreachable(String(cString: strerror(errno)))
        }
        var poller = pollfd(fd: socket, events: Int16(POLLOUT), revents: 0)
        guard poll(&poller, 1, Int32(timeoutSeconds * 1000)) == 1 else { return .unreachable("no answer in \(timeoutSeconds) s") }
        var error: Int32 = 0
        var length = socklen_t(MemoryLayout<Int32>.size)
        getsockopt(socket, SOL_SOCKET, SO_ERROR, &error, &length)
        switch error {
        case 0: return .listening
        case ECONNREFUSED: return .hostUp
        default: return .unreachable(String(cString: strerror(error)))
        }
    }
}
