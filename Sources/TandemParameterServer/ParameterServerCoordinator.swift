import Foundation
import TandemCore
import TandemData
import TandemNN
import TandemTrain

/// The chief's side of a parameter-server job, which its `Trainer` runs its epochs through
/// (`AsynchronousCoordinator`): it opens the ps tasks from the chief's model and optimizer, counts the workers'
/// pushes against each epoch's steps (naming a stall, a refused worker, a ps that stops answering), pulls the
/// parameters and optimizer state they reached after each epoch's worth, and ends the job after the last.
final class ParameterServerCoordinator: AsynchronousCoordinator {
    let job: ParameterServerJob
    /// How long the chief waits for the ps tasks to answer, and for a push, before it names who is missing.
    private let stallSeconds: Double
    private var clients: [ParameterServerClient] = []
    private var stepsPerEpoch = 0
    private var lastPushes = -1, lastProgress = 0.0, lastEpochEnd = 0.0

    init(job: ParameterServerJob, stallSeconds: Double) {
        self.job = job
        self.stallSeconds = stallSeconds
    }

    func open(model: Sequential, optimizer: Optimizer, data: DataSource, completedEpochs: Int, stepsPerEpoch: Int) throws {
        clients = try job.connectToParameterServers(timeoutSeconds: stallSeconds)
        self.stepsPerEpoch = stepsPerEpoch
        try job.open(clients, model: model, optimizer: optimizer, data: data, pushes: completedEpochs * stepsPerEpoch)
        (lastProgress, lastEpochEnd) = (ProcessStatistics.now(), ProcessStatistics.now())
    }

    func awaitEpoch(_ epoch: Int, of epochs: Int, model: Sequential, optimizer: Optimizer) throws -> AsynchronousEpoch {
        let budget = stepsPerEpoch * epochs
        var statistics = LossStatistics()
        while true {
            Thread.sleep(forTimeInterval: 0.02)
            var reader = Wire.Reader(try job.status(clients[0], index: 0))
            let pushes = Int(try reader.int64())
            _ = try reader.int64()
            let pushed = try reader.floats(3)
            for refusal in String(decoding: try reader.string(), as: UTF8.self).split(separator: "\n") {
                FileHandle.standardError.write(Data("tandem: \(refusal) (refused; the job goes on with the other workers)\n".utf8))
            }
            statistics += LossStatistics(lossSum: Double(pushed[0]), correct: Int(pushed[1]), count: Int(pushed[2]))
            if pushes != lastPushes {
                (lastPushes, lastProgress) = (pushes, ProcessStatistics.now())
            } else if ProcessStatistics.now() - lastProgress > stallSeconds {
                throw TandemError(.timeout, "no worker has pushed gradients for \(wholeSeconds(stallSeconds)) s (\(pushes) of \(budget) pushes done): are the workers running? Their logs say why not")
            }
            guard pushes >= (epoch + 1) * stepsPerEpoch || pushes >= budget else { continue }
            for (i, client) in clients.enumerated().dropFirst() { _ = try job.status(client, index: i) }  // every ps still there
            // Stop before the last pull, so the final figures are those of the parameters the job ends with.
            if epoch + 1 == epochs { stop() }
            try job.pullAll(clients, into: model, optimizer: optimizer)
            optimizer.iterations = pushes
            let now = ProcessStatistics.now()
            defer { lastEpochEnd = now }
            return AsynchronousEpoch(train: statistics, pushes: pushes, seconds: now - lastEpochEnd)
        }
    }

    /// Ends the job: the ps tasks stop, and with them the workers. Harmless once they have.
    func stop() {
        for client in clients { _ = try? client.call(.stop, []) }
    }
}
