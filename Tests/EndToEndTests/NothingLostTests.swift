import Foundation
import TandemTestSupport
import TandemTrain
import Testing

extension EndToEnd {
    /// The cases of the bad-input corpus that lost data or trapped, each run through the binary as a user would.
    @Suite struct NothingLostTests {
        /// One line on stderr, exit status 1, every fragment present, and no control character in the line.
        private func expectCleanFailure(_ arguments: [String], mentions expected: [String], sourceLocation: SourceLocation = #_sourceLocation) throws {
            let outcome = try TandemProcess.run(arguments, timeoutSeconds: 120)
            #expect(outcome.status == 1, "exit status \(outcome.status) for \(arguments.prefix(4)): \(outcome.stderr.prefix(2000))", sourceLocation: sourceLocation)
            #expect(outcome.stderr.hasPrefix("tandem: error: ") && outcome.stderr.split(separator: "\n").count == 1,
                    "expected one error line: \(outcome.stderr.prefix(2000))", sourceLocation: sourceLocation)
            #expect(!outcome.stderr.dropLast().unicodeScalars.contains { $0.value < 0x20 || (0x7F...0x9F).contains($0.value) },
                    "control characters in \(outcome.stderr.debugDescription.prefix(300))", sourceLocation: sourceLocation)
            for text in expected {
                #expect(outcome.stderr.contains(text), "stderr lacks \"\(text)\": \(outcome.stderr.prefix(2000))", sourceLocation: sourceLocation)
            }
        }

        private func config(_ name: String, from source: String = "configs/fashion-mnist-mlp.json", in directory: TemporaryDirectory,
                            _ edit: (inout [String: Any]) -> Void) throws -> String {
            let data = try Data(contentsOf: TandemProcess.packageRoot.appendingPathComponent(source))
            var object = try JSONSerialization.jsonObject(with: data) as! [String: Any]
            edit(&object)
            return try directory.write(name, [UInt8](try JSONSerialization.data(withJSONObject: object)))
        }

        /// The linear-regression job trained for one epoch, its checkpoint re-recorded as epoch `epoch` (training it
        /// 10,000 epochs takes minutes of fsyncs; the checkpoint is otherwise what the binary wrote).
        private func checkpoint(recordingEpoch epoch: String, in folder: String) throws -> String {
            let scratch = folder + "/scratch"
            let trained = try TandemProcess.run(["train", "configs/linear-regression.json", "--epochs", "1", "--progress", "silent",
                                                 "--checkpoint-dir", scratch])
            try #require(trained.status == 0, "\(trained.stderr)")
            var checkpoint = try Checkpoint.read(path: scratch + "/epoch-0001.safetensors")
            try FileManager.default.removeItem(atPath: scratch)
            checkpoint.metadata["epoch"] = epoch
            let path = folder + "/" + (Int(epoch).map { String(format: "epoch-%04d.safetensors", $0) } ?? "epoch-0001.safetensors")
            try checkpoint.write(to: path)
            return path
        }

        @Test func aRunPastEpoch10000KeepsTheThreeNewestAndResumesFromTheNewest() throws {
            let directory = try TemporaryDirectory()
            defer { directory.remove() }
            _ = try checkpoint(recordingEpoch: "9998", in: directory.path)
            let common = ["train", "configs/linear-regression.json", "--keep", "3", "--checkpoint-dir", directory.path, "--resume", "latest", "--progress", "lines"]
            let past = try TandemProcess.run(common + ["--epochs", "10003"])
            #expect(past.status == 0, "\(past.stderr)")
            #expect(past.stdout.contains("after epoch 9998") && past.stdout.contains("Epoch 10003/10003"), "\(past.stdout)")
            #expect(directory.contents() == ["epoch-10001.safetensors", "epoch-10002.safetensors", "epoch-10003.safetensors"])
            let resumed = try TandemProcess.run(common + ["--epochs", "10004"])
            #expect(resumed.status == 0, "\(resumed.stderr)")
            #expect(resumed.stdout.contains("Resuming from \(directory.path)/epoch-10003.safetensors after epoch 10003"), "\(resumed.stdout)")
            #expect(directory.contents() == ["epoch-10002.safetensors", "epoch-10003.safetensors", "epoch-10004.safetensors"])
        }

        @Test func aCheckpointWithABadEpochIsRefusedNotTrappedOnOrRestarted() throws {
            let directory = try TemporaryDirectory()
            defer { directory.remove() }
            for bad in ["-7", "abc"] {
                let path = try checkpoint(recordingEpoch: bad, in: directory.path)
                try expectCleanFailure(["train", "configs/linear-regression.json", "--resume", path, "--epochs", "5"],
                                       mentions: [path, "__metadata__.epoch", bad])
            }
        }

        @Test func aConfigWhoseCheckpointsCouldNotBeReadBackIsRefusedBeforeTraining() throws {
            let directory = try TemporaryDirectory()
            defer { directory.remove() }
            let path = try config("long-name.json", from: "configs/linear-regression.json", in: directory) {
                $0["name"] = String(repeating: "n", count: 50_000_000)
            }
            try expectCleanFailure(["train", path, "--checkpoint-dir", directory.file("runs")], mentions: [path, "field name", "header"])
            #expect(!FileManager.default.fileExists(atPath: directory.file("runs")), "refused before the checkpoint folder was made")
        }

        @Test func aModelBeyondMemoryIsAnErrorInTrainAndInspect() throws {
            let directory = try TemporaryDirectory()
            defer { directory.remove() }
            let path = try config("huge.json", in: directory) { object in
                var model = object["model"] as! [String: Any]
                model["layers"] = Array(repeating: ["units": 1_048_576, "activation": "relu"], count: 3) + [["units": 10, "activation": "softmax"]]
                object["model"] = model
            }
            for command in ["train", "inspect"] {
                try expectCleanFailure([command, path], mentions: [path, "model.layers", "memory"])
            }
        }

        @Test func numbersThatDoNotFitTheirFieldAreNamed() throws {
            let directory = try TemporaryDirectory()
            defer { directory.remove() }
            let units = try config("units.json", in: directory) { object in
                var model = object["model"] as! [String: Any]
                model["layers"] = [["units": 20.5, "activation": "relu"], ["units": 10, "activation": "softmax"]]
                object["model"] = model
            }
            try expectCleanFailure(["train", units], mentions: [units, "model.layers[0].units", "integer", "20.5"])
            let rate = try config("rate.json", in: directory) { object in
                var optimizer = object["optimizer"] as! [String: Any]
                optimizer["learning_rate"] = 1e39
                object["optimizer"] = optimizer
            }
            try expectCleanFailure(["train", rate], mentions: [rate, "optimizer.learning_rate"])
        }

        @Test func aBinaryFileGivenAsCSVIsQuotedNotEchoed() throws {
            let directory = try TemporaryDirectory()
            defer { directory.remove() }
            var generator = SystemRandomNumberGenerator()
            let bytes = (0..<4096).map { _ in UInt8.random(in: 0...255, using: &generator) } + Array("\u{1B}[2J,\r\u{7}x\n1,2\n".utf8)
            let csv = try directory.write("binary.csv", bytes)
            let path = try config("binary.json", from: "configs/linear-regression.json", in: directory) { object in
                var data = object["data"] as! [String: Any]
                data["train"] = csv
                object["data"] = data
            }
            try expectCleanFailure(["train", path], mentions: [csv])
        }

        @Test func ranksGivenDifferentClustersOrBucketsStopBeforeStepOne() throws {
            let chief = #"{"cluster":{"chief":["localhost:2222"],"worker":["localhost:2223"]},"task":{"type":"chief","index":0}}"#
            let worker = #"{"cluster":{"chief":["localhost:2222"],"worker":["otherhost:2223"]},"task":{"type":"worker","index":0}}"#
            let job = ["train", "configs/fashion-mnist-mlp-mirrored.json", "--epochs", "1", "--progress", "silent"]
            let clusters = try TandemProcess.mpirunShell(ranks: 2, """
                if [ "$OMPI_COMM_WORLD_RANK" = 0 ]; then export TF_CONFIG='\(chief)'; else export TF_CONFIG='\(worker)'; fi
                exec "$TANDEM" \(job.joined(separator: " "))
                """, timeoutSeconds: 120)
            #expect(clusters.status != 0)
            #expect(clusters.stderr.contains("rank 1 disagrees with rank 0 on cluster:") && clusters.stderr.contains("otherhost:2223"), "\(clusters.stderr)")
            let buckets = try TandemProcess.mpirun(contexts: [job + ["--bucket-size", "1000"], job], timeoutSeconds: 120)
            #expect(buckets.status != 0)
            #expect(buckets.stderr.contains("rank 1 disagrees with rank 0 on gradient_buckets: fused vs 1000 floats"), "\(buckets.stderr)")
        }

        @Test func replicaCountsFarBeyondTheCoresAreRefusedAtOnce() throws {
            let started = Date()
            let outcome = try TandemProcess.run(["train", "configs/fashion-mnist-mlp.json", "--replicas", "1000"], timeoutSeconds: 60)
            #expect(outcome.status != 0)
            #expect(outcome.stderr.contains("--replicas 1000 is far beyond this machine's"), "\(outcome.stderr)")
            #expect(Date().timeIntervalSince(started) < 30)
        }

        @Test func trainingRemovesTheTemporaryFilesOfInterruptedWrites() throws {
            let directory = try TemporaryDirectory()
            defer { directory.remove() }
            let waited = Process()
            waited.executableURL = URL(fileURLWithPath: "/bin/true")
            try waited.run()
            waited.waitUntilExit()
            let leftover = try directory.write("epoch-0001.safetensors.tmp.\(waited.processIdentifier)", text: "torn")
            let outcome = try TandemProcess.run(["train", "configs/linear-regression.json", "--epochs", "2", "--progress", "silent",
                                                 "--checkpoint-dir", directory.path])
            #expect(outcome.status == 0, "\(outcome.stderr)")
            #expect(!FileManager.default.fileExists(atPath: leftover))
            #expect(directory.contents() == ["epoch-0001.safetensors", "epoch-0002.safetensors"])
        }
    }
}
