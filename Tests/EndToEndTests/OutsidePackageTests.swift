import Foundation
import Testing

extension EndToEnd {
    /// A package outside the repository that depends on Tandem by path, as a user's would, with a distributed
    /// custom loop of a dozen lines: it builds, and runs as 2 MPI ranks.
    @Suite struct OutsidePackageTests {
        static let manifest = """
            // swift-tools-version:6.0
            import PackageDescription
            let package = Package(name: "MyTraining", platforms: [.macOS(.v15)],
                dependencies: [.package(name: "Tandem", path: "\(TandemProcess.packageRoot.path)")],
                targets: [.executableTarget(name: "Loop", dependencies: [.product(name: "Tandem", package: "Tandem")])])
            """

        /// The loop: a softmax regression on Fashion-MNIST, one epoch at global batch 128, gradients summed by the
        /// strategy's reducer, the loss summed over the replicas.
        static let loop = """
            import Tandem
            let strategy = try Strategies.fromEnvironment()
            let data = DataSource(try Dataset.fashionMNIST(), validationSplit: 0)
            let loss = try strategy.run { communicator in
                let model = try Sequential(inputSize: 784, maxBatchSize: 128) { Dense(10, activation: .softmax) }
                let sgd = try OptimizerSpec.sgd(learningRate: 0.1).makeOptimizer(parameterCount: model.parameterCount)
                let reducer = try GradientReducer(communicator: communicator, parameters: model.parameters, gradients: model.gradients)
                try reducer.broadcastParameters()
                let batches = try reducer.batches(of: data.train, scaling: data.scaling, globalBatchSize: 128, seed: 1)
                var statistics = LossStatistics()
                batches.startEpoch(0)
                while let batch = try batches.next() {
                    model.gradients.zero()
                    statistics += try model.accumulateGradient(of: .sparseCategoricalCrossentropy, features: batch.features, targets: batch.targets, rows: batch.rows, gradientScale: 1.0 / 128)
                    try reducer.reduce()
                    sgd.apply(parameters: model.parameters.base, gradients: model.gradients.base)
                }
                batches.finishEpoch()
                let sums = FlatArena(count: 2)
                (sums[0], sums[1]) = (Float(statistics.lossSum), Float(statistics.count))
                try reducer.sum(sums.buffer)
                return sums[0] / sums[1]
            }
            if strategy.isChief { print("replicas \\(strategy.replicaCount) mean loss \\(loss)") }
            strategy.finish()
            """

        @Test func aUsersPackageWithADistributedCustomLoopBuildsAndRunsAsTwoRanks() throws {
            let package = try TandemProcess.temporaryDirectory()
            defer { try? FileManager.default.removeItem(at: package) }
            try Self.manifest.write(to: package.appendingPathComponent("Package.swift"), atomically: true, encoding: .utf8)
            let sources = package.appendingPathComponent("Sources/Loop")
            try FileManager.default.createDirectory(at: sources, withIntermediateDirectories: true)
            try Self.loop.write(to: sources.appendingPathComponent("main.swift"), atomically: true, encoding: .utf8)
            let built = try TandemProcess.command(["swift", "build", "-c", "release", "--package-path", package.path], timeoutSeconds: 1200)
            try #require(built.status == 0, "\(built.stdout.suffix(3000))\n\(built.stderr.suffix(3000))")
            let binary = package.appendingPathComponent(".build/release/Loop").path
            let ranks = try TandemProcess.mpirun(ranks: 2, program: binary, [], timeoutSeconds: 300)
            #expect(ranks.status == 0, "\(ranks.stdout)\n\(ranks.stderr)")
            let lines = ranks.stdout.split(separator: "\n").filter { $0.hasPrefix("replicas 2 mean loss ") }
            #expect(lines.count == 1, "rank 0 alone prints: \(ranks.stdout)")
            let loss = lines.first.flatMap { Float($0.split(separator: " ").last ?? "") } ?? .nan
            #expect(loss > 0.3 && loss < 1.0, "one epoch of softmax regression: \(ranks.stdout)")
        }
    }
}
