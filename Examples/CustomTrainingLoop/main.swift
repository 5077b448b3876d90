// TensorFlow's custom training loop tutorial (784-20-10 ReLU, sparse softmax cross-entropy, SGD 0.1, batch 64) on
// the arena tape, distributed by whatever strategy the environment gives — one process, --replicas threads, MPI
// ranks under mpirun or srun, or both — with a GradientReducer: the loop below is the tutorial's, plus a broadcast
// before it and one reduce per step.
//
//   swift run -c release --package-path Examples CustomTrainingLoop --epochs 5
//   mpirun -np 2 Examples/.build/release/CustomTrainingLoop --batch-size 128 --reduction-groups 4 --save run.safetensors
import ExampleOptions
import Tandem

runExample("CustomTrainingLoop") {
    let options = try ExampleOptions.parse(defaults: ExampleOptions(epochs: 5, batchSize: 64, seed: 42))
    let strategy = try Strategies.fromEnvironment(replicas: options.replicas)
    defer { strategy.finish() }
    let data = DataSource(try Dataset.fashionMNIST(scaling: .unit), validationSplit: 0)
    // The model as tandem train names and lays it out, so --save writes a checkpoint the CLI reads.
    let spec = ModelSpec(inputSize: 784, layers: [.init(units: 20, activation: .relu), .init(units: 10, activation: .softmax)])
    // Written by replica 0 alone, on the thread that runs it.
    let metrics = UncheckedSendable(strategy.isChief ? try options.metrics.map { try MetricsWriter(path: $0) } : nil)
    let global = options.batchSize

    let final = try strategy.run { communicator in
        // Each replica's variables, tape and optimizer; rank 0's initial values are broadcast to the others.
        let variables = ParameterArena(shapes: ["dense_0/kernel": [784, 20], "dense_0/bias": [20], "dense_1/kernel": [20, 10], "dense_1/bias": [10]])
        let (w1, b1, w2, b2) = (variables["dense_0/kernel"], variables["dense_0/bias"], variables["dense_1/kernel"], variables["dense_1/bias"])
        var generator = SeededGenerator(seed: options.seed, stream: 0x1417)
        for kernel in [w1, w2] { variables.assign(kernel, Tensor.glorotUniform(fanIn: kernel.rows, fanOut: kernel.columns, generator: &generator)) }
        let optimizer = SGD(parameterCount: variables.count, learningRate: 0.1)
        let tape = ArenaTape(variables: variables)
        let reducer = try GradientReducer(communicator: communicator, parameters: variables.parameters, gradients: variables.gradients,
                                          reductionGroups: options.reductionGroups)
        try reducer.broadcastParameters()
        let batches = try reducer.batches(of: data.train, scaling: data.scaling, globalBatchSize: global, seed: options.seed)

        func logits(_ images: UnsafePointer<Float>, rows: Int) -> ArenaTape.Value {
            let hidden = addBias(matmul(tape.constant(images, rows: rows, columns: 784), tape.variable(w1)), tape.variable(b1), activation: .relu)
            return addBias(matmul(hidden, tape.variable(w2)), tape.variable(b2))
        }

        var summary = TrainingSummary()
        let totals = FlatArena(count: 3)
        for epoch in 0..<options.epochs {
            let start = ProcessStatistics.now()
            batches.startEpoch(epoch)
            var statistics = LossStatistics()
            while let batch = try batches.next() {
                // One gradient per reduction group (one group of all the rows without them), then one sum.
                let rows = batch.rows / reducer.localGroups
                for group in 0..<reducer.localGroups {
                    tape.reset()
                    variables.zeroGradients()
                    let loss = sparseSoftmaxCrossEntropy(logits: logits(batch.features + group * rows * 784, rows: rows),
                                                         labels: batch.targets + group * rows, globalBatchSize: global, statistics: &statistics)
                    tape.backward(from: loss)
                    reducer.collect(group: group)
                }
                try reducer.reduce()
                optimizer.apply(parameters: variables.parameters.base, gradients: variables.gradients.base)
            }
            batches.finishEpoch()
            let seconds = ProcessStatistics.now() - start
            // Metric reduction: every replica's loss sum, hits and rows, once per epoch.
            (totals[0], totals[1], totals[2]) = (Float(statistics.lossSum), Float(statistics.correct), Float(statistics.count))
            try reducer.sum(totals.buffer)
            let result = EpochResult(epoch: epoch, train: LossStatistics(lossSum: Double(totals[0]), correct: Int(totals[1].rounded()),
                                                                        count: Int(totals[2].rounded())), validation: nil, seconds: seconds)
            summary.epochs.append(result)
            if reducer.isChief {
                print("Epoch \(epoch + 1)/\(options.epochs)  loss \(fixed(result.train.meanLoss))  accuracy \(fixed(result.train.accuracy))  \(fixed(seconds, 3)) s")
                try metrics.value?.write(epoch: result, reportsAccuracy: true)
            }
        }
        return UncheckedSendable((variables, summary))
    }

    // Replica 0's parameters (every replica holds the same): evaluate on the test set, write metrics and a checkpoint.
    guard strategy.isChief else { return }
    let (variables, trained) = final.value
    var summary = trained
    let model = try Sequential(spec: spec, seed: options.seed, maxBatchSize: 1000)
    model.parameters.copy(from: variables.parameters)
    try model.compile(optimizer: .sgd(learningRate: 0.1), loss: .sparseCategoricalCrossentropy, metrics: [.accuracy])
    let test = try model.evaluate(try Dataset.fashionMNIST(scaling: .unit))
    summary.test = test
    print("Test: loss \(fixed(test.meanLoss))  accuracy \(fixed(test.accuracy))  (\(test.count) examples)")
    let epochSeconds = summary.epochs.dropFirst().map(\.seconds).sorted()
    if !epochSeconds.isEmpty { print("Median epoch \(fixed(epochSeconds[epochSeconds.count / 2], 4)) s (epochs 2-\(options.epochs))") }
    summary.peakResidentBytes = ProcessStatistics.peakResidentBytes()
    try metrics.value?.write(summary: summary, reportsAccuracy: true)
    if let path = options.save {
        let job = JobConfig(name: "custom-training-loop", data: .init(format: "idx", dir: JobConfig.defaultFashionMNISTDirectory, scaling: "unit"),
                            model: spec, loss: "sparse_categorical_crossentropy", optimizer: .sgd(learningRate: 0.1),
                            training: .init(batchSize: global, epochs: options.epochs, seed: options.seed, reductionGroups: options.reductionGroups))
        try model.save(to: path, job: job, scaling: data.scaling)
        print("Saved \(path)")
    }
}
