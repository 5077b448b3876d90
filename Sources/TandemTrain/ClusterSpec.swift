import Foundation
import TandemCore

/// Who takes part in a job and where, in TensorFlow's TF_CONFIG shape:
/// `{"cluster": {"chief": ["host:port"], "worker": [...], "ps": [...], "evaluator": [...]}, "task": {"type": "worker", "index": 0}}`.
/// It comes from the TF_CONFIG environment variable or, failing that, from Slurm (inside a job step or allocation:
/// ClusterSpec+Slurm.swift) with the job config's "cluster" section giving the role counts, or from that section alone.
public struct ClusterSpec: Sendable, Equatable {
    public enum Role: String, CaseIterable, Sendable, Codable {
        case chief, worker, ps, evaluator
    }

    /// The training strategy a cluster job runs.
    public enum Strategy: String, CaseIterable, Sendable {
        case mirrored
        case parameterServer = "parameter_server"
    }

    public struct Task: Sendable, Equatable, Codable {
        public var type: Role
        public var index: Int

        public init(type: Role, index: Int) {
            self.type = type
            self.index = index
        }

        public var label: String { "\(type.rawValue) \(index)" }
    }

    public struct Address: Sendable, Equatable {
        public var host: String
        public var port: Int
        public var text: String { "\(host):\(port)" }
    }

    /// Addresses per role, in the order given.
    public let roles: [Role: [Address]]
    /// This process's task, when the source names one.
    public let task: Task?
    /// Where the spec came from ("TF_CONFIG", "Slurm job 42" or the config path), for messages.
    public let source: String
    /// The Slurm job or step the tasks were placed by, when the spec came from Slurm.
    public internal(set) var slurm: SlurmEnvironment? = nil

    /// Every task, chief first, then workers, ps, evaluators: the mirrored strategy's MPI rank order.
    public var tasks: [(task: Task, address: Address)] {
        Role.allCases.flatMap { role in (roles[role] ?? []).enumerated().map { (Task(type: role, index: $0.offset), $0.element) } }
    }

    /// Tasks that train: the chief (if any) and the workers, in rank order.
    public var trainingTasks: [(task: Task, address: Address)] { tasks.filter { [.chief, .worker].contains($0.task.type) } }

    /// Parses and checks a raw cluster (role → "host:port" list) and optional task.
    public init(cluster: [String: [String]], task: Task?, source: String) throws {
        func fail(_ message: String) -> TandemError { TandemError(.badConfig, "\(source): \(message)") }
        var roles: [Role: [Address]] = [:]
        var seen: [String: String] = [:]
        for name in cluster.keys.sorted() {
            guard let role = Role(rawValue: name) else {
                throw fail("cluster.\(name): unknown task type \"\(name)\" (expected one of: chief, worker, ps, evaluator)")
            }
            var addresses: [Address] = []
            for (index, text) in cluster[name]!.enumerated() {
                let field = "cluster.\(name)[\(index)]"
                let address = try Self.parseAddress(text, field: field, fail: fail)
                let key = "\(address.host.lowercased()):\(address.port)"
                if let other = seen[key] { throw fail("\(field): address \(text) is already used by \(other)") }
                seen[key] = field
                addresses.append(address)
            }
            roles[role] = addresses
        }
        if let chiefs = roles[.chief], chiefs.count > 1 {
            throw fail("cluster.chief has \(chiefs.count) tasks; a job has at most one chief")
        }
        if let task {
            guard let members = roles[task.type], !members.isEmpty else {
                throw fail("task.type \"\(task.type.rawValue)\" is not in the cluster (it has: \(roles.keys.map(\.rawValue).sorted().joined(separator: ", ")))")
            }
            guard (0..<members.count).contains(task.index) else {
                throw fail("task.index \(task.index) is out of range: cluster.\(task.type.rawValue) has \(members.count) task\(members.count == 1 ? "" : "s")")
            }
        }
        self.roles = roles
        self.task = task
        self.source = source
    }

