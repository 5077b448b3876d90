import CMPI
import TandemCore

/// One gradient bucket's all-reduce, made of persistent point-to-point requests that every step only restarts:
/// the recursive doubling of `MPICommunicator.allreduceSum` (Note [All-reduce without allocation]), cut into steps
/// that advance as their messages arrive, while backward goes on. Open MPI's MPI_Iallreduce mallocs a schedule on
/// every call, and even its persistent MPIX_Allreduce_init reallocs a request array on every round (libnbc), so a
/// bucketed step allocated 10 times per rank (2 with MPIX); made once here, a step allocates nothing.
///
/// Each step is one or two requests (a send of the bucket and a receive into the bucket's own scratch, or a lone
/// send or receive for the ranks beyond the largest power of two, which fold their bucket into a partner's and get
/// the sum back), and whether the received values are then added.
final class BucketExchange {
    let buffer: UnsafeMutablePointer<Float>
    let count: Int
    private let received: UnsafeMutablePointer<Float>
    private let requests: UnsafeMutablePointer<MPI_Request?>
    /// Step s uses requests[firstRequest[s] ..< firstRequest[s + 1]] and adds `received` afterwards when adds[s].
    private var firstRequest: [Int] = [0]
    private var adds: [Bool] = []
    /// Steps finished in the current exchange (all of them when none is running).
    private var done = 0

    /// Makes the requests for `buffer` (`count` floats) among the `size` ranks of `world`, `tag` apart from every
    /// other message (one tag per bucket: buckets are in flight together).
    init(buffer: UnsafeMutablePointer<Float>, count: Int, rank: Int, size: Int, tag: Int32, world: MPI_Comm) throws {
        self.buffer = buffer
        self.count = count
        received = .allocate(capacity: max(count, 1))
        var powerOfTwo = 1
        while powerOfTwo * 2 <= size { powerOfTwo *= 2 }
        let extra = size - powerOfTwo
        var rounds = 0
        while 1 << rounds < powerOfTwo { rounds += 1 }
        requests = .allocate(capacity: 2 * rounds + 2)
        var made = 0
        func make(send: Bool, into: UnsafeMutablePointer<Float>? = nil, partner: Int) throws {
            let peer = Int32(partner), length = Int32(count), float = tandem_mpi_float()
            let code = send ? MPI_Send_init(buffer, length, float, peer, tag, world, requests + made)
                            : MPI_Recv_init(into ?? received, length, float, peer, tag, world, requests + made)
            try MPICommunicator.check(code, "preparing a \(count)-float gradient bucket's exchange with rank \(partner)")
            made += 1
        }
        func endStep(adding: Bool) {
            firstRequest.append(made)
            adds.append(adding)
        }
        if rank >= powerOfTwo {
            try make(send: true, partner: rank - powerOfTwo)
            endStep(adding: false)
            try make(send: false, into: buffer, partner: rank - powerOfTwo)
            endStep(adding: false)
        } else {
            if rank < extra {
                try make(send: false, partner: rank + powerOfTwo)
                endStep(adding: true)
            }
            for round in 0..<rounds {
                try make(send: true, partner: rank ^ (1 << round))
                try make(send: false, partner: rank ^ (1 << round))
                endStep(adding: true)
            }
            if rank < extra {
                try make(send: true, partner: rank + powerOfTwo)
                endStep(adding: false)
            }
        }
        done = adds.count
    }

    deinit {
        for index in 0..<firstRequest[adds.count] where requests[index] != nil { MPI_Request_free(requests + index) }
        requests.deallocate()
        received.deallocate()
    }

    /// Starts the exchange of the bucket's current values.
    func start() throws {
        precondition(done == adds.count, "a gradient bucket restarted before its exchange finished")
        guard !adds.isEmpty else { return }
        done = 0
        let code = startStep()
        // The message is built only on failure: an interpolated string allocates.
        if code != MPI_SUCCESS { try MPICommunicator.check(code, "starting a \(count)-float gradient bucket's exchange") }
    }

    /// Advances the exchange as far as the messages that have arrived allow (`wait`: to its end). Returns MPI's
    /// error code (MPI_SUCCESS when all went well), for `MPICommunicator`'s checking wrapper.
    func advance(wait: Bool) -> Int32 {
        while done < adds.count {
            let first = firstRequest[done], pending = requests + first, length = Int32(firstRequest[done + 1] - first)
            var finished: Int32 = 1
            let code = wait ? MPI_Waitall(length, pending, nil) : MPI_Testall(length, pending, &finished, nil)
            if code != MPI_SUCCESS { return code }
            if finished == 0 { return MPI_SUCCESS }
            if adds[done] { for i in 0..<count { buffer[i] += received[i] } }
            done += 1
            if done < adds.count {
                let code = startStep()
                if code != MPI_SUCCESS { return code }
            }
        }
        return MPI_SUCCESS
    }

    /// Starts step `done`'s requests; returns MPI's error code.
    private func startStep() -> Int32 {
        let first = firstRequest[done]
        return MPI_Startall(Int32(firstRequest[done + 1] - first), requests + first)
    }
}
