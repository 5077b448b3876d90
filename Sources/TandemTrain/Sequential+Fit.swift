import TandemCollectives
import TandemCore
import TandemData
import TandemNN

extension Sequential {
    /// Trains the compiled model on `dataset` under `strategy`, as Keras's `fit`: the same loop, progress line,
    /// metrics file, TensorBoard events, timeline and checkpoints as `tandem train` (set them in `options`). With
    /// several replicas `batchSize` is the global batch, split evenly among them. Afterwards the model holds the
    /// trained parameters; each `fit` starts a new optimizer state.
    ///
    /// ```swift
    /// let history = try model.fit(try Dataset.fashionMNIST(scaling: .standardize), epochs: 5, batchSize: 64,
    ///                             validationSplit: 0.1, strategy: MirroredStrategy(replicas: 2))
    /// ```
    @discardableResult
    public func fit(_ dataset: Dataset, epochs: Int, batchSize: Int, validationSplit: Double = 0,
                    strategy: any Strategy = LocalStrategy(), reductionGroups: Int? = nil,
                    options: TrainingOptions = TrainingOptions()) throws -> TrainingSummary {
        let job = try jobConfig(for: dataset, epochs: epochs, batchSize: batchSize, validationSplit: validationSplit,
                                reductionGroups: reductionGroups)
        try DataSource.check(dataset.train, against: job, what: "training data")
        if let test = dataset.test { try DataSource.check(test, against: job, what: "test data") }
        let data = DataSource(dataset, validationSplit: validationSplit)
        let trained = try Trainer.run(job, on: data, strategy: strategy, start: TrainingStart(model: self), options: options)
        parameters.copy(from: trained.trainer.value.model.parameters)
        inputScaling = data.scaling
        return trained.summary
    }

    /// Loss and accuracy on `examples` (the dataset's test set when nil), scaled as the last `fit` scaled its
    /// training rows (before any fit: the dataset's scaling fitted on all its training rows).
    public func evaluate(_ dataset: Dataset, on examples: Examples? = nil) throws -> LossStatistics {
        guard let compilation else { throw TandemError(.usage, "compile(optimizer:loss:) the model before evaluate") }
        guard let examples = examples ?? dataset.test else { throw TandemError(.usage, "the dataset has no test set; pass the examples to evaluate") }
        try reserve(maxBatchSize: 256)
        let scaling = inputScaling ?? DataSource(dataset, validationSplit: 0).scaling
        return try Evaluator(model: self, loss: compilation.loss, scaling: scaling, targetWidth: examples.targetWidth).evaluate(examples)
    }

    /// The model's outputs (probabilities for a softmax model) for `rows` rows of already scaled `features`.
    public func predict(_ features: [Float], rows: Int) throws -> [Float] {
        guard features.count == rows * inputSize else {
            throw TandemError(.usage, "predict: \(features.count) values are not \(rows) rows of \(inputSize) features")
        }
        try reserve(maxBatchSize: min(max(rows, 1), 256))
        var result = [Float](repeating: 0, count: rows * outputSize)
        try features.withUnsafeBufferPointer { input in
            try result.withUnsafeMutableBufferPointer { try predict(input.baseAddress!, rows: rows, into: $0.baseAddress!) }
        }
        return result
    }

    /// Writes the parameters as a checkpoint under the names `tandem train` uses (`dense_0/kernel`, ...), with
    /// the job and input scaling (`scaling`, else the one `fit` trained with), so `tandem evaluate`, `predict` and
    /// `inspect` read it.
    public func save(to path: String, job: JobConfig, scaling: FeatureScaling? = nil) throws {
        try TrainingState.checkpoint(model: self, optimizer: nil, epoch: job.training.epochs, seed: seed, config: job,
                                     scaling: scaling ?? inputScaling)
            .write(to: path)
    }

    /// The job `fit` runs, as a config would describe it: stored in checkpoints and compared between replicas.
    public func jobConfig(for dataset: Dataset, epochs: Int, batchSize: Int, validationSplit: Double = 0,
                          reductionGroups: Int? = nil) throws -> JobConfig {
        guard let compilation else { throw TandemError(.usage, "compile(optimizer:loss:) the model before fit") }
        var data = dataset.source
        data.validationSplit = validationSplit
        let job = JobConfig(name: "sequential", data: data, model: spec, loss: compilation.loss.rawValue,
                            optimizer: compilation.optimizer,
                            training: .init(batchSize: batchSize, epochs: epochs, seed: seed, reductionGroups: reductionGroups))
        try job.validate(path: "fit")
        return job
    }
}
