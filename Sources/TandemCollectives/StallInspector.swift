import CMPI
import Foundation
import Synchronization
import TandemCore

/// A stall timeout as a finite wait: 0 ("never") becomes a bound no job outlives, for the waits that need one.
public func finiteWait(stallTimeoutSeconds seconds: Double) -> Double { seconds > 0 ? seconds : 1e9 }

public enum StallAction: String, CaseIterable, Sendable {
    case abort, warn
}

/// Knows, when a collective is stuck, who is missing and what they were doing (Horovod's stall inspector, told
/// more): every rank posts its last step and phase to rank 0 over a side channel — a duplicate of MPI_COMM_WORLD
/// used only by a background thread, a hundred times a second, never by the stuck collective itself. When one collective
/// has waited `timeoutSeconds`, rank 0 names the ranks behind it, the step each last reached and what each was
/// doing, tells the observer (the metrics file), and ends the job (or only warns). If rank 0 itself is the one
/// stuck, the others end the job after a grace period with what they know.
final class StallInspector: @unchecked Sendable {
    private let rank: Int
    private let size: Int
    private let timeoutSeconds: Double
    private let action: StallAction
    private var channel: MPI_Comm?

    /// This rank's progress, written by the training thread (two relaxed stores per phase).
    private let step = Atomic<Int>(0)
    private let phase = Atomic<Int>(0)
    /// The collective in flight: start time (0: none), kind and size, and a count of collectives so far.
    private let startedNanoseconds = Atomic<UInt64>(0)
    private let kind = Atomic<Int>(0)
    private let count = Atomic<Int>(0)
    private let collectives = Atomic<Int>(0)
    private let running = Atomic<Bool>(true)
    private let finished = DispatchSemaphore(value: 0)
    /// Rank 0's view of everyone: last step, phase, and when it was heard (monotonic seconds).
    private var reports: [(step: Int, phase: Int, heard: Double)]
    var observer: (@Sendable ([String: Any]) -> Void)?

    init(world: MPI_Comm, rank: Int, size: Int, timeoutSeconds: Double, action: StallAction) throws {
        self.rank = rank
        self.size = size
        self.timeoutSeconds = timeoutSeconds
        self.action = action
        reports = Array(repeating: (0, 0, ProcessStatistics.now()), count: size)
        guard timeoutSeconds > 0 else {
            finished.signal()
            return
        }
        var duplicate: MPI_Comm?
        guard MPI_Comm_dup(world, &duplicate) == MPI_SUCCESS else { throw TandemError(.communication, "MPI_Comm_dup failed") }
        channel = duplicate
        let thread = Thread { [self] in
            run()
            finished.signal()
        }
        thread.name = "tandem-stall-inspector"
        thread.start()
    }

    @inline(__always) func note(step: Int, phase: StepPhase) {
        self.step.store(step, ordering: .relaxed)
        self.phase.store(Int(phase.rawValue), ordering: .relaxed)
    }

    func begin(_ kind: CollectiveKind, count: Int) {
        self.kind.store(kind.rawValue, ordering: .relaxed)
        self.count.store(count, ordering: .relaxed)
        collectives.add(1, ordering: .relaxed)
        startedNanoseconds.store(DispatchTime.now().uptimeNanoseconds, ordering: .releasing)
    }

    func end() { startedNanoseconds.store(0, ordering: .releasing) }

    /// Stops the thread; rank 0 first drains what is still in flight, so MPI_Finalize finds nothing pending.
    func stop() {
        guard running.exchange(false, ordering: .acquiringAndReleasing) else { return }
        finished.wait()
        if let channel { var comm: MPI_Comm? = channel; MPI_Comm_free(&comm) }
    }

