import Foundation
import TandemCore
import TandemData
import TandemTestSupport
import Testing


extension EndToEnd {
    /// The `tandem` binary driven the way users drive it. Serialized: each run uses both cores.
    @Suite
    struct CommandLineTests {
        let fashionDirectory = "/usr/share/datasets/fashion-mnist"

        @Test func trainEvaluatePredictInspectOnFashionMNIST() throws {
            let work = try TandemProcess.temporaryDirectory()
            let metrics = work.appendingPathComponent("metrics.jsonl")
            let checkpoints = work.appendingPathComponent("checkpoints").path
            let train = try TandemProcess.run(["train", "configs/fashion-mnist-mlp.json", "--epochs", "1", "--progress", "lines",
                                               "--metrics", metrics.path, "--checkpoint-dir", checkpoints])
            #expect(train.status == 0, "\(train.stderr)")
            #expect(train.stdout.contains("Epoch 1/1  937/937  loss"))
            #expect(train.stdout.contains("Test: loss"))

            let records = try metricsRecords(metrics)
            try #require(records.count == 2)
            #expect(records[0]["event"] as? String == "epoch")
            for key in ["epoch", "loss", "accuracy", "seconds", "samples_per_sec"] { #expect(records[0][key] != nil, "epoch record lacks \(key)") }
            #expect(records[1]["event"] as? String == "summary")
            for key in ["test_loss", "test_accuracy", "epoch_seconds", "samples_per_sec", "startup_seconds", "peak_rss_bytes", "wall_seconds"] {
                #expect(records[1][key] != nil, "summary lacks \(key)")
            }
            let accuracy = try #require(records[1]["test_accuracy"] as? Double)
            #expect(accuracy > 0.78, "one epoch of the TensorFlow tutorial model reaches ~0.82")

            let checkpoint = checkpoints + "/epoch-0001.safetensors"
            let evaluate = try TandemProcess.run(["evaluate", "configs/fashion-mnist-mlp.json", "--checkpoint", checkpoint])
            #expect(evaluate.status == 0, "\(evaluate.stderr)")
            #expect(evaluate.stdout.contains(String(format: "accuracy %.4f", accuracy)), "evaluate must reproduce the training run's test accuracy: \(evaluate.stdout)")

            // Test image 0 is an ankle boot; fed as a 56×56 colour PNG it must be resized and turned gray.
            let test = try IDXReader.read(path: fashionDirectory + "/t10k-images-idx3-ubyte.gz")
            let image = work.appendingPathComponent("boot.png")
            var pixels: [UInt8] = []
            for y in 0..<56 {
                for x in 0..<56 {
                    let value: UInt8 = test.bytes[(y / 2) * 28 + x / 2]
                    pixels += [value, value, value]
                }
            }
            try Data(pngBytes(width: 56, height: 56, channels: 3, samples: pixels)).write(to: image)
            let predict = try TandemProcess.run(["predict", "--checkpoint", checkpoint, image.path, "--top", "2"])
            #expect(predict.status == 0, "\(predict.stderr)")
            #expect(predict.stdout.hasPrefix("\(image.path): Ankle boot ("), "\(predict.stdout)")

            let inspect = try TandemProcess.run(["inspect", checkpoint])
            #expect(inspect.status == 0)
            #expect(inspect.stdout.contains("dense_0/kernel"))
            #expect(inspect.stdout.contains("F32 [784, 20]"))
            #expect(inspect.stdout.contains("epoch: 1"))
        }

        @Test func resumedRunEqualsUninterruptedRun() throws {
            let work = try TandemProcess.temporaryDirectory()
            let straight = work.appendingPathComponent("straight").path, resumed = work.appendingPathComponent("resumed").path
            let common = ["train", "configs/fashion-mnist-mlp.json", "--progress", "silent"]
            #expect(try TandemProcess.run(common + ["--epochs", "2", "--checkpoint-dir", straight]).status == 0)
            #expect(try TandemProcess.run(common + ["--epochs", "1", "--checkpoint-dir", resumed]).status == 0)
            let second = try TandemProcess.run(common + ["--epochs", "2", "--checkpoint-dir", resumed, "--resume", "latest"])
            #expect(second.status == 0, "\(second.stderr)")
            let a = try Data(contentsOf: URL(fileURLWithPath: straight + "/epoch-0002.safetensors"))
            let b = try Data(contentsOf: URL(fileURLWithPath: resumed + "/epoch-0002.safetensors"))
            #expect(a == b, "epoch 2 after a resume must be bit-identical to epoch 2 of an uninterrupted run")
        }

        @Test func linearRegressionReachesTheLeastSquaresLine() throws {
            let work = try TandemProcess.temporaryDirectory()
            let train = try TandemProcess.run(["train", "configs/linear-regression.json", "--progress", "silent",
                                               "--checkpoint-dir", work.path, "--keep", "1"])
            #expect(train.status == 0, "\(train.stderr)")
            let predict = try TandemProcess.run(["predict", "--checkpoint", work.path + "/epoch-2000.safetensors", "configs/linear-regression.csv"])
            #expect(predict.status == 0, "\(predict.stderr)")
            let lines = predict.stdout.split(separator: "\n")
            // z(0) = b ≈ 0.7291 and z(1) = w + b ≈ 1.6715 on the least-squares line.
            #expect(lines.first?.contains(": 0.7291  (target 1.0)") == true, "\(predict.stdout)")
            #expect(lines.dropFirst().first?.contains(": 1.6715  (target 1.3)") == true, "\(predict.stdout)")
        }

        /// OpenBLAS's fallback for a CPU it does not know is replaced by the best kernels the CPU has (the binary re-runs
        /// itself once, under mpirun too); a choice made with OPENBLAS_CORETYPE is kept.
        @Test func runsTheBestOpenBLASKernelsTheCPUHasUnlessTheUserChose() throws {
            let expected = BLASKernelChoice.replacement(current: "Prescott", cpuFlags: BLASKernelChoice.cpuFlags(), userChoice: nil)
            let arguments = ["train", "configs/fashion-mnist-mlp.json", "--epochs", "1", "--progress", "silent", "-v"]
            let chosen = try TandemProcess.command(["env", "-u", "OPENBLAS_CORETYPE", TandemProcess.binary] + arguments)
            #expect(chosen.status == 0, "\(chosen.stderr)")
            #expect(!chosen.stderr.contains("OpenBLAS kernels Prescott") || expected == nil, "\(chosen.stderr)")

            let ranks = try TandemProcess.mpirunShell(ranks: 2, "env -u OPENBLAS_CORETYPE $TANDEM " + arguments.joined(separator: " ") + " --batch-size 128")
            #expect(ranks.status == 0, "\(ranks.stderr)")
            #expect(ranks.stderr.components(separatedBy: "OpenBLAS kernels").count == 3, "one line per rank: \(ranks.stderr)")
            #expect(!ranks.stderr.contains("OpenBLAS kernels Prescott") || expected == nil, "\(ranks.stderr)")

            let kept = try TandemProcess.command(["env", "OPENBLAS_CORETYPE=Prescott", TandemProcess.binary] + arguments)
            #expect(kept.status == 0, "\(kept.stderr)")
            #expect(kept.stderr.contains("OpenBLAS kernels Prescott"), "\(kept.stderr)")
        }

        @Test func helpOnEveryCommand() throws {
            for command in [[], ["train"], ["evaluate"], ["predict"], ["inspect"], ["cluster"], ["cluster", "check"]] {
                let help = try TandemProcess.run(command + ["--help"])
                #expect(help.status == 0)
                #expect(help.stdout.contains("USAGE:"), "no usage for \(command)")
            }
        }
    }
}
