import Foundation
import TandemCore
import TandemTestSupport
import TandemTrain
import Testing

/// Slurm's compressed host and task-count lists, expanded as `scontrol show hostnames` expands them.
struct SlurmNodeListTests {
    private func hosts(_ text: String) throws -> [String] { try SlurmNodeList.expandHosts(text, variable: "SLURM_STEP_NODELIST") }

    @Test func plainNamesAndCommaLists() throws {
        #expect(try hosts("vm") == ["vm"])
        #expect(try hosts("nodea,nodeb,gpu-3.cluster") == ["nodea", "nodeb", "gpu-3.cluster"])
    }

    @Test func rangesKeepTheLowEndsZeroPadding() throws {
        #expect(try hosts("node[01-04,07]") == ["node01", "node02", "node03", "node04", "node07"])
        #expect(try hosts("n[8-11]") == ["n8", "n9", "n10", "n11"])
        #expect(try hosts("n[098-101]") == ["n098", "n099", "n100", "n101"])
        #expect(try hosts("c[5]") == ["c5"])
    }

    @Test func severalBracketGroupsVaryTheRightmostFastest() throws {
        #expect(try hosts("rack[1-2]-node[01-02]") == ["rack1-node01", "rack1-node02", "rack2-node01", "rack2-node02"])
        #expect(try hosts("a[1-2],b,c[09-10]") == ["a1", "a2", "b", "c09", "c10"])
    }

    static let scontrol = "/usr/bin/scontrol"

    /// The independent reference: Slurm's own expansion, `scontrol show hostnames` (it only needs a config to parse).
    @Test(.enabled(if: FileManager.default.isExecutableFile(atPath: scontrol), "needs slurm-wlm's scontrol; skipped, not passed"),
          arguments: ["vm", "node[01-04,07]", "rack[1-2]-node[01-02]", "rack[1-2]n[1-2]", "n[098-101]", "n[8-11],b", "a[1-2],b,c[09-10]",
                      "gpu[1-3,5-6,10]", "x-[001-003]-y[7]"])
    func expandsAsScontrolDoes(list: String) throws {
        let folder = try TemporaryDirectory(prefix: "tandem-scontrol")
        defer { folder.remove() }
        let config = try folder.write("slurm.conf", text: "ClusterName=probe\nSlurmctldHost=localhost\n")
        let process = Process()
        process.executableURL = URL(fileURLWithPath: Self.scontrol)
        process.arguments = ["show", "hostnames", list]
        process.environment = ["SLURM_CONF": config]
        let output = Pipe()
        process.standardOutput = output
        try process.run()
        let text = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        try #require(process.terminationStatus == 0)
        #expect(try hosts(list) == text.split(separator: "\n").map(String.init))
    }

    @Test(arguments: [
        ("", #"SLURM_STEP_NODELIST: "" is empty; expected host names such as node[01-04]"#),
        ("node[01-", #"SLURM_STEP_NODELIST: "node[01-" has a "[" that is never closed"#),
        ("node01]", #"SLURM_STEP_NODELIST: "node01]" has a "]" without its "[""#),
        ("n[1-[2]]", #"SLURM_STEP_NODELIST: "n[1-[2]]" has a "[" inside another bracket group"#),
        ("n[]", #"SLURM_STEP_NODELIST: "n[]" has an empty bracket group "[]""#),
        ("a,,b", #"SLURM_STEP_NODELIST: "a,,b" has an empty host name (two commas in a row, or one at an end)"#),
        ("n[4-1]", #"SLURM_STEP_NODELIST: "n[4-1]" has the range "4-1", which runs backwards"#),
        ("n[a-b]", #"SLURM_STEP_NODELIST: "n[a-b]" has "a-b" in brackets: "a" is not a number"#),
        ("n[1-2-3]", #"SLURM_STEP_NODELIST: "n[1-2-3]" has "1-2-3" in brackets; expected a number or a range low-high"#),
        ("n[0-99999999999999999999]", #"SLURM_STEP_NODELIST: "n[0-99999999999999999999]" has "0-99999999999999999999" in brackets: "99999999999999999999" is not a number"#),
        ("n[0-999999999]", #"SLURM_STEP_NODELIST: "n[0-999999999]" expands to more than 65536 hosts"#),
        ("a[0-999]b[0-999]", #"SLURM_STEP_NODELIST: "a[0-999]b[0-999]" expands to more than 65536 hosts"#),
        ("node 1", #"SLURM_STEP_NODELIST: "node 1" contains white space"#),
    ])
    func malformedListsNameTheVariableAndTheProblem(text: String, message: String) {
        let error = expectTandemError(.badConfig, mentioning: []) { _ = try hosts(text) }
        #expect(error?.message == message)
    }

    @Test func taskCountsWithRepeats() throws {
        #expect(try SlurmNodeList.expandCounts("4", variable: "V") == [4])
        #expect(try SlurmNodeList.expandCounts("2(x3),1", variable: "V") == [2, 2, 2, 1])
        #expect(try SlurmNodeList.expandCounts("1,3(x2)", variable: "V") == [1, 3, 3])
    }

    @Test(arguments: [
        ("", #"V: "" has task count "" in ""; "" is not a number"#),
        ("2(3)", #"V: "2(3)" has "2(3)"; expected COUNT or COUNT(xREPEAT), e.g. 2(x3)"#),
        ("2(x)", #"V: "2(x)" has repeat count "" in "2(x)"; "" is not a number"#),
        ("0", #"V: "0" has task count "0" in "0"; 0 is out of range 1-65536"#),
        ("-1", #"V: "-1" has task count "-1" in "-1"; "-1" is not a number"#),
        ("1(x99999999)", #"V: "1(x99999999)" has repeat count "99999999" in "1(x99999999)"; 99999999 is out of range 1-65536"#),
    ])
    func malformedTaskCounts(text: String, message: String) {
        let error = expectTandemError(.badConfig, mentioning: []) { _ = try SlurmNodeList.expandCounts(text, variable: "V") }
        #expect(error?.message == message)
    }
}
