import CMPI
import Foundation
import Synchronization
import TandemCore

/// One MPI rank of MPI_COMM_WORLD as a `Communicator`: with StallInspector.swift, the only code that talks to MPI.
///
/// Errors come back as return codes (MPI_ERRORS_RETURN) and become `TandemError`s naming the operation. MPI itself
/// never times out: the stall inspector reports (and by default ends the job) when one collective has waited too
/// long, naming the ranks that have not reached it.
public final class MPICommunicator: Communicator {
    /// How all-reduced floats travel: as float32, or rounded to bfloat16 (half the bytes, 8 significant bits).
    public enum WireType: String, CaseIterable, Sendable {
        case float32, bf16
    }

    public let rank: Int
    public let size: Int
    public let wireType: WireType
    private let world: MPI_Comm
    private let stallInspector: StallInspector
    /// bf16 staging buffer, grown (rarely) to the largest all-reduce seen.
    private var wireBuffer: UnsafeMutablePointer<UInt16>?
    private var wireCapacity = 0
    /// Receive buffer of the all-reduce and the fixed-tree sum (see `scratch(count:)`).
    private var scratchBuffer: UnsafeMutablePointer<Float>?
    private var scratchCapacity = 0
    /// The gradient buckets' exchanges, in the order a step starts them: made when a bucket is first started,
    /// restarted by every later step (see `BucketExchange`).
    private var bucketExchanges: [BucketExchange] = []
    private var bucketsInFlight = 0
    private static let maxBuckets = 256

    /// True when this process was started by mpirun (OpenMPI or any PMIx launcher); otherwise Tandem runs as one
    /// process without touching MPI.
    public static var isLaunchedByMPI: Bool {
        let environment = ProcessInfo.processInfo.environment
        return environment["OMPI_COMM_WORLD_SIZE"] != nil || environment["PMIX_RANK"] != nil
    }

    /// - Parameters:
    ///   - stallTimeoutSeconds: how long one collective may wait before the stall inspector reports (0: never).
    ///   - stallAction: end the job (`.abort`) or only report (`.warn`).
    public init(stallTimeoutSeconds: Double = 60, stallAction: StallAction = .abort, wireType: WireType = .float32) throws {
        self.wireType = wireType
        var provided: Int32 = 0
        var initialized: Int32 = 0
        try Self.check(MPI_Initialized(&initialized), "MPI_Initialized")
        if initialized == 0 {
            // The stall inspector's thread talks to the other ranks while the training thread is inside a collective;
            // without it, MPI is only ever called from this thread.
            let level = stallTimeoutSeconds > 0 ? MPI_THREAD_MULTIPLE : MPI_THREAD_FUNNELED
            try Self.check(MPI_Init_thread(nil, nil, Int32(level), &provided), "MPI_Init_thread")
            guard provided >= level else {
                throw TandemError(.communication, "this MPI library does not support MPI_THREAD_MULTIPLE, which the stall inspector needs (--stall-timeout 0 turns it off)")
            }
        }
        world = tandem_mpi_comm_world()
        try Self.check(MPI_Comm_set_errhandler(world, tandem_mpi_errors_return()), "MPI_Comm_set_errhandler")
        var rank: Int32 = 0, size: Int32 = 0
        try Self.check(MPI_Comm_rank(world, &rank), "MPI_Comm_rank")
        try Self.check(MPI_Comm_size(world, &size), "MPI_Comm_size")
        self.rank = Int(rank)
        self.size = Int(size)
        stallInspector = try StallInspector(world: world, rank: Int(rank), size: Int(size), timeoutSeconds: stallTimeoutSeconds, action: stallAction)
    }

    deinit {
        wireBuffer?.deallocate()
        scratchBuffer?.deallocate()
    }

    /// Note [All-reduce without allocation]: Open MPI 4.1's MPI_Allreduce (coll/tuned, which picks its ring for a
    /// gradient arena) mallocs a temporary buffer on every call, so every step allocated once per rank. This is
    /// recursive doubling instead — at distance d = 1, 2, 4, ... each rank swaps its whole buffer with rank ⊕ d
    /// (one MPI_Sendrecv) and adds — receiving into `scratch`, allocated once; ranks beyond the largest power of
    /// two first fold their buffer into a partner's and get the result back at the end. Both partners of a swap
    /// add the same two numbers, and float addition commutes, so every rank ends with the same bits, as
    /// MPI_Allreduce guarantees. Cost, 2 ranks, the mlp's 15,912 floats in shared memory: the trainer's median
    /// all-reduce 16.6 µs against MPI_Allreduce's 14.9 µs (7 alternating runs; MPI adds with AVX-512 kernels, this
    /// loop compiles for baseline x86-64; MPI_Reduce_local measured no faster).
    public func allreduceSum(_ buffer: UnsafeMutablePointer<Float>, count: Int) throws {
        try recursiveDoublingSum(buffer, count: count, datatype: tandem_mpi_float(), elementBytes: 4) { into, from, count in
            let sum = into.assumingMemoryBound(to: Float.self), other = from.assumingMemoryBound(to: Float.self)
            for i in 0..<count { sum[i] += other[i] }
        }
    }

