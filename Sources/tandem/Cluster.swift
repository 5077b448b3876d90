import ArgumentParser
import Foundation
import Tandem

struct Cluster: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Check a job's cluster (TF_CONFIG or the config's \"cluster\" section) and show who runs where.",
        discussion: """
            TF_CONFIG in the environment wins over the config's cluster section, as in TensorFlow.
            Examples:
              tandem cluster check configs/cluster-mirrored.json
              TF_CONFIG='{"cluster":{"worker":["localhost:2222"]},"task":{"type":"worker","index":0}}' tandem cluster check CONFIG
            """,
        subcommands: [Check.self, Plan.self])

    struct Check: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Validate the cluster and print its roles and addresses.")

        @Argument(help: "Job config (JSON) with a \"cluster\" section, or any config when TF_CONFIG is set.")
        var config: String

        @Flag(help: "Also try a TCP connection to every address (1 s each) and list the unreachable ones.")
        var reach = false

        func run() throws {
            let (job, spec) = try loadCluster(config)
            if reach { return try checkReach(spec) }
            print("\(spec.source): strategy \(job.clusterStrategy.rawValue), \(spec.tasks.count) tasks")
            print("ROLE       INDEX  ADDRESS                 LOCAL  MPI RANK")
            let ranks = Dictionary(uniqueKeysWithValues: spec.trainingTasks.enumerated().map { ($0.element.task.label, $0.offset) })
            for (task, address) in spec.tasks {
                let rank = job.clusterStrategy == .mirrored ? ranks[task.label].map(String.init) ?? "-" : "-"
                let marker = spec.task == task ? "  ← this task" : ""
                print(task.type.rawValue.padding(toLength: 10, withPad: " ", startingAt: 0) + " "
                      + String(task.index).padding(toLength: 6, withPad: " ", startingAt: 0) + " "
                      + address.text.padding(toLength: 23, withPad: " ", startingAt: 0) + " "
                      + (isLocal(address.host) ? "yes" : "no").padding(toLength: 6, withPad: " ", startingAt: 0) + " " + rank + marker)
            }
        }

        /// One TCP attempt per address: "nothing listening" still proves the host answers.
        private func checkReach(_ spec: ClusterSpec) throws {
            var unreachable: [String] = []
            for (task, address) in spec.tasks {
                let result = Reachability.probe(host: address.host, port: address.port)
                print(task.label.padding(toLength: 12, withPad: " ", startingAt: 0) + " "
                      + address.text.padding(toLength: 23, withPad: " ", startingAt: 0) + " \(result)")
                if !result.isReachable { unreachable.append("\(task.label) at \(address.text)") }
            }
            if !unreachable.isEmpty {
                throw TandemError(.communication, "\(spec.source): unreachable: \(unreachable.joined(separator: ", "))")
            }
        }
    }

    /// What launch.sh needs, one task per line, tab-separated: strategy, role, index, host (localhost when local),
    /// port, TF_CONFIG. Not meant for people: `check` is.
    struct Plan: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Print the tasks to start, tab-separated (used by launch.sh).", shouldDisplay: false)

        @Argument var config: String

        func run() throws {
            let (job, spec) = try loadCluster(config)
            for (task, address) in spec.tasks {
                let host = isLocal(address.host) ? "localhost" : address.host
                print([job.clusterStrategy.rawValue, task.type.rawValue, String(task.index), host, String(address.port), spec.tfConfig(for: task)]
                    .joined(separator: "\t"))
            }
        }
    }
}

private func loadCluster(_ path: String) throws -> (JobConfig, ClusterSpec) {
    let job = try JobConfig.load(path: path)
    guard let spec = try ClusterSpec.resolve(config: job) else {
        throw TandemError(.badConfig, "\(path): no cluster: add a \"cluster\" section or set TF_CONFIG")
    }
    try spec.validate(for: job.clusterStrategy)
    return (job, spec)
}

/// Whether a host names this machine: loopback names and addresses, or this host's own name.
func isLocal(_ host: String) -> Bool {
    let name = host.lowercased()
    if ["localhost", "::1", "ip6-localhost"].contains(name) || name.hasPrefix("127.") { return true }
    return name == ProcessInfo.processInfo.hostName.lowercased()
}
