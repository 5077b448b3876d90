import Foundation
import TandemCore
import TandemTestSupport
import TandemTrain
import Testing

/// A task learns its role, its index and every task's address from Slurm's variables and the config's role counts.
struct SlurmClusterSpecTests {
    /// What srun gives task `task` of a step of `perNode` on `nodes` (variables as slurmd 22.05 sets them).
    private func step(task: Int, nodes: String = "node[01-02]", perNode: String = "2(x2)", tasks: Int = 4,
                      extra: [String: String] = [:]) -> [String: String] {
        let counts = (try? SlurmNodeList.expandCounts(perNode, variable: "test")) ?? []
        var node = 0, first = 0
        while node < counts.count, task >= first + counts[node] { first += counts[node]; node += 1 }
        return ["SLURM_JOB_ID": "42", "SLURM_STEP_ID": "0", "SLURM_PROCID": String(task), "SLURM_STEP_NUM_TASKS": String(tasks),
                "SLURM_STEP_NODELIST": nodes, "SLURM_STEP_TASKS_PER_NODE": perNode, "SLURM_NODEID": String(node),
                "SLURM_LOCALID": String(task - first), "SLURM_DISTRIBUTION": "block", "SLURM_NTASKS": String(tasks)]
            .merging(extra) { $1 }
    }

    private let psCounts = ["chief": 1, "worker": 2, "ps": 1]

    private func spec(_ environment: [String: String], counts: [String: Int]? = nil) throws -> ClusterSpec {
        let slurm = try #require(try SlurmEnvironment(environment: environment))
        return try ClusterSpec(slurm: slurm, roleCounts: counts ?? psCounts, countsFrom: "job.json", portBase: 8888)
    }

    @Test func notUnderSlurmWithoutAJobID() throws {
        #expect(try SlurmEnvironment(environment: ["SLURM_PROCID": "0"]) == nil)
    }

