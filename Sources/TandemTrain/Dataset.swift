import Foundation
import TandemCore
import TandemData

/// Labelled examples to train on, with an optional test set and the input scaling to fit: what `fit` takes.
///
/// ```swift
/// let data = try Dataset.fashionMNIST(scaling: .standardize)
/// try model.fit(data, epochs: 5, batchSize: 64, validationSplit: 0.1)
/// ```
public struct Dataset: Sendable {
    /// How inputs are scaled before the model sees them, fitted on the training rows.
    public enum Scaling: String, Sendable, CaseIterable {
        /// x / 255 (pixels).
        case unit
        /// Per-feature training mean removed, divided by the overall training standard deviation.
        case standardize
        /// As stored.
        case none
    }

    public let train: Examples
    public let test: Examples?
    public let scaling: Scaling
    /// Where the data came from, as a config's `data` section: stored in checkpoints, so `tandem evaluate` finds
    /// the test set again.
    public let source: JobConfig.DataSection

    public init(train: Examples, test: Examples? = nil, scaling: Scaling = .none, source: JobConfig.DataSection? = nil) {
        self.train = train
        self.test = test
        self.scaling = scaling
        self.source = source ?? JobConfig.DataSection(format: "memory", scaling: scaling.rawValue)
    }

    /// Fashion-MNIST from its IDX files (Debian's dataset-fashion-mnist puts them in
    /// /usr/share/datasets/fashion-mnist): 60,000 training and 10,000 test images as 784 features.
    public static func fashionMNIST(directory: String = JobConfig.defaultFashionMNISTDirectory, scaling: Scaling = .unit) throws -> Dataset {
        try load(JobConfig.DataSection(format: "idx", dir: directory, scaling: scaling.rawValue), relativeTo: nil)
    }

    /// The data a config's `data` section names; relative paths are from the config's folder.
    public static func load(_ section: JobConfig.DataSection, relativeTo configPath: String?, dataDirectoryOverride: String? = nil) throws -> Dataset {
        let source = configPath ?? "config"
        let base = configPath.map { URL(fileURLWithPath: $0).deletingLastPathComponent().path } ?? "."
        func resolve(_ name: String?, field: String, directory: String?) throws -> String {
            guard let name else { throw TandemError(.badConfig, "\(source): missing field data.\(field)") }
            if name.hasPrefix("/") { return name }
            let folder = directory.map { $0.hasPrefix("/") ? $0 : base + "/" + $0 } ?? base
            return folder + "/" + name
        }
        let train: Examples
        let test: Examples?
        let format = section.format.lowercased()
        switch format {
        case "idx":
            let directory = dataDirectoryOverride ?? section.dir ?? JobConfig.defaultFashionMNISTDirectory
            let trainFiles = (try resolve(section.trainImages ?? "train-images-idx3-ubyte.gz", field: "train_images", directory: directory),
                              try resolve(section.trainLabels ?? "train-labels-idx1-ubyte.gz", field: "train_labels", directory: directory))
            let testFiles = (try resolve(section.testImages ?? "t10k-images-idx3-ubyte.gz", field: "test_images", directory: directory),
                             try resolve(section.testLabels ?? "t10k-labels-idx1-ubyte.gz", field: "test_labels", directory: directory))
            // gunzip is sequential, so the two sets are decoded side by side: start-up then costs the training set only.
            let loaded = ConcurrentResults<Examples>(count: 2)
            DispatchQueue.concurrentPerform(iterations: 2) { index in
                let files = index == 0 ? trainFiles : testFiles
                loaded.set(index, Result { try IDXReader.readLabelled(images: files.0, labels: files.1) })
            }
            train = try loaded.get(0)
            test = try loaded.get(1)
        case "csv":
            let directory = dataDirectoryOverride ?? section.dir
            train = try CSVReader.read(path: try resolve(section.train, field: "train", directory: directory), targetColumn: section.target).examples
            test = try section.test.map {
                try CSVReader.read(path: try resolve($0, field: "test", directory: directory), targetColumn: section.target).examples
            }
        default:
            throw TandemError(.badConfig, "\(source): data.format \(TandemError.quoted(section.format)) names no files to load (expected \"idx\" or \"csv\")")
        }
        let scaling = Scaling(rawValue: section.scaling ?? (format == "idx" ? "unit" : "none")) ?? .none
        return Dataset(train: train, test: test, scaling: scaling, source: section)
    }
}
