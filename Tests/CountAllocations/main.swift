// Counts the heap allocations of steady-state training steps, on both training paths — the fused `Trainer` (what
// `tandem train` runs) and a custom loop on the `ArenaTape` — for the 784-20-10 ReLU model on Fashion-MNIST at
// batch 64, SGD 0.1. Every step is meant to allocate nothing (ARCHITECTURE.md: "a step that allocates is a bug").
//
// It is a process of its own because the counting is process-wide: the C target CAllocationCounter defines malloc
// and its relatives in this executable, so every allocation of every thread and library (Swift runtime,
// Foundation, OpenBLAS, Open MPI) is counted. The count is read when step `first + 1` starts and when step
// `last + 1` starts, on the thread of replica 0; the replicas run in lockstep (each step ends in an all-reduce),
// so the window holds exactly `last - first` steps of every replica, plus whatever background threads (prefetch,
// stall inspector) did meanwhile. EndToEndTests.AllocationTests runs it alone and under mpirun.
//
// One process: the local strategy, then 2 replica threads. Under mpirun: every rank one replica (MPICommunicator),
// then 2 replica threads per rank (hierarchical: threads sum in shared memory, replica 0 of each rank over MPI).
// Prints one line per path and strategy and rank:
//   allocations path=tape strategy=threads replicas=2 rank=0 steps=200 count=0 per_replica_step=0.000
//
//   CountAllocations [--config FILE] [--first 100] [--last 300] [--backtraces N] [--allocate-in-step]
//                    [--rows-per-replica 64] [--bucket-size FLOATS] [--allreduce-dtype bf16] [--reduction-groups G]
// --backtraces N prints where the first N allocations inside the window come from; --allocate-in-step makes every
// step allocate once (in this harness, not in the library): the check that a step that allocates is seen.
//
// Every replica trains on 64 rows per step (the global batch is 64 × replicas), as the one process does. At 32 rows
// OpenBLAS 0.3.21 allocates inside cblas_sgemm: its SkylakeX small-matrix kernel (taken when m·n·k ≤ 10⁶) mallocs a
// packing buffer on every call when n mod 16 is 1...8 — the 784 → 20 layer. Ways around it inside Tandem measured
// slower (two calls of 11 and 9 columns: 18.6 µs instead of 12.0 µs; OpenBLAS's sgemm_direct: 19.5 µs), so that
// allocation is left to OpenBLAS; `--rows-per-replica 32 --backtraces 1` shows it.
import CAllocationCounter
import Foundation
import TandemCollectives
import TandemCore
import TandemData
import TandemNN
import TandemParameterServer
import TandemTrain

struct Options {
    var config = "configs/fashion-mnist-mlp.json"
    var first = 100
    var last = 300
    var backtraces = 0
    var allocateInStep = false
    var rowsPerReplica = 64
    /// Options of the MPI path the tests leave at their defaults: gradient buckets (fused path) and bf16 on the wire.
    var bucketFloats: Int?
    var bf16 = false
    /// `training.reduction_groups` for the fused path (with synchronized batch normalization: the lockstep pass).
    var reductionGroups: Int?
    /// This process is a worker of the parameter-server job TF_CONFIG describes: count its steps, and round trips
    /// of the transport alone (`TransportProbe`), instead of the synchronous strategies.
    var parameterServer = false

    init(_ arguments: [String]) {
        var rest = arguments.dropFirst()
        while let flag = rest.popFirst() {
            switch flag {
            case "--config": config = rest.popFirst() ?? config
            case "--first": first = rest.popFirst().flatMap(Int.init) ?? first
            case "--last": last = rest.popFirst().flatMap(Int.init) ?? last
            case "--backtraces": backtraces = rest.popFirst().flatMap(Int.init) ?? 0
            case "--allocate-in-step": allocateInStep = true
            case "--rows-per-replica": rowsPerReplica = rest.popFirst().flatMap(Int.init) ?? rowsPerReplica
            case "--bucket-size": bucketFloats = rest.popFirst().flatMap(Int.init)
            case "--allreduce-dtype": bf16 = rest.popFirst() == "bf16"
            case "--reduction-groups": reductionGroups = rest.popFirst().flatMap(Int.init)
            case "--parameter-server": parameterServer = true
            default: fatalError("usage: CountAllocations [--config FILE] [--first N] [--last N] [--backtraces N] [--allocate-in-step] [--rows-per-replica R] [--bucket-size F] [--allreduce-dtype bf16] [--reduction-groups G] [--parameter-server]")
            }
        }
        precondition(0 < first && first < last, "need 0 < --first < --last")
    }
}

