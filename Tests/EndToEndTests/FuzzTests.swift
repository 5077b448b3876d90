import Foundation
import Testing

extension EndToEnd {
    /// Every reader of outside input (config JSON, TF_CONFIG, IDX, CSV, safetensors, PNG) on thousands of seeded
    /// mutations of valid files gives a TandemError or valid data: never a trap, a hang, or an allocation beyond what
    /// the file size justifies (Tests/FuzzReaders says how each is caught).
    @Suite struct FuzzTests {
        static var fuzzer: String { TandemProcess.sibling("FuzzReaders") }

        @Test(arguments: [1, 2] as [UInt64])
        func noReaderTrapsHangsOrOverallocatesOnMutatedFiles(seed: UInt64) throws {
            let outcome = try TandemProcess.command([Self.fuzzer, "--seed", String(seed), "--cases", "4000"], timeoutSeconds: 300)
            #expect(outcome.status == 0, "\(outcome.stdout.suffix(3000))\n\(outcome.stderr.prefix(3000))")
            #expect(outcome.stdout.contains("fuzz: no trap, no hang, no invalid result"), "\(outcome.stdout.suffix(3000))")
            for reader in ["config", "TF_CONFIG", "IDX", "CSV", "safetensors", "PNG"] {
                #expect(outcome.stdout.contains("\(reader): 4000 cases"), "\(reader) did not run all its cases")
            }
        }
    }
}
