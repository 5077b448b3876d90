// The module a user imports: `import Tandem` brings tensors and the gradient tape, layers and models, data
// readers, the training loop and its checkpoints, and the strategies that distribute it.
//
// ```swift
// import Tandem
//
// let model = Sequential(inputSize: 784) {
//     Dense(50, activation: .tanh)
//     Dense(10, activation: .softmax)
// }
// ```
@_exported import TandemCollectives
@_exported import TandemCore
@_exported import TandemData
@_exported import TandemDistributed
@_exported import TandemNN
@_exported import TandemTrain