    /// The exchange of Note [All-reduce without allocation], for any element type: `add(into, from, count)` adds
    /// `count` received elements into the buffer's.
    private func recursiveDoublingSum(
        _ buffer: UnsafeMutableRawPointer, count: Int, datatype: MPI_Datatype?, elementBytes: Int,
        add: (UnsafeMutableRawPointer, UnsafeRawPointer, Int) -> Void
    ) throws {
        guard size > 1 else { return }
        let received = UnsafeMutableRawPointer(scratch(count: (count * elementBytes + 3) / 4))
        var powerOfTwo = 1
        while powerOfTwo * 2 <= size { powerOfTwo *= 2 }
        let extra = size - powerOfTwo, length = Int32(count)
        try collective(.allreduce, count: count) {
            if rank >= powerOfTwo {
                let code = MPI_Send(buffer, length, datatype, Int32(rank - powerOfTwo), 8, world)
                if code != MPI_SUCCESS { return code }
                return MPI_Recv(buffer, length, datatype, Int32(rank - powerOfTwo), 8, world, tandem_mpi_status_ignore())
            }
            if rank < extra {
                let code = MPI_Recv(received, length, datatype, Int32(rank + powerOfTwo), 8, world, tandem_mpi_status_ignore())
                if code != MPI_SUCCESS { return code }
                add(buffer, received, count)
            }
            var distance = 1
            while distance < powerOfTwo {
                let partner = Int32(rank ^ distance)
                let code = MPI_Sendrecv(buffer, length, datatype, partner, 8, received, length, datatype, partner, 8, world,
                                        tandem_mpi_status_ignore())
                if code != MPI_SUCCESS { return code }
                add(buffer, received, count)
                distance *= 2
            }
            return rank < extra ? MPI_Send(buffer, length, datatype, Int32(rank + powerOfTwo), 8, world) : MPI_SUCCESS
        }
    }

    /// The receive buffer of the all-reduce and the fixed-tree sum, grown (rarely) to the largest request seen.
    private func scratch(count: Int) -> UnsafeMutablePointer<Float> {
        if count > scratchCapacity || scratchBuffer == nil {
            scratchBuffer?.deallocate()
            scratchBuffer = .allocate(capacity: max(count, 1))
            scratchCapacity = count
        }
        return scratchBuffer!
    }

    public func allreduceGradients(_ buffer: UnsafeMutablePointer<Float>, count: Int, exactTail: Int) throws {
        guard wireType == .bf16 else { return try allreduceSum(buffer, count: count) }
        let compressed = count - exactTail
        if compressed > wireCapacity {
            wireBuffer?.deallocate()
            wireBuffer = .allocate(capacity: compressed)
            wireCapacity = compressed
        }
        let wire = wireBuffer!
        convertToBFloat16(buffer, wire, count: compressed)
        // Added in float and rounded back, as the sum of two bfloat16 values; commutative, so ranks agree bit for bit.
        try recursiveDoublingSum(wire, count: compressed, datatype: tandem_mpi_uint16(), elementBytes: 2) { into, from, count in
            let sum = into.assumingMemoryBound(to: UInt16.self), other = from.assumingMemoryBound(to: UInt16.self)
            for i in 0..<count { sum[i] = bfloat16Bits(floatFromBFloat16Bits(sum[i]) + floatFromBFloat16Bits(other[i])) }
        }
        convertFromBFloat16(wire, buffer, count: compressed)
        if exactTail > 0 { try allreduceSum(buffer + compressed, count: exactTail) }
    }

    public func startGradientBucket(_ buffer: UnsafeMutablePointer<Float>, count: Int) throws {
        guard bucketsInFlight < Self.maxBuckets else {
            throw TandemError(.usage, "more than \(Self.maxBuckets) gradient buckets in one step; use a larger bucket size")
        }
        let slot = bucketsInFlight
        if slot == bucketExchanges.count || bucketExchanges[slot].buffer != buffer || bucketExchanges[slot].count != count {
            // A bucket not seen in this place before (the first step, or buckets laid out anew): make its exchange.
            let exchange = try BucketExchange(buffer: buffer, count: count, rank: rank, size: size, tag: Int32(1000 + slot), world: world)
            if slot == bucketExchanges.count { bucketExchanges.append(exchange) } else { bucketExchanges[slot] = exchange }
        }
        try bucketExchanges[slot].start()
        bucketsInFlight += 1
    }

    public func progressGradientBuckets() throws {
        for slot in 0..<bucketsInFlight {
            let code = bucketExchanges[slot].advance(wait: false)
            if code != MPI_SUCCESS { try Self.check(code, "progressing gradient buckets") }
        }
    }

