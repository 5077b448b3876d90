// Raschka's Fashion-MNIST MLP the way a Keras user writes it: a Sequential model of 784-50-50-10 tanh, compiled with
// SGD (0.001, momentum 0.9, decay 1e-7) and fit on standardized pixels with a 0.1 validation split, batch 64 —
// under whatever strategy the environment gives: MPI ranks under mpirun or srun, --replicas threads, or both.
//
//   swift run -c release --package-path Examples KerasStyle --epochs 5 --seed 1
//   mpirun -np 2 .build/release/KerasStyle --batch-size 128 --reduction-groups 4
import ExampleOptions
import Tandem

runExample("KerasStyle") {
    let options = try ExampleOptions.parse(defaults: ExampleOptions(epochs: 5, batchSize: 64, seed: 1))
    let strategy = try Strategies.fromEnvironment(replicas: options.replicas)
    defer { strategy.finish() }

    let data = try Dataset.fashionMNIST(scaling: .standardize)
    let model = try Sequential(inputSize: 784, seed: options.seed) {
        Dense(50, activation: .tanh)
        Dense(50, activation: .tanh)
        Dense(10, activation: .softmax)
    }
    try model.compile(optimizer: .sgd(learningRate: 0.001, momentum: 0.9, decay: 1e-7),
                      loss: .sparseCategoricalCrossentropy, metrics: [.accuracy])

    var training = TrainingOptions()
    training.metricsPath = options.metrics
    let history = try model.fit(data, epochs: options.epochs, batchSize: options.batchSize, validationSplit: 0.1,
                                strategy: strategy, reductionGroups: options.reductionGroups, options: training)

    guard strategy.isChief else { return }
    if let test = history.test {
        print("Test: loss \(fixed(test.meanLoss))  accuracy \(fixed(test.accuracy))  (\(test.count) examples)")
    }
    if let path = options.save {
        try model.save(to: path, job: try model.jobConfig(for: data, epochs: options.epochs, batchSize: options.batchSize,
                                                          validationSplit: 0.1, reductionGroups: options.reductionGroups))
        print("Saved \(path)")
    }
}