    private func run() {
        guard let channel else { return }
        var message = [Int64](repeating: 0, count: 3)
        var lastPost = 0.0
        var reported = 0 // the collective number already reported (warn mode reports each stall once)
        while running.load(ordering: .relaxed) {
            let now = ProcessStatistics.now()
            if rank != 0, now - lastPost >= 0.01 {
                message[0] = Int64(rank)
                message[1] = Int64(step.load(ordering: .relaxed))
                message[2] = Int64(phase.load(ordering: .relaxed))
                MPI_Send(&message, 3, tandem_mpi_int64(), 0, 11, channel)
                lastPost = now
            }
            if rank == 0 {
                reports[0] = (step.load(ordering: .relaxed), phase.load(ordering: .relaxed), now)
                var pending: Int32 = 0
                while MPI_Iprobe(Int32(MPI_ANY_SOURCE), 11, channel, &pending, tandem_mpi_status_ignore()) == MPI_SUCCESS, pending != 0 {
                    MPI_Recv(&message, 3, tandem_mpi_int64(), Int32(MPI_ANY_SOURCE), 11, channel, tandem_mpi_status_ignore())
                    let from = Int(message[0])
                    if (0..<size).contains(from) { reports[from] = (Int(message[1]), Int(message[2]), now) }
                }
            }
            let started = startedNanoseconds.load(ordering: .acquiring)
            let number = collectives.load(ordering: .relaxed)
            if started != 0, number != reported {
                let waited = Double(DispatchTime.now().uptimeNanoseconds - started) / 1e9
                // Rank 0 reports; the others only step in when rank 0 has had time to and has not ended the job.
                if waited > timeoutSeconds + (rank == 0 ? 0 : 2 + timeoutSeconds / 2) {
                    reported = number
                    report(waited: waited)
                }
            }
            Thread.sleep(forTimeInterval: 0.02)
        }
        if rank == 0 {
            // Receive what the others sent before they stopped, so MPI_Finalize finds nothing unmatched.
            let deadline = ProcessStatistics.now() + 0.3
            while ProcessStatistics.now() < deadline {
                var pending: Int32 = 0
                MPI_Iprobe(Int32(MPI_ANY_SOURCE), 11, channel, &pending, tandem_mpi_status_ignore())
                if pending != 0 { MPI_Recv(&message, 3, tandem_mpi_int64(), Int32(MPI_ANY_SOURCE), 11, channel, tandem_mpi_status_ignore()) }
                else { Thread.sleep(forTimeInterval: 0.01) }
            }
        }
    }

    private func report(waited: Double) {
        let what = CollectiveKind(rawValue: kind.load(ordering: .relaxed))?.describe(count: count.load(ordering: .relaxed)) ?? "collective"
        let myStep = step.load(ordering: .relaxed)
        var text: String
        var record: [String: Any] = ["event": "stall", "rank": rank, "step": myStep, "waited_seconds": waited, "collective": what]
        if rank == 0 {
            let now = ProcessStatistics.now()
            // Behind: not yet at this step's exchange, or silent for longer than the stall itself.
            let behind = (1..<size).filter { r in
                let report = reports[r]
                return report.step < myStep || now - report.heard > max(1, waited / 2)
            }
            // Every rank finished the previous step's exchange (rank 0 did), so a late report still bounds the step.
            let described = behind.map { r -> String in
                let report = reports[r]
                let phaseName = StepPhase(rawValue: UInt8(clamping: report.phase))?.name ?? "starting"
                let doing = report.step >= myStep - 1 ? "last heard in step \(report.step), \(phaseName)"
                    : "it finished step \(myStep - 1)'s exchange, last heard in step \(report.step), \(phaseName)"
                return "rank \(r) (\(doing); silent for \(fixed(now - report.heard)) s)"
            }
            record["missing"] = behind.map { r in
                ["rank": r, "step": reports[r].step, "phase": StepPhase(rawValue: UInt8(clamping: reports[r].phase))?.name ?? "starting",
                 "seconds_since_report": now - reports[r].heard] as [String: Any]
            }
            text = "stall: the \(what) of step \(myStep) has waited \(fixed(waited)) s for "
                + (described.isEmpty ? "a rank that is still reporting progress" : described.joined(separator: ", "))
        } else {
            text = "stall: rank \(rank)'s \(what) of step \(myStep) has waited \(fixed(waited)) s and rank 0 has not reported it; rank 0 may be the one stuck"
        }
        observer?(record)
        switch action {
        case .warn:
            if rank == 0 { FileHandle.standardError.write(Data("tandem: warning: \(text)\n".utf8)) }
        case .abort:
            FileHandle.standardError.write(Data("tandem: error: \(text); ending the job\n".utf8))
            MPI_Abort(tandem_mpi_comm_world(), 3)
        }
    }

    private func fixed(_ value: Double) -> String { String(format: "%.1f", value) }
}
