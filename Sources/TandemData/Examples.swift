import CPrefetch
import TandemCore

/// A labelled data set held in memory in its stored form: images stay UInt8 (47 MB for Fashion-MNIST's training set
/// instead of 188 MB as Float) and are converted one batch at a time; CSV tables are Float already.
public struct Examples: Sendable {
    public enum Features: Sendable {
        case bytes([UInt8])
        case floats([Float])
    }

    public let features: Features
    /// One target per row (class index or regression value) — `targetWidth` values per row in general.
    public let targets: [Float]
    public let count: Int
    public let featureCount: Int
    public let targetWidth: Int

    public init(features: Features, featureCount: Int, targets: [Float], targetWidth: Int = 1) throws {
        let stored: Int
        switch features {
        case .bytes(let bytes): stored = bytes.count
        case .floats(let floats): stored = floats.count
        }
        guard featureCount > 0, stored % featureCount == 0 else {
            throw TandemError(.badInput, "features of \(stored) values do not split into rows of \(featureCount)")
        }
        count = stored / featureCount
        guard targets.count == count * targetWidth else {
            throw TandemError(.badInput, "\(count) examples but \(targets.count / max(targetWidth, 1)) targets")
        }
        self.features = features
        self.featureCount = featureCount
        self.targets = targets
        self.targetWidth = targetWidth
    }

    /// Largest class index + 1 (for checking a classifier's output width); a label beyond 2^24 counts as 2^24 + 1.
    public var classCount: Int {
        let largest = targets.max() ?? 0
        return largest >= 0 && largest <= Float(1 << 24) ? Int(largest) + 1 : (largest > 0 ? (1 << 24) + 1 : 1)
    }

    /// Converts row `row` into `destination[0..<featureCount]` as x · scale[c] + shift[c].
    @inline(__always)
    public func convertRow(_ row: Int, scaling: FeatureScaling, into destination: UnsafeMutablePointer<Float>) {
        let n = featureCount
        scaling.scale.withUnsafeBufferPointer { scale in
            scaling.shift.withUnsafeBufferPointer { shift in
                let scale = scale.baseAddress!, shift = shift.baseAddress!
                switch features {
                case .bytes(let bytes):
                    bytes.withUnsafeBufferPointer { b in
                        let source = b.baseAddress! + row * n
                        for c in 0..<n { destination[c] = Float(source[c]) * scale[c] + shift[c] }
                    }
                case .floats(let floats):
                    floats.withUnsafeBufferPointer { f in
                        let source = f.baseAddress! + row * n
                        for c in 0..<n { destination[c] = source[c] * scale[c] + shift[c] }
                    }
                }
            }
        }
    }

    /// Converts the rows `rows` into consecutive rows of `features` and copies their targets into `targets`.
    ///
    /// Rows come in shuffled order from a data set larger than the caches, so each row would start with a wait on
    /// memory: the rows a few places ahead are prefetched while the current one converts.
    public func gather(_ rows: UnsafeBufferPointer<Int32>, scaling: FeatureScaling,
                       features: UnsafeMutablePointer<Float>, targets: UnsafeMutablePointer<Float>) {
        let lookahead = 4  // rows; 2 and 8 measured slower on Fashion-MNIST
        for r in 0..<min(lookahead, rows.count) { prefetchRow(Int(rows[r])) }
        self.targets.withUnsafeBufferPointer { allTargets in
            for r in 0..<rows.count {
                if r + lookahead < rows.count { prefetchRow(Int(rows[r + lookahead])) }
                let row = Int(rows[r])
                convertRow(row, scaling: scaling, into: features + r * featureCount)
                for t in 0..<targetWidth { targets[r * targetWidth + t] = allTargets[row * targetWidth + t] }
            }
        }
    }

    /// Asks the memory system for every cache line of row `row`'s stored features.
    @inline(__always)
    private func prefetchRow(_ row: Int) {
        switch features {
        case .bytes(let bytes):
            bytes.withUnsafeBytes { prefetchLines($0.baseAddress! + row * featureCount, byteCount: featureCount) }
        case .floats(let floats):
            floats.withUnsafeBytes { prefetchLines($0.baseAddress! + row * featureCount * 4, byteCount: featureCount * 4) }
        }
    }

    @inline(__always)
    private func prefetchLines(_ start: UnsafeRawPointer, byteCount: Int) {
        let line = 64
        for offset in stride(from: 0, to: byteCount, by: line) { tandem_prefetch(start + offset) }
        tandem_prefetch(start + byteCount - 1)  // the row need not start on a line boundary
    }

    /// Per-feature mean and the overall standard deviation over `rows` (all rows when nil).
    public func statistics(rows: [Int32]? = nil) -> (featureMeans: [Double], overallStd: Double) {
        let n = featureCount
        let rowCount = rows?.count ?? count
        var sums = [Double](repeating: 0, count: n)
        var totalSquares = 0.0
        switch features {
        case .bytes(let bytes):
            // Exact integer sums over UInt8 pixels: one tight pass (part of start-up for standardized models).
            let pixelSums = UnsafeMutablePointer<UInt64>.allocate(capacity: n)
            defer { pixelSums.deallocate() }
            pixelSums.initialize(repeating: 0, count: n)
            var squares: UInt64 = 0
            bytes.withUnsafeBufferPointer { b in
                for i in 0..<rowCount {
                    let row = b.baseAddress! + (rows.map { Int($0[i]) } ?? i) * n
                    for c in 0..<n {
                        let x = UInt64(row[c])
                        pixelSums[c] &+= x
                        squares &+= x * x
                    }
                }
            }
            sums = (0..<n).map { Double(pixelSums[$0]) }
            totalSquares = Double(squares)
        case .floats(let floats):
            for i in 0..<rowCount {
                let base = (rows.map { Int($0[i]) } ?? i) * n
                for c in 0..<n {
                    let x = Double(floats[base + c])
                    sums[c] += x
                    totalSquares += x * x
                }
            }
        }
        let values = Double(max(rowCount * n, 1))
        let mean = sums.reduce(0, +) / values
        let variance = max(totalSquares / values - mean * mean, 0)
        return (sums.map { $0 / Double(max(rowCount, 1)) }, variance.squareRoot())
    }

}

extension FeatureScaling {
    /// Raschka's standardization: each feature's training mean removed, divided by the training set's overall std.
    public static func standardized(on examples: Examples, rows: [Int32]? = nil) -> FeatureScaling {
        let (means, std) = examples.statistics(rows: rows)
        let inverse = std > 0 ? 1 / std : 1
        return FeatureScaling(scale: .init(repeating: Float(inverse), count: means.count),
                              shift: means.map { Float(-$0 * inverse) })
    }
}
