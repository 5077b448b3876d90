/// A duration in whole seconds for a message, whatever the value: `Int(seconds)` traps on an infinite, NaN or huge
/// value, and durations come from flags.
public func wholeSeconds(_ seconds: Double) -> String {
    seconds.isFinite && abs(seconds) < 1e15 ? String(Int(seconds.rounded())) : "\(seconds)"
}

/// The longest wait a flag may ask for (a year): far beyond any job, and small enough for every clock API.
public let maximumWaitSeconds: Double = 31_536_000
