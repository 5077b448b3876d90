import TandemCore
import Testing

struct BLASKernelChoiceTests {
    static let avx512 = Set(["sse3", "avx", "avx2", "fma", "avx512f", "avx512cd", "avx512bw", "avx512dq", "avx512vl"])

    @Test func replacesOnlyOpenBLASsFallbackWithTheBestKernelsTheCPUHas() {
        #expect(BLASKernelChoice.replacement(current: "Prescott", cpuFlags: Self.avx512, userChoice: nil) == "SkylakeX")
        #expect(BLASKernelChoice.replacement(current: "Prescott", cpuFlags: ["avx", "avx2", "fma"], userChoice: nil) == "Haswell")
        #expect(BLASKernelChoice.replacement(current: "Prescott", cpuFlags: ["sse3", "avx"], userChoice: nil) == "Sandybridge")
        #expect(BLASKernelChoice.replacement(current: "Prescott", cpuFlags: ["sse3"], userChoice: nil) == nil)
        // A CPU OpenBLAS recognised keeps OpenBLAS's choice, even when it is not the widest.
        #expect(BLASKernelChoice.replacement(current: "Haswell", cpuFlags: Self.avx512, userChoice: nil) == nil)
        #expect(BLASKernelChoice.replacement(current: "Zen", cpuFlags: Self.avx512, userChoice: nil) == nil)
    }

    @Test func neverOverridesTheUsersChoice() {
        #expect(BLASKernelChoice.replacement(current: "Prescott", cpuFlags: Self.avx512, userChoice: "Prescott") == nil)
        #expect(BLASKernelChoice.replacement(current: "Prescott", cpuFlags: Self.avx512, userChoice: "") == nil)
    }

    @Test func readsTheFlagsOfTheFirstProcessor() {
        let cpuinfo = """
            processor\t: 0
            model\t\t: 207
            flags\t\t: fpu sse3 avx2 avx512f
            bogomips\t: 4200.00

            processor\t: 1
            flags\t\t: fpu
            """
        #expect(BLASKernelChoice.cpuFlags(cpuinfo: cpuinfo) == ["fpu", "sse3", "avx2", "avx512f"])
        #expect(BLASKernelChoice.cpuFlags(cpuinfo: "processor\t: 0\n").isEmpty)
        #expect(BLASKernelChoice.cpuFlags(cpuinfo: nil).isEmpty)
    }
}
