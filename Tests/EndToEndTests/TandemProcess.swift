import Foundation

/// Runs the built `tandem` binary as a child process under `timeout`, so a hang fails the test instead of the
/// suite. Output is drained on two threads before waiting for exit (a full pipe would block the child).
struct TandemProcess {
    struct Outcome {
        let status: Int32
        let stdout: String
        let stderr: String
    }

    static let packageRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    /// `launch.sh` exports TANDEM_BINARY; a plain `swift test -c release` after `swift build -c release` finds it too.
    static var binary: String {
        if let path = ProcessInfo.processInfo.environment["TANDEM_BINARY"] { return path }
        return packageRoot.appendingPathComponent(".build/release/tandem").path
    }

    static func run(_ arguments: [String], timeoutSeconds: Int = 300, in directory: URL? = nil) throws -> Outcome {
        try execute([binary] + arguments, timeoutSeconds: timeoutSeconds, in: directory)
    }

    /// `mpirun -np ranks tandem arguments`, with the flags launch.sh uses (root, oversubscription, fast abort).
    static func mpirun(ranks: Int, _ arguments: [String], timeoutSeconds: Int = 300) throws -> Outcome {
        try mpirun(ranks: ranks, program: binary, arguments, timeoutSeconds: timeoutSeconds)
    }

    /// `mpirun -np ranks program arguments`, for another program of the package (see `sibling(_:)`).
    static func mpirun(ranks: Int, program: String, _ arguments: [String], timeoutSeconds: Int = 300) throws -> Outcome {
        try execute(mpirunPrefix(ranks: ranks) + [program] + arguments, timeoutSeconds: timeoutSeconds)
    }

    /// A program the package builds next to `tandem` (FuzzReaders, CountAllocations).
    static func sibling(_ name: String) -> String {
        URL(fileURLWithPath: binary).deletingLastPathComponent().appendingPathComponent(name).path
    }

    /// A program built by the Examples package (`swift build -c release --package-path Examples`, as launch.sh
    /// test does).
    static func example(_ name: String) -> String {
        packageRoot.appendingPathComponent("Examples/.build/release/\(name)").path
    }

    /// MPMD: `mpirun -np 1 tandem A : -np 1 tandem B ...`, one rank per argument list.
    static func mpirun(contexts: [[String]], timeoutSeconds: Int = 300) throws -> Outcome {
        let command = Array(contexts.map { ["-np", "1", binary] + $0 }.joined(separator: [":"]))
        return try execute(["mpirun"] + mpirunOptions + command, timeoutSeconds: timeoutSeconds)
    }

    /// mpirun running a shell command per rank ($OMPI_COMM_WORLD_RANK tells the rank; $TANDEM is the binary).
    static func mpirunShell(ranks: Int, _ script: String, timeoutSeconds: Int = 300) throws -> Outcome {
        try execute(mpirunPrefix(ranks: ranks) + ["-x", "TANDEM=\(binary)", "/bin/sh", "-c", script], timeoutSeconds: timeoutSeconds)
    }

    /// Where launch.sh puts run folders during the tests (TANDEM_RUNS), instead of the checkout's runs/.
    static let runsDirectory = FileManager.default.temporaryDirectory.appendingPathComponent("tandem-e2e-runs-\(getpid())").path

    /// `./launch.sh arguments`, pointed at the binary under test (TANDEM_PREBUILT: no nested build).
    static func launch(_ arguments: [String], timeoutSeconds: Int = 300, environment: [String: String] = [:]) throws -> Outcome {
        try execute(["env", "TANDEM_PREBUILT=\(binary)", "TANDEM_RUNS=\(runsDirectory)"] + environment.map { "\($0.key)=\($0.value)" }
                    + [packageRoot.appendingPathComponent("launch.sh").path] + arguments, timeoutSeconds: timeoutSeconds)
    }

    /// Any command, under the same timeout and output handling.
    static func command(_ command: [String], timeoutSeconds: Int = 300) throws -> Outcome {
        try execute(command, timeoutSeconds: timeoutSeconds)
    }

    /// The flags launch.sh uses: as root, more ranks than cores, threads free to use both cores, fast abort.
    private static let mpirunOptions = ["--oversubscribe", "--bind-to", "none", "--allow-run-as-root", "--mca", "odls_base_sigkill_timeout", "0"]

    private static func mpirunPrefix(ranks: Int) -> [String] { ["mpirun", "-np", String(ranks)] + mpirunOptions }

    private static func execute(_ command: [String], timeoutSeconds: Int, in directory: URL? = nil) throws -> Outcome {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/timeout")
        process.arguments = ["-k", "5", String(timeoutSeconds)] + command
        process.currentDirectoryURL = directory ?? packageRoot
        let out = Pipe(), err = Pipe()
        process.standardOutput = out
        process.standardError = err
        try process.run()
        let errData = DrainedPipe(err)
        let stdout = out.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return Outcome(status: process.terminationStatus, stdout: String(decoding: stdout, as: UTF8.self),
                       stderr: String(decoding: errData.wait(), as: UTF8.self))
    }

    static func temporaryDirectory() throws -> URL {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("tandem-e2e-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        return url
    }
}

/// Reads a pipe to its end on a background thread.
final class DrainedPipe: @unchecked Sendable {
    private var data = Data()
    private let done = DispatchSemaphore(value: 0)

    init(_ pipe: Pipe) {
        Thread.detachNewThread { [self] in
            data = pipe.fileHandleForReading.readDataToEndOfFile()
            done.signal()
        }
    }

    func wait() -> Data {
        done.wait()
        return data
    }
}

/// The JSON Lines records of a `--metrics` file.
func metricsRecords(_ url: URL) throws -> [[String: Any]] {
    try String(contentsOf: url, encoding: .utf8).split(separator: "\n").map {
        try JSONSerialization.jsonObject(with: Data($0.utf8)) as! [String: Any]
    }
}
