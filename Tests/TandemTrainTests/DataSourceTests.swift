import Foundation
import TandemCore
import TandemData
import TandemTestSupport
import TandemTrain
import Testing

@Suite struct DataSourceTests {
    static func idx(_ dimensions: [UInt32], _ data: [UInt8]) -> [UInt8] {
        var bytes: [UInt8] = [0, 0, 8, UInt8(dimensions.count)]
        for dimension in dimensions { bytes += [24, 16, 8, 0].map { UInt8(truncatingIfNeeded: dimension >> $0) } }
        return bytes + data
    }

    static func load(_ directory: TemporaryDirectory, _ config: String, override: String? = nil) throws -> DataSource {
        try DataSource.load(config: try JobConfig.load(path: try directory.write("job.json", text: config)),
                            dataDirectoryOverride: override)
    }

    @Test func csvPathsResolveAgainstTheConfigFolderOrTheOverride() throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        try directory.write("train.csv", text: classificationCSV(rows: 20, seed: 1))
        let data = try Self.load(directory, classificationConfig())
        #expect(data.train.count == 20 && data.test == nil)
        #expect(data.trainRows.count == 20 && data.validationRows.isEmpty)
        #expect(data.scaling == .identity(features: 4))

        try FileManager.default.createDirectory(atPath: directory.file("other"), withIntermediateDirectories: true)
        try directory.write("other/train.csv", text: classificationCSV(rows: 12, seed: 2))
        #expect(try Self.load(directory, classificationConfig(), override: directory.file("other")).train.count == 12)
        let relative = classificationConfig(data: #"{"format": "csv", "dir": "other", "train": "train.csv", "target": "label"}"#)
        #expect(try Self.load(directory, relative).train.count == 12)
    }

    @Test func standardizationIsFittedOnTheTrainingRowsOnly() throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        // 8 ordinary rows, then 2 outliers that fall in the validation part.
        var csv = classificationCSV(rows: 8, seed: 3)
        csv += "100,100,100,100,0\n-50,80,90,100,1\n"
        try directory.write("train.csv", text: csv)
        let data = try Self.load(directory, classificationConfig(
            batch: 4, data: #"{"format": "csv", "train": "train.csv", "target": "label", "scaling": "standardize", "validation_split": 0.2}"#))
        #expect(data.trainRows.count == 8 && data.validationRows == [8, 9])
        #expect(data.scaling == .standardized(on: data.train, rows: data.trainRows))
        #expect(data.scaling != .standardized(on: data.train))
    }

    @Test func idxDataFromAFolder() throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        try directory.write("train-images-idx3-ubyte", Self.idx([6, 2, 2], (0..<24).map { UInt8($0 * 10) }))
        try directory.write("train-labels-idx1-ubyte", Self.idx([6], [0, 1, 2, 0, 1, 2]))
        try directory.write("test-images", Self.idx([2, 2, 2], [UInt8](repeating: 255, count: 8)))
        try directory.write("test-labels", Self.idx([2], [1, 1]))
        let config = """
            {"data": {"format": "idx", "dir": "\(directory.path)", "train_images": "train-images-idx3-ubyte",
                      "train_labels": "train-labels-idx1-ubyte", "test_images": "test-images", "test_labels": "test-labels"},
             "model": {"input_size": 4, "layers": [{"units": 3, "activation": "softmax"}]},
             "loss": "sparse_categorical_crossentropy", "optimizer": {"name": "sgd", "learning_rate": 0.1},
             "training": {"batch_size": 2, "epochs": 1}}
            """
        let data = try Self.load(directory, config)
        #expect(data.train.count == 6 && data.train.featureCount == 4 && data.train.targets == [0, 1, 2, 0, 1, 2])
        #expect(data.test?.count == 2)
        #expect(data.scaling == .unit(features: 4))  // IDX pixels default to x / 255
    }

    @Test
    func idxDefaultScalingIgnoresCase() throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        try directory.write("images", Self.idx([2, 2, 2], [UInt8](repeating: 255, count: 8)))
        try directory.write("labels", Self.idx([2], [0, 1]))
        let config = """
            {"data": {"format": "IDX", "dir": "\(directory.path)", "train_images": "images", "train_labels": "labels",
                      "test_images": "images", "test_labels": "labels"},
             "model": {"input_size": 4, "layers": [{"units": 2, "activation": "softmax"}]},
             "loss": "sparse_categorical_crossentropy", "optimizer": {"name": "sgd", "learning_rate": 0.1},
             "training": {"batch_size": 2, "epochs": 1}}
            """
        #expect(try Self.load(directory, config).scaling == .unit(features: 4))
    }

    @Test
    func negativeClassLabelsAreRejected() throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        try directory.write("train.csv", text: "f0,f1,f2,f3,label\n0,0,0,0,0\n1,1,1,1,-1\n0,1,0,1,2\n1,0,1,0,1\n")
        expectTandemError(.badInput, mentioning: ["-1"]) { _ = try Self.load(directory, classificationConfig(batch: 2)) }
    }
}
