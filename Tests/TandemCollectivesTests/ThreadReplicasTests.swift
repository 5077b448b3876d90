import Foundation
import TandemCore
import TandemCollectives
import TandemTrain
import Testing

/// The in-process replica threads: their collectives, and how a failing or missing replica stops the others.
struct ThreadReplicasTests {
    @Test(arguments: [1, 2, 3, 5])
    func allreduceSumsEveryReplicasBuffer(replicas: Int) throws {
        let count = 1001 // not a multiple of the replica count: uneven chunks
        let results = try ThreadReplicas.run(count: replicas, timeoutSeconds: 30) { replica, communicator -> [[Float]] in
            var buffer = (0..<count).map { Float($0 * (replica + 1)) }
            var rounds: [[Float]] = []
            for _ in 0..<3 {
                try buffer.withUnsafeMutableBufferPointer { try communicator.allreduceSum($0.baseAddress!, count: count) }
                rounds.append(buffer)
            }
            #expect(communicator.size == replicas && communicator.rank == replica)
            return rounds
        }
        // Replica r starts with i·(r+1); the sum over replicas is i·R(R+1)/2, and each later round multiplies by R.
        let factor = Float(replicas * (replicas + 1) / 2)
        for (round, values) in results.enumerated() {
            let scale = factor * pow(Float(replicas), Float(round))
            for i in [0, 1, 500, 1000] { #expect(values[i] == Float(i) * scale) }
        }
    }

    @Test func broadcastAndAllgatherReachEveryReplica() throws {
        _ = try ThreadReplicas.run(count: 3, timeoutSeconds: 30) { replica, communicator -> Int in
            var buffer: [Float] = [Float(replica), Float(replica * 10)]
            try buffer.withUnsafeMutableBufferPointer { try communicator.broadcast($0.baseAddress!, count: 2, root: 0) }
            #expect(buffer == [0, 0])
            let gathered = try communicator.allgather(Array(repeating: UInt8(replica), count: replica + 1))
            #expect(gathered == [[0], [1, 1], [2, 2, 2]])
            try communicator.barrier()
            return replica
        }
    }

    /// Many back-to-back exchanges of every kind: catches a replica reusing a slot another has not read yet.
    @Test func repeatedCollectivesStayConsistent() throws {
        _ = try ThreadReplicas.run(count: 4, timeoutSeconds: 30) { replica, communicator -> Int in
            var value: [Float] = [Float(replica)]
            for round in 0..<300 {
                let gathered = try communicator.allgather([UInt8(replica), UInt8(round % 256)])
                #expect(gathered == (0..<4).map { [UInt8($0), UInt8(round % 256)] })
                value[0] = Float(replica + round)
                try value.withUnsafeMutableBufferPointer { try communicator.allreduceSum($0.baseAddress!, count: 1) }
                #expect(value[0] == Float(6 + 4 * round))
            }
            return replica
        }
    }

    @Test func aFailingReplicaStopsTheOthersWithItsError() throws {
        let error = #expect(throws: TandemError.self) {
            _ = try ThreadReplicas.run(count: 3, timeoutSeconds: 30) { replica, communicator -> Int in
                var value: [Float] = [1]
                for step in 0..<100 {
                    if replica == 2 && step == 5 { throw TandemError(.badInput, "shard of replica 2 is unreadable") }
                    try value.withUnsafeMutableBufferPointer { try communicator.allreduceSum($0.baseAddress!, count: 1) }
                }
                return replica
            }
        }
        #expect(error?.message == "shard of replica 2 is unreadable")
    }

    @Test func aReplicaThatNeverArrivesIsNamedAfterTheTimeout() throws {
        let started = Date()
        let error = #expect(throws: TandemError.self) {
            _ = try ThreadReplicas.run(count: 2, timeoutSeconds: 0.5) { replica, communicator -> Int in
                communicator.noteProgress(step: 7, phase: .forward)
                if replica == 1 { Thread.sleep(forTimeInterval: 3); return 1 }
                var value: [Float] = [1]
                try value.withUnsafeMutableBufferPointer { try communicator.allreduceSum($0.baseAddress!, count: 1) }
                return 0
            }
        }
        #expect(error?.message.contains("stall: replica 1 (last at step 7, forward) did not reach the exchange") == true, "\(String(describing: error))")
        #expect(Date().timeIntervalSince(started) < 10)
    }
}
