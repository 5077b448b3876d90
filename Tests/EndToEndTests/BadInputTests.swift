import Foundation
import Testing


extension EndToEnd {
    /// Every bad input ends with exit status 1 and one line on stderr naming the file or field — never a crash trace.
    @Suite
    struct BadInputTests {
        let work: URL

        init() throws {
            work = try TandemProcess.temporaryDirectory()
        }

        private func write(_ name: String, _ text: String) throws -> String {
            let url = work.appendingPathComponent(name)
            try text.write(to: url, atomically: true, encoding: .utf8)
            return url.path
        }

        /// The Fashion-MNIST config with one substitution in its text.
        private func fashionConfig(_ name: String, replacing old: String, with new: String) throws -> String {
            let text = try String(contentsOf: TandemProcess.packageRoot.appendingPathComponent("configs/fashion-mnist-mlp.json"), encoding: .utf8)
            #expect(text.contains(old))
            return try write(name, text.replacingOccurrences(of: old, with: new))
        }

        private func expectCleanFailure(_ arguments: [String], mentions expected: [String], sourceLocation: SourceLocation = #_sourceLocation) throws {
            let outcome = try TandemProcess.run(arguments)
            #expect(outcome.status == 1, "exit status \(outcome.status) for \(arguments)", sourceLocation: sourceLocation)
            let lines = outcome.stderr.split(separator: "\n")
            #expect(lines.count == 1, "expected one line, got: \(outcome.stderr)", sourceLocation: sourceLocation)
            #expect(outcome.stderr.hasPrefix("tandem: error: "), "\(outcome.stderr)", sourceLocation: sourceLocation)
            for text in expected {
                #expect(outcome.stderr.contains(text), "stderr lacks \"\(text)\": \(outcome.stderr)", sourceLocation: sourceLocation)
            }
        }

        @Test func configProblems() throws {
            try expectCleanFailure(["train", "/nonexistent/job.json"], mentions: ["/nonexistent/job.json"])
            let malformed = try write("malformed.json", "{ \"model\": ")
            try expectCleanFailure(["train", malformed], mentions: [malformed, "malformed JSON"])
            let wrongType = try fashionConfig("type.json", replacing: "\"batch_size\": 64", with: "\"batch_size\": \"64\"")
            try expectCleanFailure(["train", wrongType], mentions: [wrongType, "training.batch_size", "integer"])
            let activation = try fashionConfig("activation.json", replacing: "\"relu\"", with: "\"swish\"")
            try expectCleanFailure(["train", activation], mentions: [activation, "swish"])
            let optimizer = try fashionConfig("optimizer.json", replacing: "\"sgd\"", with: "\"adagrad\"")
            try expectCleanFailure(["train", optimizer], mentions: [optimizer, "adagrad"])
            let loss = try fashionConfig("loss.json", replacing: "\"sparse_categorical_crossentropy\"", with: "\"hinge\"")
            try expectCleanFailure(["train", loss], mentions: [loss, "hinge"])
            let inputSize = try fashionConfig("input.json", replacing: "\"input_size\": 784", with: "\"input_size\": 100")
            try expectCleanFailure(["train", inputSize], mentions: ["784 features", "input_size is 100"])
        }

        @Test func dataProblems() throws {
            try expectCleanFailure(["train", "configs/fashion-mnist-mlp.json", "--data-dir", work.path], mentions: [work.path, "train-images-idx3-ubyte.gz"])

            // A gzip file cut in half, next to intact labels.
            let data = work.appendingPathComponent("cut")
            try FileManager.default.createDirectory(at: data, withIntermediateDirectories: true)
            for name in ["train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"] {
                try FileManager.default.copyItem(atPath: "/usr/share/datasets/fashion-mnist/" + name, toPath: data.path + "/" + name)
            }
            let images = try Data(contentsOf: URL(fileURLWithPath: "/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz"))
            try images.prefix(images.count / 2).write(to: data.appendingPathComponent("train-images-idx3-ubyte.gz"))
            try expectCleanFailure(["train", "configs/fashion-mnist-mlp.json", "--data-dir", data.path], mentions: ["train-images-idx3-ubyte.gz"])

            let csv = try write("wide.csv", "a,b,y\n1,2,3\n4,5,6\n")
            let config = try String(contentsOf: TandemProcess.packageRoot.appendingPathComponent("configs/linear-regression.json"), encoding: .utf8)
                .replacingOccurrences(of: "\"linear-regression.csv\"", with: "\"\(csv)\"")
            try expectCleanFailure(["train", try write("wide.json", config)], mentions: ["2 features", "input_size is 1"])
        }

        @Test func divergingLossStopsNamingEpochAndStep() throws {
            try expectCleanFailure(["train", "configs/linear-regression.json", "--learning-rate", "1e10", "--progress", "silent",
                                    "--checkpoint-dir", work.appendingPathComponent("nan").path],
                                   mentions: ["epoch ", "step 1", "learning_rate"])
        }

        @Test func checkpointAndImageProblems() throws {
            let garbage = try write("garbage.safetensors", "not a checkpoint at all")
            try expectCleanFailure(["evaluate", "configs/fashion-mnist-mlp.json", "--checkpoint", garbage], mentions: [garbage])
            try expectCleanFailure(["inspect", garbage], mentions: [garbage])

            let directory = work.appendingPathComponent("lr").path
            #expect(try TandemProcess.run(["train", "configs/linear-regression.json", "--epochs", "3", "--progress", "silent",
                                           "--checkpoint-dir", directory]).status == 0)
            let checkpoint = directory + "/epoch-0003.safetensors"
            try expectCleanFailure(["evaluate", "configs/fashion-mnist-mlp.json", "--checkpoint", checkpoint], mentions: [checkpoint, "784"])
            try expectCleanFailure(["train", "configs/fashion-mnist-mlp.json", "--resume", checkpoint], mentions: [checkpoint, "dense_0/kernel"])
            let notPNG = try write("photo.png", "GIF89a definitely not a png")
            try expectCleanFailure(["predict", "--checkpoint", checkpoint, notPNG], mentions: [notPNG, "PNG"])
        }
    }
}
