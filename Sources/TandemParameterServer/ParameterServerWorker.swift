import Foundation
import TandemCore
import TandemData
import TandemNN
import TandemTrain

/// A worker's side of the parameter-server exchange, which its `Trainer` trains through (`AsynchronousUpdate`):
/// each step's gradient goes to the ps tasks, shard by shard, and their reply is the parameters of its next step.
/// Each push and the next pull are one round trip on the worker's stream to each ps.
final class ParameterServerWorker: AsynchronousUpdate {
    let job: ParameterServerJob
    let workerIndex: Int
    var workerCount: Int { job.workerCount }
    private let joinTimeoutSeconds: Double
    private var links: [ExchangeLink] = []
    /// Steps so far and where their time went (compute: from one reply to the next push).
    private(set) var summary = ParameterServerJob.WorkerSummary()
    private var lastReply = 0.0, cpuAtStart = 0.0

    init(job: ParameterServerJob, index: Int, joinTimeoutSeconds: Double) {
        self.job = job
        workerIndex = index
        self.joinTimeoutSeconds = joinTimeoutSeconds
    }

    func start(model: Sequential, data: DataSource) throws -> Bool {
        links = try job.join(try job.makeClients(), worker: workerIndex, fingerprint: job.fingerprint(model: model, data: data), timeoutSeconds: joinTimeoutSeconds)
        let stopped = try job.receiveParameters(links, into: model.parameters)
        cpuAtStart = ProcessStatistics.cpuSeconds()
        lastReply = ProcessStatistics.now()
        return !stopped
    }

    func exchange(gradients: FlatArena, statistics: LossStatistics, parameters: FlatArena) throws -> Bool {
        let pushed = ProcessStatistics.now()
        job.push(gradients, statistics: statistics, on: links)
        let stopped = try job.receiveParameters(links, into: parameters)
        summary.steps += 1
        summary.computeSeconds += pushed - lastReply
        lastReply = ProcessStatistics.now()
        summary.exchangeSeconds += lastReply - pushed
        // The job's last step: the worker's CPU time is complete.
        if stopped { summary.cpuSeconds = ProcessStatistics.cpuSeconds() - cpuAtStart }
        return !stopped
    }

    /// Closes the streams (the ps close theirs in turn).
    func close() {
        for link in links { link.close() }
        links = []
    }
}
