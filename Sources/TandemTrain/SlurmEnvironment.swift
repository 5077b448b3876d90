import Foundation
import TandemCore

/// What Slurm tells a process about its job: inside a job step (`srun`), every task of the step, the node each runs
/// on and which task this process is; inside an allocation but outside a step (the `salloc` shell, a batch script),
/// the allocation's tasks, as a step over the whole allocation will lay them out.
///
/// Tasks are laid out as Slurm's `block` distribution does (the first node's tasks are 0, 1, …, then the next node's;
/// Slurm's default when there are more tasks than nodes) or, when `SLURM_DISTRIBUTION` says `cyclic` (Slurm's default
/// when there are not), round-robin over the nodes that still have room. Any other distribution (`plane`,
/// `arbitrary`), or a `SLURM_NODEID` that disagrees with the layout, is refused, since no task could then know where
/// the others are. Every number is checked before it is used.
public struct SlurmEnvironment: Sendable, Equatable {
    /// Where each task runs: its node and its index among that node's tasks (`SLURM_LOCALID`).
    public struct Placement: Sendable, Equatable {
        public var node: String
        public var localIndex: Int
    }

    public let jobID: String
    /// The step (`SLURM_STEP_ID`); nil in the allocation outside a step.
    public let stepID: String?
    /// This process's task (`SLURM_PROCID`); nil outside a step.
    public let taskID: Int?
    /// Each task's placement, in task order.
    public let placements: [Placement]
    /// The nodes, in Slurm's order.
    public let nodes: [String]

    public var taskCount: Int { placements.count }

    /// The variables the task count and layout were read from (the step's, or the allocation's), for messages.
    public var variables: String { stepID == nil ? "SLURM_NTASKS, SLURM_JOB_NODELIST, SLURM_TASKS_PER_NODE" : "SLURM_STEP_NUM_TASKS, SLURM_STEP_NODELIST, SLURM_STEP_TASKS_PER_NODE" }

