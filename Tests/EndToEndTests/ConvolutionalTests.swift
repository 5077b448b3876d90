import Foundation
import TandemTestSupport
import TandemTrain
import Testing

extension EndToEnd {
    /// The convolutional configs through `tandem` and `launch.sh`: every strategy, dropout with reduction groups, batch
    /// normalization synchronized across replicas, accuracy, inspect and predict.
    @Suite(.serialized) struct ConvolutionalTests {
        let work: URL
        static let cnn = "configs/fashion-mnist-cnn.json", cnnBatchNorm = "configs/fashion-mnist-cnn-bn.json"

        init() throws {
            work = try TandemProcess.temporaryDirectory()
        }

        private func folder(_ name: String) -> String { work.appendingPathComponent(name).path }

        /// Runs `arguments` on `ranks` MPI ranks (1: no mpirun) and expects success.
        private func train(_ arguments: [String], ranks: Int = 1) throws -> TandemProcess.Outcome {
            let outcome = ranks > 1 ? try TandemProcess.mpirun(ranks: ranks, arguments, timeoutSeconds: 600)
                                    : try TandemProcess.run(arguments, timeoutSeconds: 600)
            #expect(outcome.status == 0, "\(arguments): \(outcome.stderr.suffix(2000))")
            return outcome
        }

        /// With `--reduction-groups 4`, one process, 2 ranks, 2 threads and 2 × 2 train the same bits: with dropout
        /// in the model (each example's mask depends on the example, not on where it is trained; 120 steps), and with
        /// synchronized batch normalization after each convolution (the groups run in lockstep and their statistics
        /// are added in group order; the whole epoch at the global batch of 128, the issue's bar).
        @Test(arguments: [(cnn, ["--steps-per-epoch", "120"]), (cnnBatchNorm, [])])
        func reductionGroupsTrainTheSameBitsOnEveryLayout(config: String, length: [String]) throws {
            let name = URL(fileURLWithPath: config).deletingPathExtension().lastPathComponent
            let arguments = ["train", config, "--epochs", "1", "--reduction-groups", "4", "--progress", "silent"] + length
            _ = try train(arguments + ["--checkpoint-dir", folder("\(name)-groups-one")])
            let reference = try Data(contentsOf: URL(fileURLWithPath: folder("\(name)-groups-one") + "/epoch-0001.safetensors"))
            for (layout, ranks, threads) in [("2-ranks", 2, 1), ("2-threads", 1, 2), ("2x2", 2, 2)] {
                let run = folder("\(name)-groups-\(layout)")
                _ = try train(arguments + ["--replicas", String(threads), "--checkpoint-dir", run], ranks: ranks)
                let checkpoint = try Data(contentsOf: URL(fileURLWithPath: run + "/epoch-0001.safetensors"))
                #expect(checkpoint == reference, "\(name): \(layout) differs from one process")
            }
        }

        /// Synchronized batch normalization (and the CNN without it) on 2 ranks, 2 threads and 2 × 2 at the global
        /// batch of 128 against one process at 128, after an epoch. The replicas add their sums in another order
        /// than one process adds its rows, and over 468 steps this network turns that float32 rounding into
        /// visible drift (one process against itself with `--reduction-groups 2`, which only reorders the sums,
        /// drifts as far), so the comparison is the result: the epoch's training accuracy within a point, and test
        /// accuracy within a point — three for batch normalization, whose evaluation uses moving averages that
        /// still lag the weights after one epoch (its test accuracy is ~77%, and swings by a point or more with
        /// the rounding of the sums; measured 76.1 against 77.5% at 2 × 2). The one-step agreement is checked to
        /// rounding in TandemCollectivesTests.SynchronizedBatchNormalizationTests; with `--reduction-groups 4` the
        /// layouts end bit-identical (`reductionGroupsTrainTheSameBitsOnEveryLayout`).
        @Test(arguments: [(2, 1), (1, 2), (2, 2)])
        func replicasTrainWhatOneProcessTrains(ranks: Int, threads: Int) throws {
            for config in [Self.cnnBatchNorm, Self.cnn] {
                let name = URL(fileURLWithPath: config).deletingPathExtension().lastPathComponent
                let arguments = ["train", config, "--epochs", "1", "--progress", "lines"]
                let oneFolder = folder("\(name)-one")
                // One process's accuracies (training, test), kept for the other layouts.
                if !FileManager.default.fileExists(atPath: oneFolder + "/accuracy") {
                    let one = try train(arguments + ["--checkpoint-dir", oneFolder])
                    try "\(testAccuracy(one.stdout, prefix: "Epoch 1/1")) \(testAccuracy(one.stdout, prefix: "Test: loss"))"
                        .write(toFile: oneFolder + "/accuracy", atomically: true, encoding: .utf8)
                }
                let single = try String(contentsOfFile: oneFolder + "/accuracy", encoding: .utf8).split(separator: " ").compactMap { Double($0) }
                try #require(single.count == 2)
                let many = folder("\(name)-\(ranks)x\(threads)")
                let replicated = try train(arguments + ["--replicas", String(threads), "--checkpoint-dir", many], ranks: ranks)
                #expect(replicated.stdout.contains("\(ranks * threads) replicas, \(128 / (ranks * threads)) rows each of every global batch of 128"))
                let training = testAccuracy(replicated.stdout, prefix: "Epoch 1/1"), test = testAccuracy(replicated.stdout, prefix: "Test: loss")
                let drift = try EndToEnd.maxDifference(oneFolder + "/epoch-0001.safetensors", many + "/epoch-0001.safetensors")
                let testTolerance = name.hasSuffix("-bn") ? 0.03 : 0.01
                #expect(single[1] > 0.75 && abs(training - single[0]) <= 0.01 && abs(test - single[1]) <= testTolerance,
                        "\(name): \(ranks) ranks × \(threads) threads reach \(training) in training and \(test) in test, one process \(single[0]) and \(single[1]) (parameters drifted \(drift))")
            }
        }

