import Foundation
import TandemTrain
import Testing

extension EndToEnd {
    /// The mirrored strategies (MPI ranks, replica threads, both) against the single-process result, and how they fail.
    @Suite struct MirroredTests {
        let work: URL

        init() throws {
            work = try TandemProcess.temporaryDirectory()
        }

        /// (MPI ranks, replica threads per rank) against one replica at the same global batch of 128.
        @Test(arguments: [(2, 1), (1, 2), (2, 2)])
        func replicasMatchOneProcessAtTheSameGlobalBatch(ranks: Int, threads: Int) throws {
            let one = work.appendingPathComponent("one").path, many = work.appendingPathComponent("many").path
            let arguments = ["train", "configs/fashion-mnist-mlp.json", "--epochs", "1", "--batch-size", "128"]
            let single = try TandemProcess.run(arguments + ["--checkpoint-dir", one, "--progress", "silent"])
            #expect(single.status == 0, "\(single.stderr)")
            let replicated = arguments + ["--checkpoint-dir", many, "--replicas", String(threads), "--progress", "lines"]
            let run = ranks > 1 ? try TandemProcess.mpirun(ranks: ranks, replicated) : try TandemProcess.run(replicated)
            #expect(run.status == 0, "\(run.stderr)")
            let replicas = ranks * threads
            #expect(run.stdout.contains("\(replicas) replicas, \(128 / replicas) rows each of every global batch of 128"))
            #expect(run.stdout.components(separatedBy: "Epoch 1/1").count == 2, "only rank 0 reports: \(run.stdout)")
            let difference = try EndToEnd.maxDifference(one + "/epoch-0001.safetensors", many + "/epoch-0001.safetensors")
            #expect(difference < 1e-5, "\(ranks) ranks × \(threads) threads drifted \(difference) from one process after an epoch")
        }

        /// Each variant against the fused float32 all-reduce at 2 ranks; the hybrid (2 ranks × 2 threads) sends bf16
        /// between its ranks too.
        @Test(arguments: [["--bucket-size", "200"], ["--allreduce-dtype", "bf16"], ["--allreduce-dtype", "bf16", "--replicas", "2"]])
        func gradientTransportVariantsTrainTheSameModel(variant: [String]) throws {
            let fused = work.appendingPathComponent("fused").path, other = work.appendingPathComponent("variant").path
            let threads = variant.contains("--replicas") ? ["--replicas", "2"] : []
            let arguments = ["train", "configs/fashion-mnist-mlp.json", "--epochs", "1", "--batch-size", "128"] + threads
            #expect(try TandemProcess.mpirun(ranks: 2, arguments + ["--checkpoint-dir", fused]).status == 0)
            let run = try TandemProcess.mpirun(ranks: 2, arguments + ["--checkpoint-dir", other] + variant.filter { !threads.contains($0) })
            #expect(run.status == 0, "\(run.stderr)")
            let difference = try EndToEnd.maxDifference(fused + "/epoch-0001.safetensors", other + "/epoch-0001.safetensors")
            // Buckets only change how the sum is cut up; bf16 rounds every gradient to 8 significant bits.
            let tolerance: Float = variant.contains("bf16") ? 5e-2 : 1e-5
            #expect(difference < tolerance, "\(variant) drifted \(difference) from the fused float32 all-reduce")
            #expect(difference > 0 || !variant.contains("bf16"), "bf16 cannot be bit-identical to float32")
        }

        @Test func sameSeedSameRanksIsBitIdentical() throws {
            let a = work.appendingPathComponent("a").path, b = work.appendingPathComponent("b").path
            for folder in [a, b] {
                let run = try TandemProcess.mpirun(ranks: 2, ["train", "configs/fashion-mnist-mlp.json", "--epochs", "1",
                                                              "--batch-size", "128", "--checkpoint-dir", folder])
                #expect(run.status == 0, "\(run.stderr)")
            }
            let first = try Data(contentsOf: URL(fileURLWithPath: a + "/epoch-0001.safetensors"))
            let second = try Data(contentsOf: URL(fileURLWithPath: b + "/epoch-0001.safetensors"))
            #expect(first == second)
        }

        @Test func checkpointOfTwoRanksResumesInOneProcess() throws {
            let straight = work.appendingPathComponent("straight").path, resumed = work.appendingPathComponent("resumed").path
            let arguments = ["train", "configs/fashion-mnist-mlp.json", "--batch-size", "128"]
            #expect(try TandemProcess.mpirun(ranks: 2, arguments + ["--epochs", "2", "--checkpoint-dir", straight]).status == 0)
            #expect(try TandemProcess.mpirun(ranks: 2, arguments + ["--epochs", "1", "--checkpoint-dir", resumed]).status == 0)
            let single = try TandemProcess.run(arguments + ["--epochs", "2", "--checkpoint-dir", resumed, "--resume", "latest", "--progress", "lines"])
            #expect(single.status == 0, "\(single.stderr)")
            #expect(single.stdout.contains("after epoch 1"))
            let difference = try EndToEnd.maxDifference(straight + "/epoch-0002.safetensors", resumed + "/epoch-0002.safetensors")
            #expect(difference < 1e-4, "resumed in one process drifted \(difference) from the 2-rank run")
        }

