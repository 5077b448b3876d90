import CBLAS
import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// Which of OpenBLAS's kernel sets this process should run.
///
/// OpenBLAS picks its kernels once, in the library's load-time constructor, from CPUID — or from the environment
/// variable `OPENBLAS_CORETYPE`. Debian 12's OpenBLAS 0.3.21 does not know recent Xeons (this project's machines
/// report family 6 model 207) and falls back to its SSE3 "Prescott" kernels on a CPU that has AVX-512: sgemm at the
/// reference models' shapes runs 2.5–3× slower than with its Skylake-X kernels on the same chip. By the time `main`
/// runs the choice is made, so the one way to correct it is to set the variable and replace the process with itself,
/// once, before anything else has happened (no threads, no MPI, no open files of ours).
public enum BLASKernelChoice {
    /// The kernel set OpenBLAS is running, as it names it ("SkylakeX", "Haswell", "Prescott", ...).
    public static var current: String {
        guard let name = openblas_get_corename() else { return "unknown" }
        return String(cString: name)
    }

    /// The kernel set to run instead of `current`, or nil to keep it. Only OpenBLAS's fallback for CPUs it does not
    /// know is overridden, and never a choice the user made with `OPENBLAS_CORETYPE`.
    public static func replacement(current: String, cpuFlags: Set<String>, userChoice: String?) -> String? {
        guard userChoice == nil, current == "Prescott" else { return nil }
        if cpuFlags.isSuperset(of: ["avx512f", "avx512cd", "avx512bw", "avx512dq", "avx512vl"]) { return "SkylakeX" }
        if cpuFlags.isSuperset(of: ["avx2", "fma"]) { return "Haswell" }
        if cpuFlags.contains("avx") { return "Sandybridge" }
        return nil
    }

    /// The flags of the first processor in /proc/cpuinfo; empty where there is no such file.
    public static func cpuFlags(cpuinfo: String? = try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8))
        -> Set<String>
    {
        guard let line = cpuinfo?.split(separator: "\n").first(where: { $0.hasPrefix("flags") }),
              let colon = line.firstIndex(of: ":")
        else { return [] }
        return Set(line[line.index(after: colon)...].split(separator: " ").map(String.init))
    }

    /// Replaces this process with itself under better kernels when `replacement` names some; returns (changing
    /// nothing) when it does not, or when the exec fails — the run is then correct, only slower.
    public static func reexecIfBetterKernelsExist() {
        let environment = ProcessInfo.processInfo.environment
        guard let kernels = replacement(
            current: current, cpuFlags: cpuFlags(), userChoice: environment["OPENBLAS_CORETYPE"])
        else { return }
        // The binary's own path, not /proc/self/exe: the process would be listed as "exe" in ps and top.
        guard let binary = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe") else { return }
        setenv("OPENBLAS_CORETYPE", kernels, 1)
        execv(binary, CommandLine.unsafeArgv)
        unsetenv("OPENBLAS_CORETYPE")
    }
}
