import Foundation
import TandemCore

/// The `--metrics` file: one JSON object per line, flushed as written so a crashed run keeps its epochs.
public final class MetricsWriter {
    private let handle: FileHandle
    private let path: String

    public init(path: String) throws {
        guard FileManager.default.createFile(atPath: path, contents: nil), let handle = FileHandle(forWritingAtPath: path) else {
            throw TandemError(.io, "\(path): cannot create the metrics file")
        }
        self.handle = handle
        self.path = path
    }

    deinit { try? handle.close() }

    public func write(epoch result: EpochResult, reportsAccuracy: Bool) throws {
        var record: [String: Any] = [
            "event": "epoch", "epoch": result.epoch + 1, "loss": result.train.meanLoss,
            "seconds": result.seconds, "samples_per_sec": result.samplesPerSecond,
        ]
        if reportsAccuracy { record["accuracy"] = result.train.accuracy }
        if let allreduce = result.allreduceSeconds { record["allreduce_us"] = allreduce * 1e6 }
        if let wait = result.stragglerWaitSeconds { record["straggler_wait_us"] = wait * 1e6 }
        if let test = result.test {
            record["test_loss"] = test.meanLoss
            if reportsAccuracy { record["test_accuracy"] = test.accuracy }
        }
        if let validation = result.validation {
            record["val_loss"] = validation.meanLoss
            if reportsAccuracy { record["val_accuracy"] = validation.accuracy }
        }
        try write(record)
    }

    public func write(summary: TrainingSummary, reportsAccuracy: Bool) throws {
        var record: [String: Any] = [
            "event": "summary", "epoch_seconds": summary.epochs.map(\.seconds),
            "samples_per_sec": summary.samplesPerSecond, "startup_seconds": summary.startupSeconds,
            "peak_rss_bytes": summary.peakResidentBytes, "wall_seconds": summary.wallSeconds,
        ]
        for (key, values) in [("allreduce_us", summary.epochs.compactMap(\.allreduceSeconds)),
                              ("straggler_wait_us", summary.epochs.compactMap(\.stragglerWaitSeconds))] where !values.isEmpty {
            record[key] = values.sorted()[values.count / 2] * 1e6
        }
        if let test = summary.test {
            record["test_loss"] = test.meanLoss
            if reportsAccuracy { record["test_accuracy"] = test.accuracy }
        }
        try write(record)
    }

    /// Appends any other event (the strategies add their own, e.g. communication figures).
    public func write(_ record: [String: Any]) throws {
        do {
            var line = try JSONSerialization.data(withJSONObject: record, options: [.sortedKeys])
            line.append(0x0A)
            try handle.write(contentsOf: line)
        } catch {
            throw TandemError(.io, "\(path): cannot write metrics (\(error.localizedDescription))")
        }
    }
}
