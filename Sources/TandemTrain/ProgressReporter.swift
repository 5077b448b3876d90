import Foundation
import TandemCore

/// Keras-style progress: on a terminal one live line per epoch, redrawn in place at most ten times a second;
/// otherwise (a pipe, a log file, CI) exactly one line per finished epoch.
public final class ProgressReporter {
    public enum Style: String, Sendable, CaseIterable {
        case automatic = "auto", live, lines, silent
    }

    private let style: Style
    private let epochs: Int
    private let stepsPerEpoch: Int
    private let batchSize: Int
    private let reportsAccuracy: Bool
    private var lastDraw = 0.0
    private var epoch = 0

    public init(style: Style, epochs: Int, stepsPerEpoch: Int, batchSize: Int, reportsAccuracy: Bool) {
        self.style = style == .automatic ? (isatty(STDOUT_FILENO) == 1 ? .live : .lines) : style
        self.epochs = epochs
        self.stepsPerEpoch = stepsPerEpoch
        self.batchSize = batchSize
        self.reportsAccuracy = reportsAccuracy
    }

    public func beginEpoch(_ epoch: Int) {
        self.epoch = epoch
        lastDraw = 0
    }

    public func update(step: Int, statistics: LossStatistics, elapsed: Double) {
        guard style == .live, elapsed - lastDraw >= 0.1 || step == stepsPerEpoch else { return }
        lastDraw = elapsed
        let rate = Double(step * batchSize) / max(elapsed, 1e-9)
        let eta = Double(stepsPerEpoch - step) * elapsed / Double(step)
        let width = String(stepsPerEpoch).count
        let counter = String(repeating: " ", count: width - String(step).count) + String(step)
        var line = "Epoch \(epoch + 1)/\(epochs)  \(counter)/\(stepsPerEpoch)  " + figures(statistics)
        line += "  \(format(rate, 0)) samples/s  ETA \(format(eta, 1)) s"
        print("\r" + line + "\u{1B}[K", terminator: "")
        fflush(nil)
    }

    public func endEpoch(_ result: EpochResult) {
        guard style != .silent else { return }
        let steps = result.pushes.map { "\($0) pushes" } ?? "\(stepsPerEpoch)/\(stepsPerEpoch)"
        var line = "Epoch \(result.epoch + 1)/\(epochs)  \(steps)  " + figures(result.train)
        for (name, statistics) in [("val", result.validation), ("test", result.test)] {
            guard let statistics else { continue }
            line += "  \(name)_loss \(format(statistics.meanLoss, 4))"
            if reportsAccuracy { line += "  \(name)_accuracy \(format(statistics.accuracy, 4))" }
        }
        line += "  \(format(result.seconds, 2)) s  \(format(result.samplesPerSecond, 0)) samples/s"
        print((style == .live ? "\r" : "") + line + (style == .live ? "\u{1B}[K" : ""))
        fflush(nil)
    }

    private func figures(_ statistics: LossStatistics) -> String {
        "loss \(format(statistics.meanLoss, 4))" + (reportsAccuracy ? "  accuracy \(format(statistics.accuracy, 4))" : "")
    }
}

func format(_ value: Double, _ decimals: Int) -> String { String(format: "%.\(decimals)f", value) }