    @Test func tasksTakeRolesChiefWorkersPsInTaskOrderWithPortsPerNode() throws {
        let specs = try (0..<4).map { try spec(step(task: $0)) }
        #expect(specs.map { $0.task?.label } == ["chief 0", "worker 0", "worker 1", "ps 0"])
        for spec in specs {
            #expect(spec.tasks.map { "\($0.task.label)@\($0.address.text)" }
                    == ["chief 0@node01:8888", "worker 0@node01:8889", "worker 1@node02:8888", "ps 0@node02:8889"])
            #expect(spec.source == "Slurm job 42, step 0")
        }
        // Every task derives the same cluster: only the task differs.
        #expect(Set(specs.map { $0.tfConfig(for: .init(type: .chief, index: 0)) }).count == 1)
        #expect(specs[2].slurmTaskID(of: .init(type: .worker, index: 1)) == 2)
    }

    @Test func theChiefIsTaskZeroAndMirroredRanksFollowTaskOrder() throws {
        let mirrored = try spec(step(task: 1, nodes: "vm", perNode: "2", tasks: 2), counts: ["chief": 1, "worker": 1, "evaluator": 1])
        #expect(mirrored.trainingTasks.map(\.task.label) == ["chief 0", "worker 0"])
        #expect(mirrored.task == .init(type: .worker, index: 0))
        // Evaluators are not tasks of the step.
        #expect(mirrored.roles[.evaluator] == nil)
        try mirrored.validate(for: .mirrored)
    }

    @Test func aCyclicStepPlacesTasksRoundRobinOverTheNodesWithRoom() throws {
        // srun's default with no more tasks than nodes; with more, as --distribution=cyclic asks.
        let environment = step(task: 0, nodes: "n[1-2]", perNode: "3,1", tasks: 4, extra: ["SLURM_DISTRIBUTION": "cyclic:block"])
        let cyclic = try spec(environment)
        #expect(cyclic.tasks.map { "\($0.task.label)@\($0.address.text)" }
                == ["chief 0@n1:8888", "worker 0@n2:8888", "worker 1@n1:8889", "ps 0@n1:8890"])
    }

    @Test func theAllocationOutsideAStepGivesTheLayoutWithoutATask() throws {
        let environment = ["SLURM_JOB_ID": "7", "SLURM_NTASKS": "4", "SLURM_JOB_NODELIST": "nodea,nodeb", "SLURM_TASKS_PER_NODE": "3,1",
                           "SLURM_PROCID": "0"]  // a batch script has SLURM_PROCID=0 but is no task of a step
        let allocation = try spec(environment)
        #expect(allocation.task == nil && allocation.source == "Slurm job 7")
        #expect(allocation.tasks.map(\.address.text) == ["nodea:8888", "nodea:8889", "nodea:8890", "nodeb:8888"])
    }

    @Test func tfConfigStillWins() throws {
        let config = try JSONDecoder().decode(JobConfig.self, from: Data(#"""
            {"data": {"format": "csv", "train": "t.csv"}, "model": {"input_size": 1, "layers": [{"units": 1}]},
             "loss": "mse", "optimizer": {"name": "sgd", "learning_rate": 0.1}, "training": {"batch_size": 1, "epochs": 1},
             "strategy": "parameter_server", "cluster": {"chief": ["a:1"], "worker": ["b:2", "c:3"], "ps": ["d:4"]}}
            """#.utf8))
        let fromSlurm = try #require(try ClusterSpec.resolve(config: config, environment: step(task: 3)))
        #expect(fromSlurm.task == .init(type: .ps, index: 0) && fromSlurm.slurm != nil)
        let environment = step(task: 3).merging(["TF_CONFIG": #"{"cluster": {"chief": ["x:9"]}, "task": {"type": "chief", "index": 0}}"#]) { $1 }
        let fromTFConfig = try #require(try ClusterSpec.resolve(config: config, environment: environment))
        #expect(fromTFConfig.source == "TF_CONFIG" && fromTFConfig.slurm == nil)
        let withBase = try #require(try ClusterSpec.resolve(config: config, environment: step(task: 0, extra: ["TANDEM_SLURM_PORT_BASE": "30000"])))
        #expect(withBase.tasks.map(\.address.port) == [30000, 30001, 30000, 30001])
        expectTandemError(.badConfig, mentioning: [#"TANDEM_SLURM_PORT_BASE: "http" is not a number"#]) {
            _ = try ClusterSpec.resolve(config: config, environment: step(task: 0, extra: ["TANDEM_SLURM_PORT_BASE": "http"]))
        }
    }

    @Test func countsThatDoNotMatchTheStepNameBoth() {
        let error = expectTandemError(.badConfig, mentioning: []) { _ = try spec(step(task: 0, perNode: "2,1", tasks: 3)) }
        #expect(error?.message == "Slurm job 42, step 0: the step has 3 tasks (SLURM_STEP_NUM_TASKS, SLURM_STEP_NODELIST, SLURM_STEP_TASKS_PER_NODE), but job.json's cluster needs 4 (1 chief, 2 worker, 1 ps): start it with 4 tasks (srun -n 4) or change the cluster's counts")
    }

    @Test(arguments: [
        (["SLURM_PROCID": "4"], "SLURM_PROCID: 4 is out of range 0-3"),
        (["SLURM_PROCID": "-1"], #"SLURM_PROCID: "-1" is not a number"#),
        (["SLURM_PROCID": "99999999999999999999999"], #"SLURM_PROCID: "99999999999999999999999" is not a number"#),
        (["SLURM_STEP_NUM_TASKS": "0"], "SLURM_STEP_NUM_TASKS: 0 is out of range 1-4194304"),
        (["SLURM_STEP_NUM_TASKS": "5"], #"SLURM_STEP_TASKS_PER_NODE: "2(x2)" places 4 tasks, but the job step has 5"#),
        (["SLURM_STEP_TASKS_PER_NODE": "4"], #"SLURM_STEP_TASKS_PER_NODE: "4" counts tasks on 1 node, but SLURM_STEP_NODELIST "node[01-02]" lists 2"#),
        (["SLURM_STEP_NODELIST": "node[01-"], #"SLURM_STEP_NODELIST: "node[01-" has a "[" that is never closed"#),
        (["SLURM_DISTRIBUTION": "plane=2"], #"SLURM_DISTRIBUTION: is "plane=2"; Tandem derives every task's node from the block or cyclic layout (srun --distribution=block, Slurm's default with more tasks than nodes)"#),
        (["SLURM_NODEID": "0", "SLURM_PROCID": "2"], "SLURM_NODEID: task 2 runs on node 0 (node01), but the block layout puts it on node02; start the step with srun --distribution=block"),
        (["SLURM_DISTRIBUTION": "cyclic", "SLURM_NODEID": "0", "SLURM_PROCID": "1"], "SLURM_NODEID: task 1 runs on node 0 (node01), but the cyclic layout puts it on node02; start the step with srun --distribution=block"),
        (["SLURM_JOB_ID": "4 2"], #"SLURM_JOB_ID: "4 2" is not a job id"#),
        (["SLURM_LOCALID": "1"], "SLURM_LOCALID: task 0 is task 1 of its node, but the block layout makes it task 0 of node01; start the step with srun --distribution=block"),
        (["SLURM_LOCALID": "x"], #"SLURM_LOCALID: "x" is not a number"#),
    ])
    func badSlurmVariablesAreNamed(overrides: [String: String], message: String) {
        let error = expectTandemError(.badConfig, mentioning: []) { _ = try SlurmEnvironment(environment: step(task: 0).merging(overrides) { $1 }) }
        #expect(error?.message == message)
    }

    @Test func missingVariablesAreNamed() {
        var environment = step(task: 0)
        environment["SLURM_STEP_NODELIST"] = nil
        expectTandemError(.badConfig, mentioning: ["SLURM_STEP_NODELIST: is not set, yet SLURM_JOB_ID is (42)"]) { _ = try SlurmEnvironment(environment: environment) }
        expectTandemError(.badConfig, mentioning: ["SLURM_NTASKS: is not set: ask the allocation for tasks"]) {
            _ = try SlurmEnvironment(environment: ["SLURM_JOB_ID": "1", "SLURM_JOB_NODELIST": "a", "SLURM_TASKS_PER_NODE": "1"])
        }
    }
}