    /// Reads Slurm's variables; nil when `SLURM_JOB_ID` is not set (not under Slurm).
    /// - Throws: `TandemError(.badConfig)` naming the first variable that is missing, malformed or inconsistent.
    public init?(environment: [String: String] = ProcessInfo.processInfo.environment) throws {
        guard let jobID = environment["SLURM_JOB_ID"] ?? environment["SLURM_JOBID"] else { return nil }
        func fail(_ variable: String, _ problem: String) -> TandemError { TandemError(.badConfig, "\(variable): \(problem)") }
        func value(_ names: String...) throws -> (name: String, text: String) {
            for name in names { if let text = environment[name] { return (name, text) } }
            throw fail(names[0], "is not set, yet SLURM_JOB_ID is (\(jobID)); is this a Slurm job?")
        }
        func integer(_ names: String..., in range: ClosedRange<Int>) throws -> Int {
            var found: (name: String, text: String)?
            for name in names where found == nil { if let text = environment[name] { found = (name, text) } }
            guard let found else { throw fail(names[0], "is not set, yet SLURM_JOB_ID is (\(jobID)); is this a Slurm job?") }
            return try SlurmNodeList.number(Substring(found.text), in: range) { fail(found.name, $0) }
        }
        guard !jobID.isEmpty, jobID.count <= 64, !jobID.contains(where: \.isWhitespace) else {
            throw fail("SLURM_JOB_ID", "\"\(jobID)\" is not a job id")
        }
        let stepID = environment["SLURM_STEP_ID"] ?? environment["SLURM_STEPID"]
        let maximumTasks = SlurmNodeList.maximumHosts * 64
        let taskCount: Int, nodeList: (name: String, text: String), perNode: (name: String, text: String)
        if stepID != nil {
            taskCount = try integer("SLURM_STEP_NUM_TASKS", "SLURM_NTASKS", in: 1...maximumTasks)
            nodeList = try value("SLURM_STEP_NODELIST")
            perNode = try value("SLURM_STEP_TASKS_PER_NODE")
        } else {
            guard environment["SLURM_NTASKS"] != nil || environment["SLURM_NPROCS"] != nil else {
                throw fail("SLURM_NTASKS", "is not set: ask the allocation for tasks (salloc -n N, or #SBATCH --ntasks=N)")
            }
            taskCount = try integer("SLURM_NTASKS", "SLURM_NPROCS", in: 1...maximumTasks)
            nodeList = try value("SLURM_JOB_NODELIST", "SLURM_NODELIST")
            perNode = try value("SLURM_TASKS_PER_NODE")
        }
        let nodes = try SlurmNodeList.expandHosts(nodeList.text, variable: nodeList.name)
        let counts = try SlurmNodeList.expandCounts(perNode.text, variable: perNode.name)
        guard counts.count == nodes.count else {
            throw fail(perNode.name, "\"\(perNode.text)\" counts tasks on \(counts.count) node\(counts.count == 1 ? "" : "s"), but \(nodeList.name) \"\(nodeList.text)\" lists \(nodes.count)")
        }
        guard counts.reduce(0, +) == taskCount else {
            throw fail(perNode.name, "\"\(perNode.text)\" places \(counts.reduce(0, +)) tasks, but the job step has \(taskCount)")
        }
        let distribution = (environment["SLURM_DISTRIBUTION"] ?? "block").split(separator: ":").first.map(String.init) ?? "block"
        guard ["block", "cyclic"].contains(distribution) else {
            throw fail("SLURM_DISTRIBUTION", "is \"\(environment["SLURM_DISTRIBUTION"] ?? "")\"; Tandem derives every task's node from the block or cyclic layout (srun --distribution=block, Slurm's default with more tasks than nodes)")
        }
        let placements = Self.layout(nodes: nodes, counts: counts, cyclic: distribution == "cyclic")
        var taskID: Int?
        if stepID != nil {
            let task = try integer("SLURM_PROCID", in: 0...(taskCount - 1))
            let placement = placements[task]
            if let nodeID = environment["SLURM_NODEID"] {
                let node = try SlurmNodeList.number(Substring(nodeID), in: 0...(nodes.count - 1)) { fail("SLURM_NODEID", $0) }
                guard nodes[node] == placement.node else {
                    throw fail("SLURM_NODEID", "task \(task) runs on node \(node) (\(nodes[node])), but the \(distribution) layout puts it on \(placement.node); start the step with srun --distribution=block")
                }
            }
            if let localID = environment["SLURM_LOCALID"] {
                let local = try SlurmNodeList.number(Substring(localID), in: 0...maximumTasks) { fail("SLURM_LOCALID", $0) }
                guard local == placement.localIndex else {
                    throw fail("SLURM_LOCALID", "task \(task) is task \(local) of its node, but the \(distribution) layout makes it task \(placement.localIndex) of \(placement.node); start the step with srun --distribution=block")
                }
            }
            taskID = task
        }
        self.jobID = jobID
        self.stepID = stepID
        self.taskID = taskID
        self.placements = placements
        self.nodes = nodes
    }

    /// Each task's node and index on it, in task order: node by node (block) or one task per node in turn (cyclic).
    private static func layout(nodes: [String], counts: [Int], cyclic: Bool) -> [Placement] {
        guard cyclic else {
            return zip(nodes, counts).flatMap { node, count in (0..<count).map { Placement(node: node, localIndex: $0) } }
        }
        let total = counts.reduce(0, +)
        var placed = [Int](repeating: 0, count: nodes.count), placements: [Placement] = []
        placements.reserveCapacity(total)
        while placements.count < total {
            for node in nodes.indices where placed[node] < counts[node] {
                placements.append(Placement(node: nodes[node], localIndex: placed[node]))
                placed[node] += 1
            }
        }
        return placements
    }
}
