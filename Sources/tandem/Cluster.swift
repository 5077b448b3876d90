import ArgumentParser
import Foundation
import Tandem

struct Cluster: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Check a job's cluster (TF_CONFIG or the config's \"cluster\" section) and show who runs where.",
        discussion: """
            TF_CONFIG in the environment wins over the config's cluster section, as in TensorFlow. Inside a Slurm allocation or job step (SLURM_JOB_ID set, no TF_CONFIG), Slurm places the section's roles on its tasks: task i takes the i-th role in the order chief, workers, ps; a task listens on its node at TANDEM_SLURM_PORT_BASE (default 8888) + SLURM_LOCALID.
            Examples:
              tandem cluster check configs/cluster-mirrored.json
              TF_CONFIG='{"cluster":{"worker":["localhost:2222"]},"task":{"type":"worker","index":0}}' tandem cluster check CONFIG
              salloc -n 4 tandem cluster check configs/cluster-ps.json
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
            if let slurm = spec.slurm { return printSlurmLayout(job: job, spec: spec, slurm: slurm) }
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

        /// Where Slurm puts each task: its node, port, Slurm task number and, in a mirrored job, MPI rank (the same
        /// number: `srun --mpi=pmix` makes task i rank i).
        private func printSlurmLayout(job: JobConfig, spec: ClusterSpec, slurm: SlurmEnvironment) {
            let nodes = slurm.nodes.count
            print("\(spec.source): strategy \(job.clusterStrategy.rawValue), \(spec.tasks.count) tasks on \(nodes) node\(nodes == 1 ? "" : "s"); "
                  + "roles from \(config), placed by Slurm (\(slurm.variables))")
            print("ROLE       INDEX  NODE                PORT   SLURM TASK  MPI RANK")
            for (task, address) in spec.tasks {
                let taskID = spec.slurmTaskID(of: task) ?? 0
                let rank = job.clusterStrategy == .mirrored ? String(taskID) : "-"
                let marker = spec.task == task ? "  ← this task" : ""
                print(task.type.rawValue.padding(toLength: 10, withPad: " ", startingAt: 0) + " "
                      + String(task.index).padding(toLength: 6, withPad: " ", startingAt: 0) + " "
                      + address.host.padding(toLength: 19, withPad: " ", startingAt: 0) + " "
                      + String(address.port).padding(toLength: 6, withPad: " ", startingAt: 0) + " "
                      + String(taskID).padding(toLength: 11, withPad: " ", startingAt: 0) + " " + rank + marker)
            }
            for index in 0..<(job.cluster?["evaluator"]?.count ?? 0) {
                print("evaluator  \(index)      not a task of the step: launch.sh runs it beside the step, watching the checkpoints")
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
    /// port, TF_CONFIG. Not meant for people: `check` is. From Slurm, the tasks come in Slurm task order (host: the
    /// node), the config's evaluators after them on "localhost" (launch.sh runs those beside the step), and the
    /// TF_CONFIG column says "-": each task reads its role from Slurm.
    struct Plan: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Print the tasks to start, tab-separated (used by launch.sh).", shouldDisplay: false)

        @Argument var config: String

        func run() throws {
            let (job, spec) = try loadCluster(config)
            func line(_ fields: String...) { print(([job.clusterStrategy.rawValue] + fields).joined(separator: "\t")) }
            guard spec.slurm == nil else {
                for (task, address) in spec.tasks { line(task.type.rawValue, String(task.index), address.host, String(address.port), "-") }
                for index in 0..<(job.cluster?["evaluator"]?.count ?? 0) { line("evaluator", String(index), "localhost", "0", "-") }
                return
            }
            for (task, address) in spec.tasks {
                line(task.type.rawValue, String(task.index), isLocal(address.host) ? "localhost" : address.host, String(address.port), spec.tfConfig(for: task))
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
