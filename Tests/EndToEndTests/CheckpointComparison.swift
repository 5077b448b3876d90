import Foundation
import TandemTrain
import Testing

extension EndToEnd {
    /// A checkpoint's tensors by name.
    static func tensors(_ path: String) throws -> [String: [Float]] {
        Dictionary(uniqueKeysWithValues: try Checkpoint.read(path: path).entries.map { ($0.name, $0.values) })
    }

    /// The largest difference between two checkpoints' parameters and statistics (optimizer state aside); they must
    /// hold the same tensors.
    static func maxDifference(_ a: String, _ b: String) throws -> Float {
        let (x, y) = (try tensors(a), try tensors(b))
        #expect(Set(x.keys) == Set(y.keys))
        var worst: Float = 0
        for (name, values) in x where !name.hasPrefix("optimizer/") {
            let other = try #require(y[name])
            for i in values.indices { worst = max(worst, abs(values[i] - other[i])) }
        }
        return worst
    }
}
