import Foundation
import TandemTrain
import Testing

extension EndToEnd {
    /// `--tensorboard` and `--timeline` on a run with two replicas.
    @Suite struct ObservabilityTests {
        @Test func tensorboardAndTimelineDescribeTheRun() throws {
            let work = try TandemProcess.temporaryDirectory()
            let metrics = work.appendingPathComponent("metrics.jsonl"), trace = work.appendingPathComponent("trace.json")
            let board = work.appendingPathComponent("tb").path
            let run = try TandemProcess.run(["train", "configs/fashion-mnist-mlp.json", "--epochs", "2", "--replicas", "2",
                                             "--batch-size", "128", "--progress", "silent", "--metrics", metrics.path,
                                             "--tensorboard", board, "--timeline", trace.path])
            #expect(run.status == 0, "\(run.stderr)")

            let files = try FileManager.default.contentsOfDirectory(atPath: board)
            try #require(files.count == 1)
            let scalars = try TensorBoardReader.scalars(path: board + "/" + files[0])
            let epochs = try metricsRecords(metrics).filter { $0["event"] as? String == "epoch" }
            for (index, record) in epochs.enumerated() {
                let step = (index + 1) * 468
                let loss = try #require(scalars.first { $0.tag == "epoch/loss" && $0.step == step })
                #expect(abs(Double(loss.value) - (record["loss"] as! Double)) < 1e-6)
                let accuracy = try #require(scalars.first { $0.tag == "epoch/accuracy" && $0.step == step })
                #expect(abs(Double(accuracy.value) - (record["accuracy"] as! Double)) < 1e-6)
            }
            #expect(scalars.filter { $0.tag == "batch/loss" }.count == 2 * 46, "every 10th of 468 steps, 2 epochs")
            #expect(scalars.contains { $0.tag == "epoch/allreduce_us" } && scalars.contains { $0.tag == "epoch/straggler_wait_us" })
            for record in epochs {
                // The collective's own cost (the last arriver's time) and rank 0's wait for it, apart.
                let transfer = try #require(record["allreduce_us"] as? Double), wait = try #require(record["straggler_wait_us"] as? Double)
                #expect(transfer > 0 && wait >= 0, "\(record)")
            }

            // The real TensorBoard, where its Python package is installed, must read the same values.
            let script = """
                import sys
                from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
                accumulator = EventAccumulator(sys.argv[1]); accumulator.Reload()
                print(" ".join("%d:%.4f" % (e.step, e.value) for e in accumulator.Scalars("epoch/loss")))
                """
            let python = try TandemProcess.command(["/usr/bin/env", "python3", "-c", script, board], timeoutSeconds: 120)
            if python.status == 0 {
                let expected = epochs.enumerated().map { String(format: "%d:%.4f", ($0.offset + 1) * 468, $0.element["loss"] as! Double) }
                #expect(python.stdout.trimmingCharacters(in: .whitespacesAndNewlines) == expected.joined(separator: " "), "\(python.stdout)")
            } else {
                print("ObservabilityTests: the tensorboard Python package is not installed; checked with Tandem's reader only")
            }

            let events = try JSONSerialization.jsonObject(with: Data(contentsOf: trace)) as! [[String: Any]]
            let spans = events.filter { $0["ph"] as? String == "X" }
            for replica in [0, 1] {
                let names = Set(spans.filter { $0["tid"] as? Int == replica }.compactMap { $0["name"] as? String })
                #expect(names.isSuperset(of: ["data wait", "forward", "backward", "gradient reduction", "optimizer apply"]), "replica \(replica): \(names)")
            }
            #expect(spans.allSatisfy { ($0["dur"] as? Double ?? -1) >= 0 && $0["ts"] is Double && $0["pid"] is Int })
            #expect(spans.filter { $0["name"] as? String == "forward" }.count == 2 * 2 * 468)
            #expect(spans.contains { $0["name"] as? String == "checkpoint" } == false, "no checkpoints were asked for")
        }
    }
}