/// The allocation count when the window opened and closed.
final class Window: @unchecked Sendable {
    let first: Int, last: Int, backtraces: Int, allocateInStep: Bool, bucketFloats: Int?
    private(set) var opened: Int?
    private(set) var closed: Int?

    /// The window ends by the last step of the epoch (the hybrid job's global batch of 256 has 234 steps).
    init(_ options: Options, stepsPerEpoch: Int) {
        first = options.first
        last = min(options.last, stepsPerEpoch - 1)
        precondition(last - first >= 50, "an epoch of \(stepsPerEpoch) steps leaves too short a window after step \(first)")
        backtraces = options.backtraces
        allocateInStep = options.allocateInStep
        bucketFloats = options.bucketFloats
    }

    /// Called by replica 0 as `completedSteps` steps are done and the next begins.
    func note(completedSteps: Int) {
        if completedSteps == first {
            if backtraces > 0 { tandem_allocation_backtraces(Int32(backtraces)) }
            opened = tandem_allocation_count()
        } else if completedSteps == last {
            closed = tandem_allocation_count()
            tandem_allocation_backtraces(0)
        }
    }

    func report(path: String, strategy: String, replicas: Int, rank: Int) {
        guard let opened, let closed else { fatalError("\(path)/\(strategy): the run ended before step \(last + 1)") }
        let count = closed - opened, steps = last - first
        let perStep = Double(count) / Double(steps * replicas)
        print("allocations path=\(path) strategy=\(strategy) replicas=\(replicas) rank=\(rank) steps=\(steps) count=\(count) per_replica_step=\(String(format: "%.3f", perStep))")
    }
}

/// The harness's deliberate allocation (--allocate-in-step), one sink per replica (replicas run concurrently); the
/// array is kept in an object so the optimizer cannot remove it.
final class AllocationSink {
    private(set) var kept: [Int] = []

    @inline(never) func allocate(_ step: Int) { kept = [step, step] }
}

/// Passes everything to the communicator it wraps; on replica 0 it also opens and closes the window, from the
/// progress note the trainer makes at the start of every step. The trainer is not changed for counting.
final class WindowCommunicator: Communicator {
    let inner: Communicator
    let window: Window
    private let isReplicaZeroOfProcess: Bool
    private let sink = AllocationSink()

    init(_ inner: Communicator, window: Window, isReplicaZeroOfProcess: Bool) {
        self.inner = inner
        self.window = window
        self.isReplicaZeroOfProcess = isReplicaZeroOfProcess
    }

    var rank: Int { inner.rank }
    var size: Int { inner.size }
    func allreduceSum(_ buffer: UnsafeMutablePointer<Float>, count: Int) throws { try inner.allreduceSum(buffer, count: count) }
    func allreduceGradients(_ buffer: UnsafeMutablePointer<Float>, count: Int, exactTail: Int) throws {
        try inner.allreduceGradients(buffer, count: count, exactTail: exactTail)
    }
    func startGradientBucket(_ buffer: UnsafeMutablePointer<Float>, count: Int) throws { try inner.startGradientBucket(buffer, count: count) }
    func progressGradientBuckets() throws { try inner.progressGradientBuckets() }
    func finishGradientBuckets() throws { try inner.finishGradientBuckets() }
    func treeAllreduceSum(_ buffer: UnsafeMutablePointer<Float>, count: Int) throws { try inner.treeAllreduceSum(buffer, count: count) }
    func observeStalls(_ observer: @escaping @Sendable ([String: Any]) -> Void) { inner.observeStalls(observer) }
    func broadcast(_ buffer: UnsafeMutablePointer<Float>, count: Int, root: Int) throws { try inner.broadcast(buffer, count: count, root: root) }
    func allgather(_ bytes: [UInt8]) throws -> [[UInt8]] { try inner.allgather(bytes) }
    func barrier() throws { try inner.barrier() }
    var agreementFields: [(name: String, value: String)] { inner.agreementFields }

