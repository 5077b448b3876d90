import Foundation
import TandemCore
import TandemTrain
import Testing

/// Every malformed cluster gets its own exact message, naming the source, the field and the value.
struct ClusterSpecTests {
    private func spec(_ cluster: [String: [String]], task: ClusterSpec.Task? = nil) throws -> ClusterSpec {
        try ClusterSpec(cluster: cluster, task: task, source: "job.json")
    }

    private func message(_ body: () throws -> Void) -> String? {
        do {
            try body()
            return nil
        } catch {
            return (error as? TandemError)?.message
        }
    }

    @Test func aValidClusterListsTasksInRankOrder() throws {
        let cluster = try spec(["worker": ["b:2", "c:3"], "chief": ["a:1"], "evaluator": ["d:4"]], task: .init(type: .worker, index: 1))
        #expect(cluster.tasks.map(\.task.label) == ["chief 0", "worker 0", "worker 1", "evaluator 0"])
        #expect(cluster.trainingTasks.map(\.address.text) == ["a:1", "b:2", "c:3"])
        try cluster.validate(for: .mirrored)
        #expect(cluster.tfConfig(for: .init(type: .worker, index: 0)) == #"{"cluster":{"chief":["a:1"],"evaluator":["d:4"],"worker":["b:2","c:3"]},"task":{"index":0,"type":"worker"}}"#)
    }

    @Test func unknownTaskType() {
        #expect(message { _ = try spec(["boss": ["a:1"]]) } == #"job.json: cluster.boss: unknown task type "boss" (expected one of: chief, worker, ps, evaluator)"#)
    }

    @Test func indexOutOfRange() {
        #expect(message { _ = try spec(["worker": ["a:1", "b:2"]], task: .init(type: .worker, index: 2)) }
                == "job.json: task.index 2 is out of range: cluster.worker has 2 tasks")
    }

    @Test func duplicateAddress() {
        #expect(message { _ = try spec(["chief": ["host:2222"], "worker": ["HOST:2222"]]) }
                == "job.json: cluster.worker[0]: address HOST:2222 is already used by cluster.chief[0]")
    }

    @Test(arguments: ["localhost", ":2222", "local host:1", "host:port", ""])
    func malformedHostPort(address: String) {
        #expect(message { _ = try spec(["worker": [address]]) } == "job.json: cluster.worker[0]: \"\(address)\" is not host:port")
    }

    @Test(arguments: ["0", "65536", "-1"])
    func portOutOfRange(port: String) {
        #expect(message { _ = try spec(["worker": ["h:\(port)"]]) }
                == "job.json: cluster.worker[0]: port \(port) in \"h:\(port)\" is out of range 1-65535")
    }

    @Test func chiefMissingWhereTheStrategyNeedsOne() throws {
        let cluster = try spec(["worker": ["a:1"], "ps": ["b:2"]])
        #expect(message { try cluster.validate(for: .parameterServer) } == "job.json: the parameter_server strategy needs a chief task (cluster.chief is missing)")
        #expect(message { try spec(["chief": ["c:1"], "worker": ["a:1"]]).validate(for: .parameterServer) }
                == "job.json: the parameter_server strategy needs at least one ps task (cluster.ps is missing)")
        #expect(message { try cluster.validate(for: .mirrored) }
                == #"job.json: cluster.ps: the mirrored strategy has no parameter servers; use strategy "parameter_server" or remove them"#)
    }

    @Test func taskNotInTheCluster() {
        #expect(message { _ = try spec(["chief": ["a:1"], "worker": ["b:2"]], task: .init(type: .ps, index: 0)) }
                == #"job.json: task.type "ps" is not in the cluster (it has: chief, worker)"#)
    }

    @Test func twoChiefs() {
        #expect(message { _ = try spec(["chief": ["a:1", "b:2"]]) } == "job.json: cluster.chief has 2 tasks; a job has at most one chief")
    }

    @Test func tfConfigWinsOverTheConfigAndIsCheckedToo() throws {
        let config = try JSONDecoder().decode(JobConfig.self, from: Data(#"""
            {"data": {"format": "csv", "train": "t.csv"}, "model": {"input_size": 1, "layers": [{"units": 1}]},
             "loss": "mse", "optimizer": {"name": "sgd", "learning_rate": 0.1}, "training": {"batch_size": 1, "epochs": 1},
             "cluster": {"worker": ["a:1", "b:2"]}}
            """#.utf8))
        let fromConfig = try #require(try ClusterSpec.resolve(config: config, environment: [:]))
        #expect(fromConfig.trainingTasks.count == 2 && fromConfig.task == nil)
        let environment = ["TF_CONFIG": #"{"cluster": {"chief": ["x:9"]}, "task": {"type": "chief", "index": 0}}"#]
        let fromEnvironment = try #require(try ClusterSpec.resolve(config: config, environment: environment))
        #expect(fromEnvironment.source == "TF_CONFIG" && fromEnvironment.task == .init(type: .chief, index: 0))
        #expect(fromEnvironment.trainingTasks.map(\.address.text) == ["x:9"])
        #expect(message { _ = try ClusterSpec.resolve(config: config, environment: ["TF_CONFIG": #"{"cluster": {}, "task": {"type": "boss", "index": 0}}"#]) }
                == #"TF_CONFIG: task.type "boss" is unknown (expected one of: chief, worker, ps, evaluator)"#)
        #expect(message { _ = try ClusterSpec.resolve(config: config, environment: ["TF_CONFIG": "{not json"]) }?.hasPrefix("TF_CONFIG: malformed JSON") == true)
    }
}
