import TandemCore

/// What the transport alone costs a parameter-server worker's step: streams to every ps like the worker's own, the
/// same bytes each way — a push's out, a reply's back — but nothing trained (each ps answers with zeros). A worker's
/// step, measured against a round trip of this probe in the same run, shows what training adds to the exchange
/// (`CountAllocations --parameter-server` counts both).
///
/// ```swift
/// let probe = try strategy.makeTransportProbe()
/// for _ in 0..<100 { try probe.roundTrip() }
/// probe.close()
/// ```
public final class TransportProbe {
    private let job: ParameterServerJob
    private var links: [ExchangeLink]

    init(job: ParameterServerJob, worker: Int) throws {
        self.job = job
        let clients = try job.makeClients()
        links = clients.indices.map { i in
            ExchangeLink(client: clients[i], method: .echo, worker: worker, messageCapacity: job.pushBytes(i), replyBytes: job.replyBytes(i))
        }
        for (i, link) in links.enumerated() { link.outgoing.append(zeros: job.pushBytes(i)) }
    }

    /// One round trip: a push's bytes to every ps, then a reply's bytes back from each (each waited for as a worker
    /// waits for its parameters, naming a ps that does not answer).
    public func roundTrip() throws {
        for link in links { link.send() }
        for link in links { _ = try link.receive(timeoutSeconds: job.replyTimeoutSeconds) }
    }

    /// Ends the streams.
    public func close() {
        for link in links { link.close() }
        links = []
    }
}
