import Dispatch
import Foundation
import Testing
import TandemCore

/// The bytes of an unsigned-byte IDX file.
func idxBytes(dimensions: [UInt32], data: [UInt8], magic: [UInt8]? = nil) -> [UInt8] {
    var bytes = magic ?? [0, 0, 8, UInt8(dimensions.count)]
    for dimension in dimensions { bytes += [24, 16, 8, 0].map { UInt8(truncatingIfNeeded: dimension >> $0) } }
    return bytes + data
}

/// Compresses `path` to `path.gz` with the system gzip, returning the new path.
func gzip(_ path: String) throws -> String {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/usr/bin/gzip")
    process.arguments = ["-f", "-n", path]
    try process.run()
    process.waitUntilExit()
    try #require(process.terminationStatus == 0, "gzip failed")
    return path + ".gz"
}

/// Runs `body` on another thread and reports whether it finished within `seconds`: a guard against a deadlock
/// hanging the whole test run (not a speed measurement — the limit is far above the expected milliseconds).
func finishes(within seconds: Double = 60, _ body: @escaping @Sendable () -> Void) -> Bool {
    let done = DispatchSemaphore(value: 0)
    Thread { body(); done.signal() }.start()
    return done.wait(timeout: .now() + seconds) == .success
}