    func noteProgress(step: Int, phase: StepPhase) {
        inner.noteProgress(step: step, phase: phase)
        guard phase == .forward else { return }
        if isReplicaZeroOfProcess { window.note(completedSteps: step - 1) }
        if window.allocateInStep { sink.allocate(step) }
    }
}

// MARK: the two paths

/// `tandem train`'s path: the fused trainer's `fit` for one epoch, set up as the CLI sets it up.
func trainFused(job: JobConfig, data: DataSource, communicator: Communicator, window: Window, isReplicaZero: Bool) throws {
    let counted = WindowCommunicator(communicator, window: window, isReplicaZeroOfProcess: isReplicaZero)
    let trainer = try Trainer(config: job, data: data, communicator: counted)
    trainer.gradientBucketFloats = window.bucketFloats
    try trainer.synchronizeReplicas()
    var options = TrainingOptions()
    options.progress = .silent
    _ = try trainer.fit(options: options)
}

/// TensorFlow's custom training loop tutorial on the arena tape, distributed the way a strategy does it: each
/// replica trains on its slice of every global batch, and the gradient arena is summed with one all-reduce.
func trainOnTape(job: JobConfig, data: DataSource, communicator: Communicator, window: Window, isReplicaZero: Bool) throws {
    let globalBatch = job.training.batchSize
    let pipeline = try BatchPipeline(examples: data.train, rows: data.trainRows, scaling: data.scaling, globalBatchSize: globalBatch,
                                     shard: (communicator.size, communicator.rank), seed: job.seed)
    let variables = ParameterArena(shapes: ["dense_0/kernel": [784, 20], "dense_0/bias": [20], "dense_1/kernel": [20, 10], "dense_1/bias": [10]])
    var generator = SeededGenerator(seed: job.seed, stream: 0x1417)
    for name in ["dense_0/kernel", "dense_1/kernel"] {
        let kernel = variables[name]
        variables.assign(kernel, Tensor.glorotUniform(fanIn: kernel.rows, fanOut: kernel.columns, generator: &generator))
    }
    try communicator.broadcast(variables.parameters.base, count: variables.count, root: 0)
    let (w1, b1, w2, b2) = (variables["dense_0/kernel"], variables["dense_0/bias"], variables["dense_1/kernel"], variables["dense_1/bias"])
    let optimizer = SGD(parameterCount: variables.count, learningRate: job.optimizer.learningRate)
    let tape = ArenaTape(variables: variables)
    var statistics = LossStatistics()
    let sink = AllocationSink()
    pipeline.startEpoch(0)
    defer { pipeline.finishEpoch() }
    while let batch = try pipeline.next(), batch.step < window.last + 1 {
        if isReplicaZero { window.note(completedSteps: batch.step) }
        if window.allocateInStep { sink.allocate(batch.step) }
        tape.reset()
        let images = tape.constant(batch.features, rows: batch.rows, columns: 784)
        let hidden = addBias(matmul(images, tape.variable(w1)), tape.variable(b1), activation: .relu)
        let logits = addBias(matmul(hidden, tape.variable(w2)), tape.variable(b2))
        let loss = sparseSoftmaxCrossEntropy(logits: logits, labels: batch.targets, globalBatchSize: globalBatch, statistics: &statistics)
        variables.zeroGradients()
        tape.backward(from: loss)
        try communicator.allreduceSum(variables.gradients.base, count: variables.count)
        optimizer.apply(parameters: variables.parameters.base, gradients: variables.gradients.base)
    }
    guard statistics.lossSum.isFinite else { throw TandemError(.numeric, "the tape loop's loss became \(statistics.lossSum)") }
}

