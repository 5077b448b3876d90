import Foundation
import Testing

extension EndToEnd {
    /// `--reduction-groups 4`: the same parameters bit for bit whatever the number of ranks and threads.
    @Suite struct ReductionGroupsTests {
        let work: URL
        let arguments = ["train", "configs/fashion-mnist-mlp.json", "--batch-size", "128", "--reduction-groups", "4", "--progress", "silent"]

        init() throws {
            work = try TandemProcess.temporaryDirectory()
        }

        private func checkpoint(_ folder: String, epoch: Int) throws -> Data {
            try Data(contentsOf: work.appendingPathComponent("\(folder)/epoch-000\(epoch).safetensors"))
        }

        @Test func everyLayoutOfReplicasTrainsTheSameBits() throws {
            let one = try TandemProcess.run(arguments + ["--epochs", "1", "--checkpoint-dir", work.appendingPathComponent("one").path])
            #expect(one.status == 0, "\(one.stderr)")
            let reference = try checkpoint("one", epoch: 1)
            let layouts: [(name: String, ranks: Int, threads: Int)] = [("2-ranks", 2, 1), ("4-ranks", 4, 1), ("2-threads", 1, 2), ("2x2", 2, 2)]
            for layout in layouts {
                let run = arguments + ["--epochs", "1", "--replicas", String(layout.threads), "--checkpoint-dir", work.appendingPathComponent(layout.name).path]
                let outcome = layout.ranks > 1 ? try TandemProcess.mpirun(ranks: layout.ranks, run) : try TandemProcess.run(run)
                #expect(outcome.status == 0, "\(layout.name): \(outcome.stderr)")
                #expect(try checkpoint(layout.name, epoch: 1) == reference, "\(layout.name) differs from one process")
            }
        }

        @Test func resumingAtAnotherRankCountContinuesBitIdentically() throws {
            let straight = work.appendingPathComponent("straight").path, resumed = work.appendingPathComponent("resumed").path
            #expect(try TandemProcess.run(arguments + ["--epochs", "2", "--checkpoint-dir", straight]).status == 0)
            #expect(try TandemProcess.run(arguments + ["--epochs", "1", "--checkpoint-dir", resumed]).status == 0)
            let second = try TandemProcess.mpirun(ranks: 2, arguments + ["--epochs", "2", "--checkpoint-dir", resumed, "--resume", "latest"])
            #expect(second.status == 0, "\(second.stderr)")
            #expect(try checkpoint("straight", epoch: 2) == checkpoint("resumed", epoch: 2))
        }

        @Test func groupsThatDoNotSplitAmongTheReplicasAreRefused() throws {
            let outcome = try TandemProcess.run(arguments + ["--epochs", "1", "--replicas", "8"])
            #expect(outcome.status == 1)
            #expect(outcome.stderr.contains("training.reduction_groups 4 is not a multiple of the 8 replicas"), "\(outcome.stderr)")
        }
    }
}
