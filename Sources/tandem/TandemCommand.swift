import ArgumentParser
import Foundation
import Logging
import Tandem

struct TandemCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tandem",
        abstract: "Data-parallel training of dense and convolutional networks on CPUs.",
        discussion: """
            Train on one process, on several MPI ranks (mpirun -np N tandem train CONFIG), or read what a checkpoint holds. Configs for the reference workloads are in configs/.
            """,
        version: TrainingState.version,
        subcommands: [Train.self, Evaluate.self, Predict.self, Inspect.self, Cluster.self])
}

/// Options every command that computes shares.
struct ComputeOptions: ParsableArguments {
    @Option(help: "BLAS threads per replica.")
    var threads = 1

    @Flag(name: .shortAndLong, help: "Log what is loaded and where (to stderr).")
    var verbose = false

    func validate() throws {
        guard (1...256).contains(threads) else { throw ValidationError("--threads must be between 1 and 256, found \(threads)") }
    }

    func apply() -> Logger {
        setBLASThreads(threads)
        let level: Logger.Level = verbose ? .info : .notice
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
        return Logger(label: "tandem")
    }
}

extension ProgressReporter.Style: ExpressibleByArgument {}

func megabytes(_ bytes: Int) -> String { String(format: "%.1f MB", Double(bytes) / 1e6) }
func fixed(_ value: Double, _ decimals: Int) -> String { String(format: "%.\(decimals)f", value) }

/// Checks a flag that is a number of seconds to wait: finite, and between `minimum` and a year.
func validateWait(_ seconds: Double, flag: String, minimum: Double = 0) throws {
    guard seconds.isFinite, seconds >= minimum, seconds <= maximumWaitSeconds else {
        throw ValidationError("\(flag) must be a number of seconds from \(wholeSeconds(minimum)) to \(wholeSeconds(maximumWaitSeconds)), found \(seconds)")
    }
}