/// A parameter-server worker (TF_CONFIG's task): first `last + 1` round trips of the transport alone, then its
/// training through `Trainer.fit` until the chief ends the job, each with its window of steps.
func countParameterServerWorker(job: JobConfig, data: DataSource, options: Options) throws {
    guard let spec = try ClusterSpec.resolve(config: job), spec.task?.type == .worker else {
        throw TandemError(.usage, "--parameter-server: TF_CONFIG must make this process a worker of \(options.config)'s cluster")
    }
    ParameterServerJob.runAsyncWorkOnEventLoops()  // as `tandem train` does
    let strategy = try ParameterServerStrategy(config: job, spec: spec)
    defer { strategy.finish() }
    let steps = data.trainRows.count / (job.training.batchSize * strategy.replicaCount)
    let transport = Window(options, stepsPerEpoch: steps)
    let probe = try strategy.makeTransportProbe()
    for step in 0...transport.last {
        transport.note(completedSteps: step)
        try probe.roundTrip()
    }
    probe.close()
    transport.report(path: "transport", strategy: "parameter-server", replicas: 1, rank: strategy.task.index)

    let window = Window(options, stepsPerEpoch: steps)
    let trainer = try Trainer(config: job, data: data, communicator: WindowCommunicator(LocalCommunicator(), window: window, isReplicaZeroOfProcess: true),
                              asynchronous: try strategy.makeAsynchronousRole())
    try trainer.synchronizeReplicas()
    var silent = TrainingOptions()
    silent.progress = .silent
    _ = try trainer.fit(options: silent)
    window.report(path: "fused", strategy: "parameter-server", replicas: 1, rank: strategy.task.index)
}

// MARK: main

BLASKernelChoice.reexecIfBetterKernelsExist()
setBLASThreads(1)
let options = Options(CommandLine.arguments)

// The counter must see allocations at all, or every "0" below would be meaningless.
let before = tandem_allocation_count()
var kept: [[Int]] = []
for i in 0..<100 { kept.append(Array(repeating: i, count: 16 + i)) }
let seen = tandem_allocation_count() - before
guard seen >= 100 else { fatalError("the allocation counter saw \(seen) allocations for \(kept.count) arrays: it is not interposed") }
print("counter check: \(seen) allocations counted for 100 arrays")

do {
    var loaded = try JobConfig.load(path: options.config)
    loaded.training.epochs = 1
    let mpi = MPICommunicator.isLaunchedByMPI ? try MPICommunicator(wireType: options.bf16 ? .bf16 : .float32) : nil
    let data = try DataSource.load(config: loaded)
    if options.parameterServer {
        try countParameterServerWorker(job: loaded, data: data, options: options)
        exit(0)
    }
    let paths: [(name: String, run: @Sendable (JobConfig, DataSource, Communicator, Window, Bool) throws -> Void)] = [
        ("fused", trainFused), ("tape", trainOnTape),
    ]
    func job(replicas: Int) -> JobConfig {
        var job = loaded
        job.training.batchSize = options.rowsPerReplica * replicas
        job.training.reductionGroups = options.reductionGroups
        return job
    }
    for path in paths {
        // One replica per process: the local strategy alone, or every rank of the mpirun job.
        let process: Communicator = mpi ?? LocalCommunicator()
        let window = Window(options, stepsPerEpoch: data.trainRows.count / job(replicas: process.size).training.batchSize)
        try path.run(job(replicas: process.size), data, process, window, true)
        window.report(path: path.name, strategy: mpi == nil ? "local" : "mpi", replicas: 1, rank: process.rank)
        // Two replica threads per process: mirrored in one process, or hybrid (threads within ranks) under mpirun.
        let pin = mpi == nil && ProcessInfo.processInfo.activeProcessorCount >= 2
        let threadJob = job(replicas: 2 * process.size)
        let threads = Window(options, stepsPerEpoch: data.trainRows.count / threadJob.training.batchSize)
        try ThreadReplicas.run(count: 2, process: mpi, pinToCores: pin) { replica, communicator in
            try path.run(threadJob, data, communicator, threads, replica == 0)
        }
        threads.report(path: path.name, strategy: mpi == nil ? "threads" : "mpi-threads", replicas: 2, rank: process.rank)
        try mpi?.barrier()
    }
    mpi?.finalize()
} catch {
    FileHandle.standardError.write(Data("CountAllocations: error: \(error)\n".utf8))
    exit(1)
}
