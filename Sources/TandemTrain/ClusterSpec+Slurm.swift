import Foundation
import TandemCore

/// Slurm as a cluster source, as TensorFlow's SlurmClusterResolver: the job config says how many tasks of each role
/// the job has; Slurm says how many tasks there are, on which nodes, and which one this process is.
///
/// Task `i` of the step (`SLURM_PROCID`) takes the `i`-th role in the order chief, workers, ps — so the chief is task 0,
/// which is also MPI rank 0 of a mirrored job started with `srun --mpi=pmix`. Evaluators are not tasks of the step: they
/// watch the checkpoint folder from wherever they are started (launch.sh runs them beside the step). A task's address
/// is its node's name and `base + SLURM_LOCALID`, the base from `TANDEM_SLURM_PORT_BASE` (default 8888).
extension ClusterSpec {
    /// The roles the tasks of a Slurm step take, in task order.
    public static let slurmRoleOrder: [Role] = [.chief, .worker, .ps]
    /// The environment variable with the first port of each node's tasks, and its default (TensorFlow's resolver's).
    public static let slurmPortBaseVariable = "TANDEM_SLURM_PORT_BASE"
    public static let defaultSlurmPortBase = 8888

    /// Places `roleCounts` on Slurm's tasks.
    /// - Parameters:
    ///   - roleCounts: tasks per role name ("chief", "worker", "ps", "evaluator"), e.g. from the config's cluster section.
    ///   - countsFrom: where the counts came from (the config path), for messages.
    ///   - portBase: the port of each node's first task; the node's task `k` listens at `portBase + k`.
    /// - Throws: `TandemError(.badConfig)` when the counts do not match Slurm's task count or a port is out of range.
    public init(slurm: SlurmEnvironment, roleCounts: [String: Int], countsFrom: String, portBase: Int) throws {
        let source = "Slurm job \(slurm.jobID)" + (slurm.stepID.map { ", step \($0)" } ?? "")
        var counts: [Role: Int] = [:]
        for (name, count) in roleCounts {
            guard let role = Role(rawValue: name) else {
                throw TandemError(.badConfig, "\(countsFrom): cluster.\(name): unknown task type \"\(name)\" (expected one of: chief, worker, ps, evaluator)")
            }
            guard count >= 0 else { throw TandemError(.badConfig, "\(countsFrom): cluster.\(name): the task count must be ≥ 0, found \(count)") }
            counts[role] = count
        }
        let roles = Self.slurmRoleOrder.flatMap { role in repeatElement(role, count: counts[role] ?? 0) }
        guard roles.count == slurm.taskCount else {
            let wanted = Self.slurmRoleOrder.compactMap { role in counts[role].flatMap { $0 > 0 ? "\($0) \(role.rawValue)" : nil } }
            let (what, remedy) = slurm.stepID == nil ? ("the allocation has", "ask for \(roles.count) tasks (salloc or sbatch -n \(roles.count))")
                                                     : ("the step has", "start it with \(roles.count) tasks (srun -n \(roles.count))")
            throw TandemError(.badConfig, "\(source): \(what) \(slurm.taskCount) task\(slurm.taskCount == 1 ? "" : "s") (\(slurm.variables)), but \(countsFrom)'s cluster needs \(roles.count) (\(wanted.joined(separator: ", "))): \(remedy) or change the cluster's counts")
        }
        let widest = slurm.placements.map(\.localIndex).max() ?? 0
        guard (1...65535).contains(portBase), portBase + widest <= 65535 else {
            throw TandemError(.badConfig, "\(Self.slurmPortBaseVariable): port base \(portBase) leaves no room for \(widest + 1) task\(widest == 0 ? "" : "s") on one node below 65536")
        }
        var cluster: [String: [String]] = [:]
        var indexInRole: [Role: Int] = [:]
        var task: Task?
        for (taskID, role) in roles.enumerated() {
            let placement = slurm.placements[taskID]
            cluster[role.rawValue, default: []].append("\(placement.node):\(portBase + placement.localIndex)")
            if taskID == slurm.taskID { task = Task(type: role, index: indexInRole[role, default: 0]) }
            indexInRole[role, default: 0] += 1
        }
        try self.init(cluster: cluster, task: task, source: source)
        self.slurm = slurm
    }

    /// `TANDEM_SLURM_PORT_BASE`, checked, or the default.
    static func slurmPortBase(_ environment: [String: String]) throws -> Int {
        guard let text = environment[slurmPortBaseVariable] else { return defaultSlurmPortBase }
        return try SlurmNodeList.number(Substring(text), in: 1...65535) { TandemError(.badConfig, "\(slurmPortBaseVariable): \($0)") }
    }

    /// The Slurm task that runs `task` (its `SLURM_PROCID`), when the spec came from Slurm.
    public func slurmTaskID(of task: Task) -> Int? {
        guard slurm != nil else { return nil }
        return tasks.firstIndex { $0.task == task }
    }
}