    public func finishGradientBuckets() throws {
        guard bucketsInFlight > 0 else { return }
        let count = bucketsInFlight
        bucketsInFlight = 0
        try collective(.allreduce, count: count) {
            for slot in 0..<count {
                let code = bucketExchanges[slot].advance(wait: true)
                if code != MPI_SUCCESS { return code }
            }
            return MPI_SUCCESS
        }
    }

    /// Binary tree by rank: at stride s, rank r (a multiple of 2s) receives rank r + s's partial sum and adds it;
    /// the total ends on rank 0 and is broadcast. Float addition commutes, so only the tree's shape matters.
    public func treeAllreduceSum(_ buffer: UnsafeMutablePointer<Float>, count: Int) throws {
        let partial = scratch(count: count)
        try collective(.allreduce, count: count) {
            var stride = 1
            while stride < size {
                if rank % (2 * stride) == 0 {
                    let partner = rank + stride
                    if partner < size {
                        let code = MPI_Recv(partial, Int32(count), tandem_mpi_float(), Int32(partner), 7, world, tandem_mpi_status_ignore())
                        if code != MPI_SUCCESS { return code }
                        for i in 0..<count { buffer[i] += partial[i] }
                    }
                } else {
                    let code = MPI_Send(buffer, Int32(count), tandem_mpi_float(), Int32(rank - stride), 7, world)
                    if code != MPI_SUCCESS { return code }
                    break
                }
                stride *= 2
            }
            return MPI_Bcast(buffer, Int32(count), tandem_mpi_float(), 0, world)
        }
    }

    public func broadcast(_ buffer: UnsafeMutablePointer<Float>, count: Int, root: Int) throws {
        try collective(.broadcast, count: count) {
            MPI_Bcast(buffer, Int32(count), tandem_mpi_float(), Int32(root), world)
        }
    }

    public func allgather(_ bytes: [UInt8]) throws -> [[UInt8]] {
        var lengths = [Int32](repeating: 0, count: size)
        var myLength = Int32(bytes.count)
        try collective(.allgather, count: 1) {
            MPI_Allgather(&myLength, 1, tandem_mpi_int32(), &lengths, 1, tandem_mpi_int32(), world)
        }
        var offsets = [Int32](repeating: 0, count: size)
        for r in 1..<max(size, 1) { offsets[r] = offsets[r - 1] + lengths[r - 1] }
        var gathered = [UInt8](repeating: 0, count: Int(lengths.reduce(0, +)))
        var send = bytes
        try collective(.allgather, count: bytes.count) {
            MPI_Allgatherv(&send, myLength, tandem_mpi_byte(), &gathered, &lengths, &offsets, tandem_mpi_byte(), world)
        }
        return (0..<size).map { Array(gathered[Int(offsets[$0])..<Int(offsets[$0] + lengths[$0])]) }
    }

    public var agreementFields: [(name: String, value: String)] { [("allreduce_dtype", wireType.rawValue)] }

    public func barrier() throws {
        try collective(.barrier, count: 0) { MPI_Barrier(world) }
    }

    /// Ends the job on every rank: for a failure only this rank saw (a bad shard, a full disk).
    public func abort(code: Int32 = 1) -> Never {
        MPI_Abort(world, code)
        exit(code)
    }

    public func noteProgress(step: Int, phase: StepPhase) { stallInspector.note(step: step, phase: phase) }

    public func observeStalls(_ observer: @escaping @Sendable ([String: Any]) -> Void) { stallInspector.observer = observer }

    public func finalize() {
        stallInspector.stop()
        bucketExchanges = []   // their requests are freed before MPI ends
        MPI_Finalize()
    }

    private func collective(_ kind: CollectiveKind, count: Int, _ call: () -> Int32) throws {
        stallInspector.begin(kind, count: count)
        let code = call()
        stallInspector.end()
        if code != MPI_SUCCESS { try Self.check(code, kind.describe(count: count)) }
    }

    static func check(_ code: Int32, _ what: String) throws {
        guard code != MPI_SUCCESS else { return }
        var text = [CChar](repeating: 0, count: Int(MPI_MAX_ERROR_STRING))
        var length: Int32 = 0
        MPI_Error_string(code, &text, &length)
        throw TandemError(.communication, "\(what) failed: \(String(decoding: text.prefix(Int(length)).map { UInt8(bitPattern: $0) }, as: UTF8.self))")
    }
}

/// What a collective was, kept as two numbers so that recording it costs no allocation per step.
enum CollectiveKind: Int {
    case allreduce = 1, broadcast, allgather, barrier

    func describe(count: Int) -> String {
        switch self {
        case .allreduce: return "all-reduce of \(count) floats"
        case .broadcast: return "broadcast of \(count) floats"
        case .allgather: return "all-gather of \(count) bytes"
        case .barrier: return "barrier"
        }
    }
}
