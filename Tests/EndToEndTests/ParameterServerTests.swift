import Foundation
import Testing

extension EndToEnd {
    /// `./launch.sh configs/cluster-ps.json`: 1 ps + 2 workers + chief on loopback, over gRPC.
    @Suite struct ParameterServerTests {
        /// The test's own ports, so a job someone is running on the config's ports is left alone.
        static let cluster = #"{"chief":["localhost:2330"],"worker":["localhost:2331","localhost:2332"],"ps":["localhost:2333"]}"#

        private func tfConfig(_ type: String, _ index: Int) -> String {
            #"{"cluster":\#(Self.cluster),"task":{"type":"\#(type)","index":\#(index)}}"#
        }

        @Test func chiefWorkersAndPsTrainAndStop() throws {
            let outcome = try TandemProcess.launch(["configs/cluster-ps.json", "--epochs", "1"], timeoutSeconds: 240,
                                                   environment: ["TF_CONFIG": #"{"cluster":\#(Self.cluster)}"#])
            #expect(outcome.status == 0, "\(outcome.stdout)\n\(outcome.stderr)")
            #expect(outcome.stdout.contains("[ps 0] ps 0: serving parameters 0..<15910 at localhost:2333"), "\(outcome.stdout)")
            #expect(outcome.stdout.contains("[chief 0] Epoch 1/1  "), "\(outcome.stdout)")
            #expect(outcome.stdout.contains("[worker 0] worker 0: the chief ended the job"))
            #expect(outcome.stdout.contains("[worker 1] worker 1: the chief ended the job"))
            let test = outcome.stdout.split(separator: "\n").first { $0.hasPrefix("[chief 0] Test: loss") }.map(String.init) ?? ""
            let accuracy = Double(test.components(separatedBy: "accuracy ").last?.prefix(6) ?? "") ?? 0
            #expect(accuracy > 0.75, "one epoch of asynchronous SGD: \(test)")
        }

        @Test func aWorkerWithoutTheJobsTokenIsRefused() throws {
            let ps = Process()
            ps.executableURL = URL(fileURLWithPath: TandemProcess.binary)
            ps.arguments = ["train", "configs/cluster-ps.json"]
            ps.currentDirectoryURL = TandemProcess.packageRoot
            ps.environment = ProcessInfo.processInfo.environment.merging(["TF_CONFIG": tfConfig("ps", 0), "TANDEM_JOB_TOKEN": "right"]) { $1 }
            let psErrors = Pipe()
            ps.standardOutput = FileHandle.nullDevice
            ps.standardError = psErrors
            try ps.run()
            defer { kill(ps.processIdentifier, SIGKILL); ps.waitUntilExit() }
            let drained = DrainedPipe(psErrors)

            let worker = try TandemProcess.command(["/usr/bin/env", "TF_CONFIG=\(tfConfig("worker", 0))", "TANDEM_JOB_TOKEN=wrong",
                                                    TandemProcess.binary, "train", "configs/cluster-ps.json"], timeoutSeconds: 120)
            #expect(worker.status == 1)
            #expect(worker.stderr.contains("permissionDenied") && worker.stderr.contains("wrong or missing job token"), "\(worker.stderr)")
            kill(ps.processIdentifier, SIGKILL)
            let logged = String(decoding: drained.wait(), as: UTF8.self)
            #expect(logged.contains("ps 0: refused a Status request"), "\(logged)")
        }

        @Test func theJobFinishesWhenAWorkerIsKilled() throws {
            // Worker 1 is SIGKILLed 3 s into a 3-epoch job; worker 0 finishes the budget.
            let script = """
                "$TANDEM_LAUNCH" configs/cluster-ps.json --epochs 3 &
                launcher=$!
                sleep 3
                for environment in /proc/[0-9]*/environ; do
                    if tr '\\0' '\\n' < "$environment" 2>/dev/null | grep -q '^TF_CONFIG=.*"index":1,"type":"worker"'; then
                        pid=${environment#/proc/}; kill -KILL "${pid%/environ}"
                    fi
                done
                wait $launcher
                """
            let outcome = try TandemProcess.command(
                ["/usr/bin/env", "TANDEM_LAUNCH=\(TandemProcess.packageRoot.path)/launch.sh", "TANDEM_PREBUILT=\(TandemProcess.binary)",
                 "TANDEM_RUNS=\(TandemProcess.runsDirectory)", "TF_CONFIG={\"cluster\":\(Self.cluster)}", "/bin/sh", "-c", script],
                timeoutSeconds: 300)
            let test = outcome.stdout.split(separator: "\n").first { $0.hasPrefix("[chief 0] Test: loss") }.map(String.init) ?? ""
            let accuracy = Double(test.components(separatedBy: "accuracy ").last?.prefix(6) ?? "") ?? 0
            #expect(outcome.stdout.contains("[chief 0] Epoch 3/3"), "\(outcome.stdout)\n\(outcome.stderr)")
            #expect(accuracy >= 0.82, "\(test)")
            #expect(outcome.stderr.contains("worker 1 ended with exit"), "launch.sh reports the killed worker: \(outcome.stderr)")
        }
    }
}
