import Foundation
import TandemCollectives
import TandemCore
import TandemTrain
import Testing

/// A user's loop distributed by `GradientReducer`: the sums are the single-process sums, bit for bit with groups.
struct GradientReducerTests {
    /// The gradient of global reduction group `group` of 4 (what a loop would compute on that group's rows):
    /// values of very different magnitudes, so the order of summation shows in the last bits.
    static func groupGradient(_ group: Int, count: Int) -> [Float] {
        (0..<count).map { i in Float(sin(Double(i * 7 + group * 13))) * pow(10, Float((i + group) % 7) - 3) }
    }

    /// Runs the reduction on `replicas` threads; returns replica 0's summed arena.
    static func reduced(replicas: Int, groups: Int?, count: Int = 1001) throws -> [Float] {
        try ThreadReplicas.run(count: replicas, timeoutSeconds: 30) { _, communicator in
            let parameters = FlatArena(count: count), gradients = FlatArena(count: count)
            let reducer = try GradientReducer(communicator: communicator, parameters: parameters, gradients: gradients, reductionGroups: groups)
            let total = groups ?? replicas
            let perReplica = total / replicas
            for local in 0..<reducer.localGroups {
                // Without groups each replica holds one share; with groups, its groups in global order.
                let global = communicator.rank * (groups == nil ? 1 : perReplica) + local
                let shares = groups == nil ? 4 / replicas : 1
                let values = (0..<shares).map { groupGradient(global * shares + $0, count: count) }
                gradients.zero()
                for value in values { for i in 0..<count { gradients[i] += value[i] } }
                reducer.collect(group: local)
            }
            try reducer.reduce()
            return gradients.array
        }
    }

    @Test func withReductionGroupsAnyReplicaCountSumsBitIdentically() throws {
        let one = try Self.reduced(replicas: 1, groups: 4)
        for replicas in [2, 4] {
            #expect(try Self.reduced(replicas: replicas, groups: 4).map(\.bitPattern) == one.map(\.bitPattern), "\(replicas) replicas")
        }
        // The tree really is ((g0 + g1) + (g2 + g3)), not some other order.
        let g = (0..<4).map { Self.groupGradient($0, count: 1001) }
        let tree: [UInt32] = (0..<1001).map { i in
            let left: Float = g[0][i] + g[1][i], right: Float = g[2][i] + g[3][i]
            return (left + right).bitPattern
        }
        #expect(one.map(\.bitPattern) == tree)
    }

    @Test func withoutGroupsReplicasSumToTheSingleProcessSum() throws {
        let one = try Self.reduced(replicas: 1, groups: nil)
        let two = try Self.reduced(replicas: 2, groups: nil)
        let worst = one.indices.map { i -> Float in abs(one[i] - two[i]) / max(1, abs(one[i])) }.max() ?? 0
        #expect(worst <= 1e-6)
    }

    @Test func broadcastGivesEveryReplicaRank0sParameters() throws {
        let states = try ThreadReplicas.run(count: 3, timeoutSeconds: 30) { _, communicator -> [[Float]] in
            let parameters = FlatArena(count: 17), gradients = FlatArena(count: 19), moments = FlatArena(count: 17)
            for i in 0..<17 { parameters[i] = Float(communicator.rank * 100 + i); moments[i] = Float(-communicator.rank) }
            let reducer = try GradientReducer(communicator: communicator, parameters: parameters, gradients: gradients)
            try reducer.broadcastParameters(andState: [moments])
            return try communicator.allgather((parameters.array + moments.array).withUnsafeBytes { Array($0) }).map { bytes in
                bytes.withUnsafeBytes { Array($0.bindMemory(to: Float.self)) }
            }
        }
        for state in states { #expect(state == (0..<17).map(Float.init) + Array(repeating: 0, count: 17)) }
    }

    @Test func groupsTheReplicasDoNotDivideAreRefused() throws {
        _ = try ThreadReplicas.run(count: 2, timeoutSeconds: 30) { _, communicator in
            #expect(throws: TandemError.self) {
                _ = try GradientReducer(communicator: communicator, parameters: FlatArena(count: 4), gradients: FlatArena(count: 4), reductionGroups: 3)
            }
        }
    }
}
