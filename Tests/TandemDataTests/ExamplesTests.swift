import TandemCore
import TandemData
import TandemTestSupport
import Testing

@Suite struct ExamplesTests {
    @Test func shapesAndErrors() throws {
        let examples = try Examples(features: .bytes([1, 2, 3, 4, 5, 6]), featureCount: 3, targets: [4, 1])
        #expect(examples.count == 2 && examples.classCount == 5)
        expectTandemError(.badInput, mentioning: ["7", "3"]) {
            _ = try Examples(features: .floats([1, 2, 3, 4, 5, 6, 7]), featureCount: 3, targets: [0, 0])
        }
        expectTandemError(.badInput, mentioning: ["2 examples", "3 targets"]) {
            _ = try Examples(features: .floats([1, 2, 3, 4, 5, 6]), featureCount: 3, targets: [0, 0, 0])
        }
        let wide = try Examples(features: .floats([1, 2]), featureCount: 1, targets: [1, 2, 3, 4], targetWidth: 2)
        #expect(wide.count == 2 && wide.targetWidth == 2)
    }

    @Test func convertRowAppliesTheScaling() throws {
        let bytes = try Examples(features: .bytes([0, 255, 51, 102]), featureCount: 2, targets: [0, 1])
        var row = [Float](repeating: 0, count: 2)
        bytes.convertRow(1, scaling: .unit(features: 2), into: &row)
        #expect(abs(row[0] - 0.2) < 1e-7 && abs(row[1] - 0.4) < 1e-7)
        let floats = try Examples(features: .floats([1, 2, 3, 4]), featureCount: 2, targets: [0, 1])
        floats.convertRow(1, scaling: FeatureScaling(scale: [10, -1], shift: [0.5, 2]), into: &row)
        #expect(row == [30.5, -2])
        floats.convertRow(0, scaling: .identity(features: 2), into: &row)
        #expect(row == [1, 2])
    }

    @Test func gatherConvertsTheRowsInTheOrderGivenWithTheirTargets() throws {
        // Rows of 100 bytes (two cache lines, not aligned to them) and two targets each; more rows than the lookahead.
        let rowCount = 10, width = 100
        let bytes = (0..<rowCount * width).map { UInt8($0 % 251) }
        let examples = try Examples(features: .bytes(bytes), featureCount: width,
                                    targets: (0..<rowCount * 2).map(Float.init), targetWidth: 2)
        let order: [Int32] = [7, 0, 9, 3, 3, 8, 1]
        var features = [Float](repeating: -1, count: order.count * width)
        var targets = [Float](repeating: -1, count: order.count * 2)
        let scaling = FeatureScaling(scale: [Float](repeating: 2, count: width), shift: [Float](repeating: 1, count: width))
        order.withUnsafeBufferPointer { rows in
            examples.gather(rows, scaling: scaling, features: &features, targets: &targets)
        }
        for (r, row) in order.map(Int.init).enumerated() {
            #expect(Array(features[r * width..<(r + 1) * width]) == bytes[row * width..<(row + 1) * width].map { Float($0) * 2 + 1 })
            #expect(Array(targets[r * 2..<r * 2 + 2]) == [Float(row * 2), Float(row * 2 + 1)])
        }
    }

    @Test func standardizationUsesOnlyTheGivenRows() throws {
        // Rows 0-1 have features (1, 3), (3, 5): means 2 and 4, overall std of {1, 3, 3, 5} = √2.
        let examples = try Examples(features: .floats([1, 3, 3, 5, 100, 100]), featureCount: 2, targets: [0, 0, 0])
        let statistics = examples.statistics(rows: [0, 1])
        #expect(statistics.featureMeans == [2, 4])
        #expect(abs(statistics.overallStd - 2.0.squareRoot()) < 1e-12)
        let scaling = FeatureScaling.standardized(on: examples, rows: [0, 1])
        var row = [Float](repeating: 0, count: 2)
        examples.convertRow(0, scaling: scaling, into: &row)
        #expect(abs(row[0] + 1 / 2.0.squareRoot().float) < 1e-6 && abs(row[1] + 1 / 2.0.squareRoot().float) < 1e-6)
        // A constant feature set has std 0: the scale stays 1 instead of dividing by zero.
        let constant = try Examples(features: .bytes([7, 7, 7, 7]), featureCount: 2, targets: [0, 0])
        #expect(FeatureScaling.standardized(on: constant).scale == [1, 1])
    }
}

private extension Double { var float: Float { Float(self) } }
