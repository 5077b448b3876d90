import Foundation
import Tandem

/// The command line every example takes, with the meanings `tandem train` gives the same flags.
public struct ExampleOptions: Sendable {
    public var epochs: Int
    public var batchSize: Int
    public var seed: UInt64
    public var replicas = 1
    public var reductionGroups: Int?
    public var metrics: String?
    public var save: String?

    public init(epochs: Int, batchSize: Int, seed: UInt64) {
        self.epochs = epochs
        self.batchSize = batchSize
        self.seed = seed
    }

    static let usage = """
        options:
          --epochs N               epochs to train
          --batch-size B           global batch size (split evenly among the replicas)
          --seed S                 seed of the initial parameters and the shuffle
          --replicas R             replica threads in this process (in each rank under mpirun or srun)
          --reduction-groups G     sum gradients of G fixed groups in one fixed tree: bit-identical for any replica count
          --metrics FILE.jsonl     per-epoch and summary metrics, as tandem train --metrics writes them
          --save FILE.safetensors  the final parameters, under tandem's tensor names
        """

    /// Parses `arguments` (without the program name); prints usage and exits for --help, throws a TandemError on
    /// a bad flag.
    public static func parse(_ arguments: [String] = Array(CommandLine.arguments.dropFirst()), defaults: ExampleOptions) throws -> ExampleOptions {
        var options = defaults
        var rest = arguments[...]
        func value(_ flag: String) throws -> String {
            guard let value = rest.popFirst() else { throw TandemError(.usage, "\(flag) needs a value") }
            return value
        }
        func integer(_ flag: String, in range: ClosedRange<Int>) throws -> Int {
            let text = try value(flag)
            guard let number = Int(text), range.contains(number) else {
                throw TandemError(.usage, "\(flag) must be a whole number from \(range.lowerBound) to \(range.upperBound), found \(TandemError.quoted(text))")
            }
            return number
        }
        while let flag = rest.popFirst() {
            switch flag {
            case "--epochs": options.epochs = try integer(flag, in: 1...JobConfig.maximumEpochs)
            case "--batch-size": options.batchSize = try integer(flag, in: 1...JobConfig.maximumBatchSize)
            case "--seed":
                let text = try value(flag)
                guard let seed = UInt64(text) else { throw TandemError(.usage, "--seed must be a whole number from 0, found \(TandemError.quoted(text))") }
                options.seed = seed
            case "--replicas": options.replicas = try integer(flag, in: 1...8 * ProcessInfo.processInfo.activeProcessorCount)
            case "--reduction-groups": options.reductionGroups = try integer(flag, in: 1...JobConfig.maximumBatchSize)
            case "--metrics": options.metrics = try value(flag)
            case "--save": options.save = try value(flag)
            case "-h", "--help":
                print(usage)
                exit(0)
            default: throw TandemError(.usage, "unknown option \(TandemError.quoted(flag))\n\(usage)")
            }
        }
        return options
    }
}

/// Runs an example's body, printing a failure as one line (`NAME: error: ...`) with exit status 1, as tandem does.
/// First, like `tandem`, it lets OpenBLAS run the best kernels this CPU has (this may re-run the program once,
/// before anything else happens: see BLASKernelChoice).
public func runExample(_ name: String, _ body: () throws -> Void) -> Never {
    BLASKernelChoice.reexecIfBetterKernelsExist()
    setBLASThreads(1)
    do {
        try body()
        exit(0)
    } catch let error as TandemError {
        FileHandle.standardError.write(Data("\(name): error: \(error.message)\n".utf8))
    } catch let error as AgreedFailure {
        FileHandle.standardError.write(Data("\(name): error: \(error.message)\n".utf8))
    } catch {
        FileHandle.standardError.write(Data("\(name): error: \(error)\n".utf8))
    }
    exit(1)
}

/// `value` with `decimals` digits after the point, for progress and result lines.
public func fixed(_ value: Double, _ decimals: Int = 4) -> String { String(format: "%.\(decimals)f", value) }
