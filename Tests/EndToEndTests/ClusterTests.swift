import Foundation
import Testing

extension EndToEnd {
    /// Cluster jobs from a TF_CONFIG-style spec: `tandem cluster check` and `./launch.sh CLUSTER.json`.
    @Suite struct ClusterTests {
        @Test func checkPrintsRolesAddressesAndRanks() throws {
            let check = try TandemProcess.run(["cluster", "check", "configs/cluster-mirrored.json"])
            #expect(check.status == 0, "\(check.stderr)")
            #expect(check.stdout.contains("strategy mirrored, 3 tasks"))
            #expect(check.stdout.contains("chief      0      localhost:2222          yes    0"), "\(check.stdout)")
            #expect(check.stdout.contains("worker     0      localhost:2223          yes    1"), "\(check.stdout)")
            #expect(check.stdout.contains("evaluator  0      localhost:2224          yes    -"), "\(check.stdout)")
        }

        @Test func reachListsTheAddressesNobodyAnswersAt() throws {
            let outcome = try TandemProcess.command(["/usr/bin/env", #"TF_CONFIG={"cluster":{"worker":["localhost:2222","nohost.invalid:2223"]}}"#,
                                                     TandemProcess.binary, "cluster", "check", "configs/cluster-mirrored.json", "--reach"])
            #expect(outcome.status == 1)
            #expect(outcome.stdout.contains("worker 0     localhost:2222          reachable"), "\(outcome.stdout)")
            #expect(outcome.stdout.contains("UNREACHABLE (cannot resolve nohost.invalid)"), "\(outcome.stdout)")
            #expect(outcome.stderr == "tandem: error: TF_CONFIG: unreachable: worker 1 at nohost.invalid:2223\n")
        }

        @Test func tfConfigInTheEnvironmentWins() throws {
            let outcome = try TandemProcess.launch(["configs/cluster-mirrored.json", "--dry-run"], environment: [
                "TF_CONFIG": #"{"cluster":{"worker":["localhost:3001","localhost:3002","localhost:3003"]}}"#,
            ])
            #expect(outcome.status == 0, "\(outcome.stderr)")
            #expect(outcome.stdout.contains("[worker 2] rank 2 on localhost"), "\(outcome.stdout)")
            #expect(outcome.stdout.contains("mpirun --host localhost:3"), "\(outcome.stdout)")
        }

        @Test func aMalformedSpecStopsBeforeAnythingStarts() throws {
            let outcome = try TandemProcess.launch(["configs/cluster-mirrored.json"], environment: [
                "TF_CONFIG": #"{"cluster":{"worker":["localhost:99999"]}}"#,
            ])
            #expect(outcome.status != 0)
            #expect(outcome.stderr.contains(#"tandem: error: TF_CONFIG: cluster.worker[0]: port 99999 in "localhost:99999" is out of range 1-65535"#), "\(outcome.stderr)")
        }

        @Test func launchTrainsEveryTaskWithRolePrefixesAndLogs() throws {
            let before = try runDirectories()
            let outcome = try TandemProcess.launch(["configs/cluster-mirrored.json", "--epochs", "1"])
            #expect(outcome.status == 0, "\(outcome.stderr)")
            #expect(outcome.stdout.contains("[chief 0] Epoch 1/1  468/468"), "\(outcome.stdout)")
            #expect(outcome.stdout.contains("[chief 0] Test: loss"))
            // The evaluator task evaluates the checkpoint training wrote, with the same result as the chief's test.
            let chiefTest = outcome.stdout.split(separator: "\n").first { $0.hasPrefix("[chief 0] Test: loss") }
            let evaluation = outcome.stdout.split(separator: "\n").first { $0.hasPrefix("[evaluator 0] test: loss") }
            #expect(evaluation != nil, "\(outcome.stdout)")
            if let chiefTest, let evaluation {
                #expect(evaluation.dropFirst("[evaluator 0] test: ".count).prefix(30) == chiefTest.dropFirst("[chief 0] Test: ".count).prefix(30))
            }
            let created = try #require(try runDirectories().subtracting(before).first)
            let logs = try FileManager.default.contentsOfDirectory(atPath: created).sorted()
            #expect(logs == ["checkpoints", "chief-0.log", "evaluator-0.log", "worker-0.log"])
            #expect(try String(contentsOfFile: created + "/chief-0.log", encoding: .utf8).contains("Epoch 1/1"))
            #expect(try String(contentsOfFile: created + "/evaluator-0.log", encoding: .utf8).contains("after epoch 1"))
            try? FileManager.default.removeItem(atPath: created)
            #expect(try tandemProcesses() == 0, "launch.sh left processes behind")
        }

        @Test func aFailingJobExitsNonZeroWithTheTaskNamed() throws {
            let outcome = try TandemProcess.launch(["configs/cluster-mirrored.json", "--data-dir", "/nonexistent/data"])
            #expect(outcome.status != 0)
            #expect(outcome.stdout.contains("[chief 0] tandem: error: /nonexistent/data/train-images-idx3-ubyte.gz"), "\(outcome.stdout)")
            #expect(try tandemProcesses() == 0)
        }

        @Test func terminatingLaunchStopsEveryTask() throws {
            // The test runner's threads block SIGTERM and children inherit that mask, which no shell can undo; perl
            // (Debian's perl-base is always there) clears it, so launch.sh sees signals as it would from a terminal.
            let process = Process()
            process.executableURL = URL(fileURLWithPath: "/usr/bin/perl")
            process.arguments = ["-MPOSIX", "-e", "sigprocmask(SIG_SETMASK, POSIX::SigSet->new); exec @ARGV or die",
                                 "/usr/bin/env", "TANDEM_PREBUILT=\(TandemProcess.binary)", "TANDEM_RUNS=\(TandemProcess.runsDirectory)",
                                 TandemProcess.packageRoot.path + "/launch.sh",
                                 "configs/cluster-mirrored.json", "--epochs", "500"]
            process.currentDirectoryURL = TandemProcess.packageRoot
            process.standardOutput = FileHandle.nullDevice
            process.standardError = FileHandle.nullDevice
            try process.run()
            var running = 0
            for _ in 0..<100 where running < 3 {
                Thread.sleep(forTimeInterval: 0.1)
                running = try tandemProcesses()
            }
            #expect(running == 3, "chief, worker and evaluator should be running")
            process.terminate()
            process.waitUntilExit()
            #expect(process.terminationStatus != 0)
            var left = try tandemProcesses()
            for _ in 0..<50 where left > 0 {
                Thread.sleep(forTimeInterval: 0.1)
                left = try tandemProcesses()
            }
            #expect(left == 0, "SIGTERM to launch.sh must stop every task")
        }

        private func runDirectories() throws -> Set<String> {
            let runs = TandemProcess.runsDirectory
            let names = (try? FileManager.default.contentsOfDirectory(atPath: runs)) ?? []
            return Set(names.filter { $0.hasPrefix("cluster-mirrored-") }.map { runs + "/" + $0 })
        }

        /// Processes running `tandem train configs/cluster-mirrored.json` or its evaluator.
        private func tandemProcesses() throws -> Int {
            let entries = try FileManager.default.contentsOfDirectory(atPath: "/proc").filter { Int($0) != nil }
            return entries.filter { pid in
                guard let data = FileManager.default.contents(atPath: "/proc/\(pid)/cmdline") else { return false }
                let arguments = data.split(separator: 0).map { String(decoding: $0, as: UTF8.self) }
                return arguments.first?.hasSuffix("/tandem") == true && arguments.contains("configs/cluster-mirrored.json")
            }.count
        }
    }
}