        @Test func ranksWithDifferentConfigsStopBeforeStepOneNamingTheField() throws {
            let text = try String(contentsOf: TandemProcess.packageRoot.appendingPathComponent("configs/fashion-mnist-mlp.json"), encoding: .utf8)
            let other = work.appendingPathComponent("other.json")
            try text.replacingOccurrences(of: "\"learning_rate\": 0.1", with: "\"learning_rate\": 0.2").write(to: other, atomically: true, encoding: .utf8)
            let start = Date()
            let run = try TandemProcess.mpirun(contexts: [["train", "configs/fashion-mnist-mlp.json"], ["train", other.path]], timeoutSeconds: 60)
            #expect(run.status == 1)
            #expect(run.stderr.contains("tandem: error: rank 1 disagrees with rank 0 on optimizer.learning_rate: 0.2 vs 0.1"), "\(run.stderr)")
            #expect(run.stderr.components(separatedBy: "tandem: error:").count == 2, "reported once: \(run.stderr)")
            #expect(Date().timeIntervalSince(start) < 5)
        }

        @Test func aFailingRankStopsTheJobWithItsMessage() throws {
            let script = """
                if [ "$OMPI_COMM_WORLD_RANK" = 1 ]; then data=/nonexistent/fashion; else data=/usr/share/datasets/fashion-mnist; fi
                exec "$TANDEM" train configs/fashion-mnist-mlp.json --data-dir "$data"
                """
            let run = try TandemProcess.mpirunShell(ranks: 2, script, timeoutSeconds: 60)
            #expect(run.status == 1, "\(run.stderr)")
            #expect(run.stderr.contains("tandem: error: rank 1: /nonexistent/fashion/train-images-idx3-ubyte.gz"), "\(run.stderr)")
        }

        @Test func aDivergingLossStopsReplicaThreadsWithOneMessage() throws {
            let run = try TandemProcess.run(["train", "configs/linear-regression.json", "--batch-size", "10", "--replicas", "2",
                                             "--learning-rate", "1e10"], timeoutSeconds: 60)
            #expect(run.status == 1)
            #expect(run.stderr.components(separatedBy: "tandem: error:").count == 2, "one report: \(run.stderr)")
            #expect(run.stderr.contains("step 1"), "\(run.stderr)")
        }

        @Test func aDivergingLossStopsEveryRankWithOneMessage() throws {
            let run = try TandemProcess.mpirun(ranks: 2, ["train", "configs/linear-regression.json", "--batch-size", "10",
                                                          "--learning-rate", "1e10"], timeoutSeconds: 60)
            #expect(run.status == 1)
            #expect(run.stderr.components(separatedBy: "tandem: error:").count == 2, "one report: \(run.stderr)")
            #expect(run.stderr.contains("step 1"), "\(run.stderr)")
        }

        @Test func aKilledRankEndsTheJobInSeconds() throws {
            let script = """
                if [ "$OMPI_COMM_WORLD_RANK" = 1 ]; then
                    "$TANDEM" train configs/fashion-mnist-mlp.json --epochs 200 & sleep 2; kill -9 $!; wait $!; exit $?
                fi
                exec "$TANDEM" train configs/fashion-mnist-mlp.json --epochs 200
                """
            let start = Date()
            let run = try TandemProcess.mpirunShell(ranks: 2, script, timeoutSeconds: 60)
            #expect(run.status != 0 && run.status != 124, "exit \(run.status): the job must stop, not time out")
            #expect(Date().timeIntervalSince(start) < 20)
        }

        @Test func aStoppedRankIsNamedByTheStallInspector() throws {
            let metrics = work.appendingPathComponent("stall.jsonl").path
            let script = """
                if [ "$OMPI_COMM_WORLD_RANK" = 1 ]; then
                    "$TANDEM" train configs/fashion-mnist-mlp.json --epochs 200 --stall-timeout 3 & sleep 4; kill -STOP $!; wait $!; exit $?
                fi
                exec "$TANDEM" train configs/fashion-mnist-mlp.json --epochs 200 --stall-timeout 3 --metrics \(metrics)
                """
            let start = Date()
            let run = try TandemProcess.mpirunShell(ranks: 2, script, timeoutSeconds: 60)
            #expect(run.status != 0 && run.status != 124, "exit \(run.status): the stall inspector must end the job")
            // Stopped after 4 s (training is under way by then), reported after 3 s of stall: well within 10 s of the stop.
            #expect(Date().timeIntervalSince(start) < 4 + 10)
            let line = run.stderr.split(separator: "\n").first { $0.contains("tandem: error: stall:") }.map(String.init) ?? ""
            #expect(line.contains("of step ") && line.contains("for rank 1 (") && line.contains("in step "), "\(run.stderr)")
            let stall = try #require(try metricsRecords(URL(fileURLWithPath: metrics)).last)
            #expect(stall["event"] as? String == "stall")
            let missing = try #require(stall["missing"] as? [[String: Any]])
            #expect(missing.first?["rank"] as? Int == 1)
            #expect((missing.first?["step"] as? Int ?? 0) > 0)
        }
    }
}
