import Foundation
import Testing
import TandemCore
import TandemData
import TandemNN
import TandemTrain

/// A small, learnable 3-class problem: 4 features in [−1, 1], label = arg-max of three linear scores.
func classificationCSV(rows: Int, seed: UInt64) -> String {
    var generator = SeededGenerator(seed: seed)
    var text = "f0,f1,f2,f3,label\n"
    for _ in 0..<rows {
        let f = (0..<4).map { _ in (2 * generator.nextUnitFloat() - 1) }
        let scores = [f[0] + f[1], f[2] - f[0], f[3] - f[1] + 0.2]
        let label = scores.indices.max { scores[$0] < scores[$1] }!
        text += f.map { String($0) }.joined(separator: ",") + ",\(label)\n"
    }
    return text
}

/// The job config of the classification problem, with `overrides` replacing whole top-level sections.
func classificationConfig(epochs: Int = 6, batch: Int = 16, optimizer: String = #"{"name": "adam", "learning_rate": 0.01, "decay": 0.001}"#,
                          data: String = #"{"format": "csv", "train": "train.csv", "target": "label"}"#) -> String {
    """
    {
      "name": "tiny-classifier",
      "data": \(data),
      "model": { "input_size": 4, "layers": [ { "units": 8, "activation": "tanh" }, { "units": 3, "activation": "softmax" } ] },
      "loss": "sparse_categorical_crossentropy",
      "optimizer": \(optimizer),
      "training": { "batch_size": \(batch), "epochs": \(epochs), "seed": 7 }
    }
    """
}

func silentOptions() -> TrainingOptions {
    var options = TrainingOptions()
    options.progress = .silent
    return options
}

extension Sequential {
    var parameterBits: [UInt32] { parameters.array.map(\.bitPattern) }
}