    private static func parseAddress(_ text: String, field: String, fail: (String) -> TandemError) throws -> Address {
        guard let colon = text.lastIndex(of: ":"), colon != text.startIndex else {
            throw fail("\(field): \"\(text)\" is not host:port")
        }
        var host = String(text[..<colon])
        if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        let portText = text[text.index(after: colon)...]
        guard !host.isEmpty, !host.contains(" "), let port = Int(portText) else {
            throw fail("\(field): \"\(text)\" is not host:port")
        }
        guard (1...65535).contains(port) else {
            throw fail("\(field): port \(port) in \"\(text)\" is out of range 1-65535")
        }
        return Address(host: host, port: port)
    }

    /// Checks what `strategy` needs of the cluster.
    public func validate(for strategy: Strategy) throws {
        func fail(_ message: String) -> TandemError { TandemError(.badConfig, "\(source): \(message)") }
        switch strategy {
        case .mirrored:
            guard !trainingTasks.isEmpty else { throw fail("the mirrored strategy needs a chief or at least one worker in the cluster") }
            if let ps = roles[.ps], !ps.isEmpty { throw fail("cluster.ps: the mirrored strategy has no parameter servers; use strategy \"parameter_server\" or remove them") }
        case .parameterServer:
            guard roles[.chief]?.isEmpty == false else { throw fail("the parameter_server strategy needs a chief task (cluster.chief is missing)") }
            guard roles[.ps]?.isEmpty == false else { throw fail("the parameter_server strategy needs at least one ps task (cluster.ps is missing)") }
            guard roles[.worker]?.isEmpty == false else { throw fail("the parameter_server strategy needs at least one worker (cluster.worker is missing)") }
        }
    }

    /// TF_CONFIG for one task of this cluster, as launch.sh puts it in that task's environment.
    public func tfConfig(for task: Task) -> String {
        canonicalJSON(["cluster": rawCluster, "task": ["type": task.type.rawValue, "index": task.index]])
    }

    /// The cluster alone (every role's addresses, no task) as canonical JSON: what every task of one job shares, so
    /// tasks compare it before step 1.
    public var clusterJSON: String { canonicalJSON(rawCluster) }

    private var rawCluster: [String: [String]] {
        var cluster: [String: [String]] = [:]
        for (role, addresses) in roles { cluster[role.rawValue] = addresses.map(\.text) }
        return cluster
    }

    private func canonicalJSON(_ object: Any) -> String {
        let data = (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])) ?? Data()
        return String(decoding: data, as: UTF8.self)
    }

    /// The spec in effect: TF_CONFIG when set (as in TensorFlow); else, for a config with a cluster section, Slurm's
    /// placement of that section's roles when under Slurm, or the section itself; else nil.
    public static func resolve(config: JobConfig, environment: [String: String] = ProcessInfo.processInfo.environment) throws -> ClusterSpec? {
        if let text = environment["TF_CONFIG"], !text.trimmingCharacters(in: .whitespaces).isEmpty {
            let raw = try decodeJSON(RawTFConfig.self, from: Data(text.utf8), path: "TF_CONFIG")
            return try ClusterSpec(cluster: raw.cluster, task: try raw.task?.resolved(source: "TF_CONFIG"), source: "TF_CONFIG")
        }
        guard let cluster = config.cluster else { return nil }
        let path = config.sourcePath ?? "config"
        if let slurm = try SlurmEnvironment(environment: environment) {
            return try ClusterSpec(slurm: slurm, roleCounts: cluster.mapValues(\.count), countsFrom: path,
                                   portBase: try slurmPortBase(environment))
        }
        return try ClusterSpec(cluster: cluster, task: nil, source: path)
    }
}

/// TF_CONFIG as JSON, before checking.
struct RawTFConfig: Decodable {
    struct RawTask: Decodable {
        var type: String
        var index: Int

        func resolved(source: String) throws -> ClusterSpec.Task {
            guard let role = ClusterSpec.Role(rawValue: type) else {
                throw TandemError(.badConfig, "\(source): task.type \"\(type)\" is unknown (expected one of: chief, worker, ps, evaluator)")
            }
            guard index >= 0 else { throw TandemError(.badConfig, "\(source): task.index must be ≥ 0, found \(index)") }
            return ClusterSpec.Task(type: role, index: index)
        }
    }

    var cluster: [String: [String]]
    var task: RawTask?
}
