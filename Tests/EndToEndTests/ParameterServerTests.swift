import Foundation
import TandemTestSupport
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
            // With a side-car evaluator, as in TensorFlow: it evaluates the chief's checkpoints as they appear.
            let cluster = Self.cluster.dropLast() + #","evaluator":["localhost:2334"]}"#
            let outcome = try TandemProcess.launch(["configs/cluster-ps.json", "--epochs", "1"], timeoutSeconds: 240,
                                                   environment: ["TF_CONFIG": #"{"cluster":\#(cluster)}"#])
            #expect(outcome.status == 0, "\(outcome.stdout)\n\(outcome.stderr)")
            #expect(outcome.stdout.contains("[ps 0] ps 0: serving parameters 0..<15910 at localhost:2333"), "\(outcome.stdout)")
            #expect(outcome.stdout.contains("[chief 0] Epoch 1/1  "), "\(outcome.stdout)")
            #expect(outcome.stdout.contains("[worker 0] worker 0: the chief ended the job"))
            #expect(outcome.stdout.contains("[worker 1] worker 1: the chief ended the job"))
            let test = outcome.stdout.split(separator: "\n").first { $0.hasPrefix("[chief 0] Test: loss") }.map(String.init) ?? ""
            let accuracy = Double(test.components(separatedBy: "accuracy ").last?.prefix(6) ?? "") ?? 0
            #expect(accuracy > 0.75, "one epoch of asynchronous SGD: \(test)")
            let evaluation = outcome.stdout.split(separator: "\n").first { $0.hasPrefix("[evaluator 0] test: loss") } ?? ""
            #expect(!test.isEmpty && evaluation.dropFirst("[evaluator 0] test: ".count).prefix(30) == test.dropFirst("[chief 0] Test: ".count).prefix(30),
                    "the evaluator's figure for the last checkpoint is the chief's: \(outcome.stdout)")
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
            #expect(logged.contains("ps 0: refused a Exchange request"), "\(logged)")
        }

        @Test func theJobFinishesWhenAWorkerIsKilled() throws {
            // Worker 1 is SIGKILLed once the chief has reported epoch 1 of 5; worker 0 finishes the budget. The job's
            // logs go to a folder of its own: an earlier job's chief log must not start the kill before this job runs.
            let runs = try TemporaryDirectory(prefix: "tandem-killed-worker")
            defer { runs.remove() }
            let script = """
                "$TANDEM_LAUNCH" configs/cluster-ps.json --epochs 5 &
                launcher=$!
                tries=0
                until grep -qs "Epoch 1/5" "$TANDEM_RUNS"/cluster-ps-*/chief-0.log || [ $((tries += 1)) -gt 2400 ]; do sleep 0.05; done
                for environment in /proc/[0-9]*/environ; do
                    if { tr '\\0' '\\n' < "$environment"; } 2>/dev/null | grep -q '^TF_CONFIG=.*"index":1,"type":"worker"'; then
                        pid=${environment#/proc/}; kill -KILL "${pid%/environ}"
                    fi
                done
                wait $launcher
                """
            let outcome = try TandemProcess.command(
                ["/usr/bin/env", "TANDEM_LAUNCH=\(TandemProcess.packageRoot.path)/launch.sh", "TANDEM_PREBUILT=\(TandemProcess.binary)",
                 "TANDEM_RUNS=\(runs.path)", "TF_CONFIG={\"cluster\":\(Self.cluster)}", "/bin/sh", "-c", script],
                timeoutSeconds: 300)
            let test = outcome.stdout.split(separator: "\n").first { $0.hasPrefix("[chief 0] Test: loss") }.map(String.init) ?? ""
            let accuracy = Double(test.components(separatedBy: "accuracy ").last?.prefix(6) ?? "") ?? 0
            #expect(outcome.stdout.contains("[chief 0] Epoch 5/5"), "\(outcome.stdout)\n\(outcome.stderr)")
            #expect(accuracy >= 0.83, "\(test)")
            // The exit status is the chief's: the job finished, and its last line says which task died on the way.
            #expect(outcome.status == 0, "\(outcome.stderr)")
            let last = outcome.stderr.split(separator: "\n").last.map(String.init) ?? ""
            #expect(last.contains("parameter-server job finished") && last.contains("worker 1 was killed by SIGKILL"), "last line: \(last)")
        }

        // MARK: tasks started one by one, as a cluster manager would

        /// Runs `script` under bash with `task TYPE INDEX ARGS...` defined: starts that task of the test cluster in the
        /// background (`$!` is its pid), its output appended to a log that is printed, each line tagged
        /// `[TYPE-INDEX]`, by `show`. Every task still running when the script ends is killed.
        private func runTasks(_ script: String, config: String = "configs/cluster-ps.json", timeoutSeconds: Int = 240) throws -> TandemProcess.Outcome {
            let prelude = #"""
                B='\#(TandemProcess.binary)'; CLUSTER='\#(Self.cluster)'; LOGS=$(mktemp -d); export TANDEM_JOB_TOKEN=test-token
                trap 'kill -9 $(jobs -p) 2>/dev/null; rm -rf "$LOGS"' EXIT
                task() {
                    local type=$1 index=$2; shift 2
                    TF_CONFIG="{\"cluster\":$CLUSTER,\"task\":{\"type\":\"$type\",\"index\":$index}}" \
                        "$B" train '\#(config)' "$@" >>"$LOGS/$type-$index.log" 2>&1 &
                }
                show() { for log in "$LOGS"/*.log; do sed "s|^|[$(basename "$log" .log)] |" "$log"; done; }

                """#
            return try TandemProcess.command(["/bin/bash", "-c", prelude + script], timeoutSeconds: timeoutSeconds)
        }

        @Test func theChiefRefusesAWorkerWhoseFingerprintDiffers() throws {
            let outcome = try runTasks("""
                task ps 0 --epochs 1; task worker 0 --epochs 1
                task worker 1 --epochs 1 --learning-rate 0.2; refused=$!
                task chief 0 --epochs 1; chief=$!
                wait $refused; echo "refused worker: exit $?"
                wait $chief; echo "chief: exit $?"
                wait; show
                """)
            let message = "worker 1 disagrees with the chief on optimizer.learning_rate: 0.2 vs 0.1"
            #expect(outcome.stdout.contains("refused worker: exit 1"), "\(outcome.stdout)")
            #expect(outcome.stdout.contains("[worker-1] tandem: error: \(message)"), "\(outcome.stdout)")
            #expect(outcome.stdout.contains("[chief-0] tandem: \(message) (refused; the job goes on with the other workers)"), "\(outcome.stdout)")
            #expect(outcome.stdout.contains("chief: exit 0") && outcome.stdout.contains("[chief-0] Epoch 1/1"), "\(outcome.stdout)")
        }

        @Test func boundedStalenessHoldsTheFastWorkerBack() throws {
            // Worker 1 is stopped for 2 s: without the bound worker 0 would run hundreds of steps ahead.
            let outcome = try runTasks("""
                task ps 0 --epochs 2 --max-staleness 1; task worker 0 --epochs 2 --max-staleness 1
                task worker 1 --epochs 2 --max-staleness 1; slow=$!
                task chief 0 --epochs 2 --max-staleness 1; chief=$!
                sleep 2; kill -STOP $slow; sleep 2; kill -CONT $slow
                wait $chief; echo "chief: exit $?"
                wait; show
                """)
            #expect(outcome.stdout.contains("chief: exit 0") && outcome.stdout.contains("[chief-0] Epoch 2/2"), "\(outcome.stdout)")
            #expect(outcome.stdout.contains("a worker was at most 1 steps ahead of the slowest when it got parameters (max_staleness 1)"),
                    "\(outcome.stdout)")
        }

        @Test func aRestartedWorkerRejoins() throws {
            let outcome = try runTasks("""
                task ps 0 --epochs 3; task worker 0 --epochs 3
                task worker 1 --epochs 3; doomed=$!
                task chief 0 --epochs 3; chief=$!
                sleep 2.5; kill -KILL $doomed; sleep 0.5
                task worker 1 --epochs 3
                wait $chief; echo "chief: exit $?"
                wait; show
                """)
            #expect(outcome.stdout.contains("chief: exit 0") && outcome.stdout.contains("[chief-0] Epoch 3/3"), "\(outcome.stdout)")
            #expect(outcome.stdout.contains("[ps-0] tandem: ps 0: worker 1 rejoined at step"), "\(outcome.stdout)")
            #expect(outcome.stdout.contains("[worker-1] worker 1: the chief ended the job"), "the restarted worker trained to the end: \(outcome.stdout)")
        }

        @Test func aDeadPsStopsTheJobAndResumeContinuesFromTheCheckpoint() throws {
            let checkpoints = try TandemProcess.temporaryDirectory().path
            let outcome = try runTasks("""
                task ps 0 --epochs 3; ps=$!
                task worker 0 --epochs 3; task worker 1 --epochs 3
                task chief 0 --epochs 3 --checkpoint-dir \(checkpoints); chief=$!
                tries=0
                until [ -e \(checkpoints)/epoch-0001.safetensors ] || [ $((tries += 1)) -gt 1200 ]; do sleep 0.1; done
                kill -KILL $ps; killed=$EPOCHREALTIME
                wait $chief; status=$?
                echo "chief: exit $status after $(awk "BEGIN { print $EPOCHREALTIME - $killed }") s"
                wait
                for t in "ps 0" "worker 0" "worker 1"; do task $t --epochs 3; done
                task chief 0 --epochs 3 --checkpoint-dir \(checkpoints) --resume latest; chief=$!
                wait $chief; echo "resumed chief: exit $?"
                wait; show
                """)
            let seconds = outcome.stdout.components(separatedBy: "chief: exit 1 after ").dropFirst().first
                .flatMap { Double($0.prefix { $0 != " " }) } ?? .infinity
            #expect(seconds < 15, "the chief stops the job soon after the ps dies: \(outcome.stdout)")
            #expect(outcome.stdout.contains("ps 0 stopped answering") && outcome.stdout.contains("--resume latest"), "\(outcome.stdout)")
            #expect(outcome.stdout.contains("[chief-0] Resuming from \(checkpoints)/epoch-000"), "\(outcome.stdout)")
            #expect(outcome.stdout.contains("resumed chief: exit 0") && outcome.stdout.contains("[chief-0] Epoch 3/3"), "\(outcome.stdout)")
        }

        /// A CA, a certificate it signed for localhost (every task of the test job uses it) and the parameter-server
        /// config with `tls` naming them; plus a second CA's certificate for a task that must be turned away.
        private func writeTLSConfigs(in folder: String) throws -> (trusted: String, stranger: String) {
            let script = """
                set -e; cd '\(folder)'
                printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\\nextendedKeyUsage=serverAuth,clientAuth\\n' > extensions
                for who in job stranger; do
                    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout $who-ca.key -out $who-ca.pem -days 1 -subj "/CN=$who CA"
                    openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout $who.key -out $who.csr -subj /CN=localhost
                    openssl x509 -req -in $who.csr -CA $who-ca.pem -CAkey $who-ca.key -CAcreateserial -out $who.pem -days 1 -extfile extensions
                done
                """
            let made = try TandemProcess.command(["/bin/sh", "-c", script], timeoutSeconds: 60)
            try #require(made.status == 0, "openssl: \(made.stderr)")
            var paths: [String] = []
            for who in ["job", "stranger"] {
                let data = try Data(contentsOf: TandemProcess.packageRoot.appendingPathComponent("configs/cluster-ps.json"))
                var config = try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
                config["tls"] = ["certificate": "\(who).pem", "key": "\(who).key", "ca": "\(who)-ca.pem"]  // relative to the config
                let path = "\(folder)/\(who).json"
                try JSONSerialization.data(withJSONObject: config).write(to: URL(fileURLWithPath: path))
                paths.append(path)
            }
            return (paths[0], paths[1])
        }

        @Test func mutualTLSTrainsAndTurnsAwayACertificateFromAnotherCA() throws {
            let folder = try TandemProcess.temporaryDirectory().path
            let configs = try writeTLSConfigs(in: folder)
            let outcome = try runTasks("""
                task ps 0 --epochs 1; task worker 0 --epochs 1; task worker 1 --epochs 1
                task chief 0 --epochs 1; chief=$!
                tries=0
                until grep -qs serving "$LOGS/ps-0.log" || [ $((tries += 1)) -gt 600 ]; do sleep 0.1; done
                TF_CONFIG="{\\"cluster\\":$CLUSTER,\\"task\\":{\\"type\\":\\"worker\\",\\"index\\":1}}" \\
                    "$B" train \(configs.stranger) --epochs 1 > "$LOGS/stranger.log" 2>&1
                echo "stranger: exit $?"
                wait $chief; echo "chief: exit $?"
                wait; show
                """, config: configs.trusted)
            #expect(outcome.stdout.contains("chief: exit 0") && outcome.stdout.contains("[chief-0] Epoch 1/1"), "\(outcome.stdout)")
            #expect(outcome.stdout.contains("stranger: exit 1"), "\(outcome.stdout)")
            #expect(outcome.stdout.contains("[stranger] tandem: error: ps at localhost:2333: Exchange failed: unavailable")
                    && outcome.stdout.contains("agree on tls"), "\(outcome.stdout)")
        }

        @Test func checkpointsCarryTheOptimizerStateOfThePs() throws {
            // Momentum lives on the ps; the chief's checkpoint must hold it, as a one-process checkpoint does.
            let folder = try TandemProcess.temporaryDirectory().path
            let data = try Data(contentsOf: TandemProcess.packageRoot.appendingPathComponent("configs/cluster-ps.json"))
            var config = try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
            config["optimizer"] = ["name": "sgd", "learning_rate": 0.02, "momentum": 0.5]
            try JSONSerialization.data(withJSONObject: config).write(to: URL(fileURLWithPath: "\(folder)/momentum.json"))
            let outcome = try runTasks("""
                task ps 0 --epochs 1; task worker 0 --epochs 1; task worker 1 --epochs 1
                task chief 0 --epochs 1 --checkpoint-dir \(folder)/checkpoints; chief=$!
                wait $chief; echo "chief: exit $?"
                wait; show
                "$B" inspect \(folder)/checkpoints/epoch-0001.safetensors
                """, config: "\(folder)/momentum.json")
            #expect(outcome.stdout.contains("chief: exit 0"), "\(outcome.stdout)")
            let momentum = outcome.stdout.split(separator: "\n").first { $0.contains("optimizer/momentum/dense_0/kernel") } ?? ""
            let std = Double(momentum.components(separatedBy: "std ").dropFirst().first?.prefix { $0 != " " } ?? "") ?? 0
            #expect(std > 0, "the momentum of a trained epoch is not all zeros: \(momentum)")
            #expect(outcome.stdout.contains("step: 9"), "the push count is the optimizer's step count: \(outcome.stdout)")
        }
    }
}
