import Foundation
import Testing

extension EndToEnd {
    /// A cluster job across two network namespaces with their own addresses: two hosts as far as MPI can tell.
    @Suite struct TwoHostsTests {
        /// Root alone is not enough (a container may withhold the capability): try creating one.
        static let canCreateNamespaces: Bool = {
            guard getuid() == 0, FileManager.default.isExecutableFile(atPath: "/usr/sbin/ip") else { return false }
            let name = "tandem-probe-\(getpid())"
            guard let added = try? TandemProcess.command(["/usr/sbin/ip", "netns", "add", name], timeoutSeconds: 20), added.status == 0 else { return false }
            _ = try? TandemProcess.command(["/usr/sbin/ip", "netns", "del", name], timeoutSeconds: 20)
            return true
        }()

        @Test(.enabled(if: canCreateNamespaces, "needs root, iproute2 and the right to create network namespaces; skipped, not passed"))
        func mirroredJobAcrossTwoNamespaces() throws {
            let script = TandemProcess.packageRoot.appendingPathComponent("Tests/EndToEndTests/Scripts/two-hosts.sh").path
            let outcome = try TandemProcess.command([script, TandemProcess.binary, "--epochs", "1"], timeoutSeconds: 180)
            #expect(outcome.status == 0, "\(outcome.stdout)\n\(outcome.stderr)")
            #expect(outcome.stdout.contains("[chief 0] Epoch 1/1  468/468"), "\(outcome.stdout)")
            #expect(outcome.stdout.contains("worker on 10.77."), "\(outcome.stdout)")
        }
    }
}
