import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Clocks and resource figures for progress lines and the metrics file.
public enum ProcessStatistics {
    /// Monotonic seconds.
    public static func now() -> Double {
        var time = timespec()
        clock_gettime(CLOCK_MONOTONIC, &time)
        return Double(time.tv_sec) + Double(time.tv_nsec) * 1e-9
    }

    /// Peak resident set size of this process, in bytes.
    public static func peakResidentBytes() -> Int {
        var usage = rusage()
        getrusage(Int32(RUSAGE_SELF.rawValue), &usage)
        return usage.ru_maxrss * 1024
    }

    /// CPU seconds this process has used so far, user and system, over all its threads.
    public static func cpuSeconds() -> Double {
        var usage = rusage()
        getrusage(Int32(RUSAGE_SELF.rawValue), &usage)
        let seconds = { (time: timeval) in Double(time.tv_sec) + Double(time.tv_usec) * 1e-6 }
        return seconds(usage.ru_utime) + seconds(usage.ru_stime)
    }

    /// Seconds since the kernel started this process (from /proc/self/stat, 10 ms resolution), so start-up figures
    /// include loading the binary and its libraries, not only the time since main().
    public static func secondsSinceProcessStart() -> Double? {
        guard let stat = try? String(contentsOfFile: "/proc/self/stat", encoding: .utf8),
              let close = stat.lastIndex(of: ")") else { return nil }
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        // After the command name: field 3 is fields[0]; starttime is field 22.
        guard fields.count > 19, let ticks = Double(fields[19]) else { return nil }
        var boot = timespec()
        clock_gettime(CLOCK_BOOTTIME, &boot)
        let uptime = Double(boot.tv_sec) + Double(boot.tv_nsec) * 1e-9
        return uptime - ticks / Double(sysconf(Int32(_SC_CLK_TCK)))
    }
}
