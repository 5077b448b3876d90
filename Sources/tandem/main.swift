import ArgumentParser
import Foundation
import Tandem

// First, before any thread, file or MPI exists: this may replace the process with itself under faster BLAS kernels.
BLASKernelChoice.reexecIfBetterKernelsExist()

// Every expected failure (bad file, bad field, diverged loss, timeout) is one line and exit status 1; only
// argument errors take swift-argument-parser's usage path.
do {
    var command = try TandemCommand.parseAsRoot()
    try command.run()
} catch let error as TandemError {
    FileHandle.standardError.write(Data("tandem: error: \(error.message)\n".utf8))
    exit(1)
} catch let error as AgreedFailure {
    FileHandle.standardError.write(Data("tandem: error: \(error.message)\n".utf8))
    exit(1)
} catch {
    TandemCommand.exit(withError: error)
}
