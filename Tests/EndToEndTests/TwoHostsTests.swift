import Foundation
import Testing

extension EndToEnd {
    /// A cluster job across two network namespaces with their own addresses: two hosts as far as MPI can tell.
    @Suite struct TwoHostsTests {
        static let canCreateNamespaces = getuid() == 0 && FileManager.default.isExecutableFile(atPath: "/usr/sbin/ip")

        @Test(.enabled(if: canCreateNamespaces, "needs root and iproute2 to create network namespaces; skipped, not passed"))
        func mirroredJobAcrossTwoNamespaces() throws {
            let script = TandemProcess.packageRoot.appendingPathComponent("Tests/EndToEndTests/Scripts/two-hosts.sh").path
            let outcome = try TandemProcess.command([script, TandemProcess.binary, "--epochs", "1"], timeoutSeconds: 180)
            #expect(outcome.status == 0, "\(outcome.stdout)\n\(outcome.stderr)")
            #expect(outcome.stdout.contains("[chief 0] Epoch 1/1  468/468"), "\(outcome.stdout)")
            #expect(outcome.stdout.contains("worker on 10.77."), "\(outcome.stdout)")
        }
    }
}
