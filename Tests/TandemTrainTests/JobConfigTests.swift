import Foundation
import TandemCore
import TandemTestSupport
import TandemTrain
import Testing

@Suite struct JobConfigTests {
    static let valid = classificationConfig()

    /// Writes `text` as a config and expects loading it to fail naming the file and every fragment.
    static func expectLoadError(_ text: String, mentioning fragments: [String], sourceLocation: SourceLocation = #_sourceLocation) throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let path = try directory.write("job.json", text: text)
        expectTandemError(.badConfig, mentioning: [path] + fragments, sourceLocation: sourceLocation) {
            _ = try JobConfig.load(path: path)
        }
    }

    static func replacing(_ old: String, _ new: String) throws -> String {
        try #require(valid.contains(old), "the base config has no \(old)")
        return valid.replacingOccurrences(of: old, with: new)
    }

    @Test func validConfigLoads() throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let path = try directory.write("job.json", text: Self.valid)
        let config = try JobConfig.load(path: path)
        #expect(config.sourcePath == path)
        #expect(config.name == "tiny-classifier")
        #expect(config.data.format == "csv" && config.data.train == "train.csv" && config.data.target == "label")
        #expect(config.model.inputSize == 4 && config.model.layers.map(\.units) == [8, 3])
        #expect(config.optimizer.name == "adam" && config.optimizer.learningRate == 0.01 && config.optimizer.decay == 0.001)
        #expect(config.training.batchSize == 16 && config.training.epochs == 6 && config.seed == 7)
        // canonicalJSON round-trips (sourcePath is not part of the JSON).
        var decoded = try JSONDecoder().decode(JobConfig.self, from: Data(config.canonicalJSON().utf8))
        #expect(decoded.sourcePath == nil)
        decoded.sourcePath = path
        #expect(decoded == config)
        // Without a seed, the default is 42.
        let unseeded = try directory.write("unseeded.json", text: try Self.replacing(#", "seed": 7"#, ""))
        #expect(try JobConfig.load(path: unseeded).seed == 42)
    }

    @Test func shippedConfigsLoad() throws {
        let configs = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("configs").path
        let names = try FileManager.default.contentsOfDirectory(atPath: configs).filter { $0.hasSuffix(".json") }
        #expect(!names.isEmpty)
        for name in names {
            #expect(throws: Never.self, "\(name)") { _ = try JobConfig.load(path: configs + "/" + name) }
        }
    }

    @Test func malformedJSON() throws {
        try Self.expectLoadError(String(Self.valid.dropLast(20)), mentioning: ["malformed JSON"])
        try Self.expectLoadError("", mentioning: ["malformed JSON"])
    }

    @Test func wrongTypeNamesTheField() throws {
        try Self.expectLoadError(try Self.replacing(#""batch_size": 16"#, #""batch_size": "64""#),
                                 mentioning: ["training.batch_size", "integer"])
        try Self.expectLoadError(try Self.replacing(#""learning_rate": 0.01"#, #""learning_rate": "fast""#),
                                 mentioning: ["optimizer.learning_rate", "number"])
        try Self.expectLoadError(try Self.replacing(#"{ "units": 3"#, #"{ "units": "three""#),
                                 mentioning: ["model.layers[1].units", "integer"])
        try Self.expectLoadError(try Self.replacing(#""loss": "sparse_categorical_crossentropy""#, #""loss": null"#),
                                 mentioning: ["loss", "null"])
    }

    @Test func missingFieldIsNamed() throws {
        try Self.expectLoadError(try Self.replacing(#""loss": "sparse_categorical_crossentropy","#, ""), mentioning: ["missing field loss"])
        try Self.expectLoadError(try Self.replacing(#", "epochs": 6"#, ""), mentioning: ["missing field training.epochs"])
        try Self.expectLoadError(try Self.replacing(#""input_size": 4, "#, ""), mentioning: ["missing field model.input_size"])
    }

    @Test func unknownNamesAreReported() throws {
        try Self.expectLoadError(try Self.replacing(#""activation": "tanh""#, #""activation": "swish""#),
                                 mentioning: ["model.layers[0].activation", "\"swish\""])
        try Self.expectLoadError(try Self.replacing(#""name": "adam""#, #""name": "adagrad""#),
                                 mentioning: ["optimizer.name", "\"adagrad\""])
        try Self.expectLoadError(try Self.replacing(#""loss": "sparse_categorical_crossentropy""#, #""loss": "hinge""#),
                                 mentioning: ["loss", "\"hinge\""])
        try Self.expectLoadError(try Self.replacing(#""format": "csv""#, #""format": "parquet""#),
                                 mentioning: ["data.format", "\"parquet\""])
    }

    @Test func outOfRangeValues() throws {
        try Self.expectLoadError(try Self.replacing(#""batch_size": 16"#, #""batch_size": 0"#), mentioning: ["training.batch_size", "between 1 and", "found 0"])
        try Self.expectLoadError(try Self.replacing(#""epochs": 6"#, #""epochs": -1"#), mentioning: ["training.epochs"])
        try Self.expectLoadError(try Self.replacing(#""target": "label""#, #""target": "label", "validation_split": 1.5"#),
                                 mentioning: ["data.validation_split", "1.5"])
        try Self.expectLoadError(try Self.replacing(#""target": "label""#, #""target": "label", "scaling": "minmax""#),
                                 mentioning: ["data.scaling", "\"minmax\""])
        try Self.expectLoadError(try Self.replacing(#""learning_rate": 0.01"#, #""learning_rate": -1"#),
                                 mentioning: ["optimizer.learning_rate"])
        try Self.expectLoadError(try Self.replacing(#""seed": 7 }"#, #""seed": 7 }, "class_names": ["a", "b"]"#),
                                 mentioning: ["class_names", "2 names", "3 outputs"])
    }

    @Test func missingConfigFile() throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let path = directory.file("absent.json")
        expectTandemError(.io, mentioning: [path]) { _ = try JobConfig.load(path: path) }
    }

    @Test func aParameterServerJobRefusesTheMirroredLearningRateSchedule() throws {
        let ps = #""strategy": "parameter_server", "training": { "batch_size": 16"#
        try Self.expectLoadError(try Self.replacing(#""training": { "batch_size": 16"#, ps + #", "scale_learning_rate": true"#),
                                 mentioning: ["training.scale_learning_rate", "parameter_server"])
        try Self.expectLoadError(try Self.replacing(#""training": { "batch_size": 16"#, ps + #", "warmup_epochs": 1"#),
                                 mentioning: ["training.warmup_epochs", "parameter_server"])
    }
}
