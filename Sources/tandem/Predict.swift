import ArgumentParser
import Foundation
import Tandem

struct Predict: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Classify PNG images, or predict the rows of a CSV file, with a trained checkpoint.",
        discussion: """
            PNG images are read as gray, resized to the model's square input (28×28 for Fashion-MNIST) and scaled as in training. Fashion-MNIST items are light on a dark background: pass --invert for photos of dark items on a light background. A CSV file has the training layout (its target column is shown, not used).
            Examples:
              tandem predict --checkpoint runs/mlp/epoch-0005.safetensors shoe.png shirt.png --top 3
              tandem predict --checkpoint runs/lr/epoch-2000.safetensors configs/linear-regression.csv
            """)

    @Option(help: "Checkpoint (.safetensors) written by tandem train.")
    var checkpoint: String

    @Argument(help: "PNG images or CSV files.")
    var inputs: [String]

    @Option(help: "How many classes to list per image.")
    var top = 1

    @Flag(help: "Invert gray levels of PNG images (dark item on light background).")
    var invert = false

    @OptionGroup var compute: ComputeOptions

    func validate() throws {
        guard top >= 1 else { throw ValidationError("--top must be at least 1, found \(top)") }
    }

    func run() throws {
        _ = compute.apply()
        guard !inputs.isEmpty else { throw TandemError(.usage, "give at least one PNG or CSV file to predict") }
        let loaded = try LoadedCheckpoint(path: checkpoint)
        let config = try? loaded.storedConfig()
        let evaluator = Evaluator(model: loaded.model, loss: (try? Loss(name: config?.loss ?? "")) ?? .meanSquaredError,
                                  scaling: loaded.scaling)
        let classNames = config?.classNames
        for input in inputs {
            if input.lowercased().hasSuffix(".csv") {
                let (examples, _) = try CSVReader.read(path: input, targetColumn: config?.data.target)
                guard examples.featureCount == loaded.model.inputSize else {
                    throw TandemError(.badInput, "\(input): \(examples.featureCount) feature columns but the model takes \(loaded.model.inputSize)")
                }
                guard case .floats(let values) = examples.features else { continue }
                let rows = (0..<examples.count).map { Array(values[$0 * examples.featureCount..<($0 + 1) * examples.featureCount]) }
                for (index, output) in try evaluator.predict(rawRows: rows).enumerated() {
                    print("\(input):\(index + 1): \(describe(output, classNames: classNames))  (target \(examples.targets[index]))")
                }
            } else {
                let side = Int(Double(loaded.model.inputSize).squareRoot())
                guard side * side == loaded.model.inputSize else {
                    throw TandemError(.usage, "\(input): the model's input of \(loaded.model.inputSize) features is not a square image")
                }
                let image = try GrayImage.readPNG(path: input).resized(width: side, height: side)
                let pixels = image.pixels.map { Float(invert ? 255 - $0 : $0) }
                print("\(input): \(describe(try evaluator.predict(rawRows: [pixels])[0], classNames: classNames))")
            }
        }
    }

    private func describe(_ output: [Float], classNames: [String]?) -> String {
        guard output.count > 1 else { return fixed(Double(output[0]), 4) }
        let ranked = output.indices.sorted { output[$0] > output[$1] }.prefix(top)
        return ranked.map { index in
            let name = classNames.flatMap { index < $0.count ? $0[index] : nil } ?? "class \(index)"
            return "\(name) (\(fixed(Double(output[index]), 3)))"
        }.joined(separator: ", ")
    }
}