        /// keras.io's convnet reaches TensorFlow's accuracy on Fashion-MNIST. TensorFlow 2.21's Keras fit of the same
        /// model, batch and seeds gives 88.22 / 88.37 / 88.30% here (median 88.30%; the issue quotes 88.4% for
        /// TensorFlow 2.16), and a seed moves either by ±0.3 points: a median of three is known to about 0.2, so
        /// the test fails when Tandem's median is below TensorFlow's by more than that (88.1%), not on a coin toss
        /// at the same accuracy; the closing notes report the medians themselves. On 2 replica threads, to use
        /// both cores; the global batch is the config's 128.
        @Test func theConvnetReachesTensorFlowsAccuracy() throws {
            var accuracies: [Double] = []
            for seed in 1...3 {
                let outcome = try train(["train", Self.cnn, "--seed", String(seed), "--replicas", "2", "--progress", "lines"])
                let line = outcome.stdout.split(separator: "\n").first { $0.hasPrefix("Test: loss") }.map(String.init) ?? ""
                accuracies.append(Double(line.components(separatedBy: "accuracy ").last?.prefix(6) ?? "") ?? 0)
            }
            let median = accuracies.sorted()[1]
            #expect(median >= 0.881, "test accuracy \(accuracies) (median \(median)) is below TensorFlow's 88.30% by more than a median of three seeds can tell")
        }

        /// A parameter-server job (1 ps, 2 workers, chief) trains the CNN with its dropout and pooling to a sensible
        /// accuracy in an epoch of pushes.
        @Test func aParameterServerJobTrainsTheConvnet() throws {
            let cluster = #"{"chief":["localhost:2340"],"worker":["localhost:2341","localhost:2342"],"ps":["localhost:2343"]}"#
            let source = TandemProcess.packageRoot.appendingPathComponent(Self.cnn)
            var json = try JSONSerialization.jsonObject(with: Data(contentsOf: source)) as! [String: Any]
            json["strategy"] = "parameter_server"
            json["cluster"] = try JSONSerialization.jsonObject(with: Data(cluster.utf8))
            let config = folder("cnn-ps.json")
            try JSONSerialization.data(withJSONObject: json).write(to: URL(fileURLWithPath: config))
            let outcome = try TandemProcess.launch([config, "--epochs", "1"], timeoutSeconds: 600)
            #expect(outcome.status == 0, "\(outcome.stdout.suffix(3000))\n\(outcome.stderr.suffix(2000))")
            #expect(testAccuracy(outcome.stdout, prefix: "[chief 0] Test: loss") > 0.75, "\(outcome.stdout.suffix(3000))")
        }

        private func testAccuracy(_ output: String, prefix: String) -> Double {
            let line = output.split(separator: "\n").first { $0.hasPrefix(prefix) }.map(String.init) ?? ""
            return Double(line.components(separatedBy: "accuracy ").last?.prefix(6) ?? "") ?? 0
        }

        /// `tandem inspect` shows each layer's output shape and parameters, as Keras's summary(); `predict` and
        /// `evaluate` work on a CNN checkpoint, with batch normalization's moving statistics restored from it.
        @Test func inspectPredictAndEvaluateAConvnet() throws {
            let inspect = try TandemProcess.run(["inspect", Self.cnn])
            #expect(inspect.status == 0, "\(inspect.stderr)")
            for row in ["conv2d_0 (Conv2D, relu)", "(26, 26, 32)", "max_pool2d_3 (MaxPool2D)", "(5, 5, 64)", "dense_6 (Dense, softmax)", "Total params: 34826",
                        "Runs as one pass: conv2d_0 + max_pool2d_1, conv2d_2 + max_pool2d_3"] {
                #expect(inspect.stdout.contains(row), "\(row) missing from:\n\(inspect.stdout)")
            }
            let runs = folder("predict")
            _ = try train(["train", Self.cnnBatchNorm, "--epochs", "1", "--replicas", "2", "--progress", "silent", "--checkpoint-dir", runs])
            let checkpoint = runs + "/epoch-0001.safetensors"
            let image = folder("sneaker.png")
            let pixels = (0..<784).map { UInt8(($0 % 28 > 6 && $0 % 28 < 22 && $0 / 28 > 14) ? 200 : 0) }
            try Data(pngBytes(width: 28, height: 28, channels: 1, samples: pixels)).write(to: URL(fileURLWithPath: image))
            let predict = try TandemProcess.run(["predict", "--checkpoint", checkpoint, image])
            #expect(predict.status == 0 && predict.stdout.contains("sneaker.png:"), "\(predict.stdout)\n\(predict.stderr)")
            let evaluate = try TandemProcess.run(["evaluate", "--checkpoint", checkpoint])
            #expect(evaluate.status == 0, "\(evaluate.stderr)")
            #expect(evaluate.stdout.contains("accuracy 0."), "\(evaluate.stdout)")
        }
    }
}
