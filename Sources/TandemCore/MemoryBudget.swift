#if canImport(Glibc)
import Glibc
#endif

/// Checks a size computed from outside input (a config's layer sizes, a checkpoint's model) against this machine's
/// memory before anything is allocated: Swift ends the process on a failed allocation, with a backtrace instead of
/// an error naming the field.
public enum MemoryBudget {
    /// Physical memory of this machine in bytes.
    public static let physicalBytes: Int = {
        let pages = sysconf(Int32(_SC_PHYS_PAGES)), pageSize = sysconf(Int32(_SC_PAGESIZE))
        guard pages > 0, pageSize > 0 else { return Int.max }
        return pages.multipliedReportingOverflow(by: pageSize).overflow ? Int.max : pages * pageSize
    }()

    /// Throws `.resources` when `floats` Float32 values (`Int.max`: more than can be counted) exceed this machine's
    /// memory. `what` says what needs them, naming the field, e.g. "model.layers: 3 layers of 1048576 units".
    public static func require(floats: Int, for what: String) throws {
        let (bytes, overflow) = floats.multipliedReportingOverflow(by: MemoryLayout<Float>.size)
        guard overflow || bytes > physicalBytes else { return }
        let needed = overflow ? "more than \(gigabytes(Int.max))" : gigabytes(bytes)
        throw TandemError(.resources, "\(what) need \(needed) of memory, more than this machine's \(gigabytes(physicalBytes))")
    }

    private static func gigabytes(_ bytes: Int) -> String {
        let value = Double(bytes) / 1e9
        return value >= 1000 ? "\(Int(value / 1000)) TB" : "\(Int(value.rounded())) GB"
    }
}

/// Sums and products of sizes from outside input that saturate at `Int.max` instead of trapping on overflow; a
/// saturated size is then refused by whatever bound it is checked against.
public enum SaturatingSize {
    public static func product(_ factors: Int...) -> Int { product(factors) }

    public static func product<S: Sequence<Int>>(_ factors: S) -> Int {
        var result = 1
        for factor in factors {
            guard factor >= 0 else { return Int.max }
            let (value, overflow) = result.multipliedReportingOverflow(by: factor)
            if overflow { return Int.max }
            result = value
        }
        return result
    }

    public static func sum<S: Sequence<Int>>(_ terms: S) -> Int {
        var result = 0
        for term in terms {
            let (value, overflow) = result.addingReportingOverflow(term)
            if overflow { return Int.max }
            result = value
        }
        return result
    }
}
