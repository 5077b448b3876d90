import Foundation
import TandemCollectives
import TandemCore

/// A replica's step timeline (Horovod's timeline): spans recorded into buffers allocated once per epoch's worth of
/// steps, gathered from every replica at the end of each epoch and written by rank 0 as Chrome trace events (open
/// the file in Perfetto or chrome://tracing; one track per replica). Off by default; when off, the trainer does not
/// even read the clock.
public final class Timeline {
    /// The phases of a step (defined with the collectives, whose stall inspector reports them).
    public typealias Phase = StepPhase

    private let capacity: Int
    private let phases: UnsafeMutablePointer<UInt8>
    private let starts: UnsafeMutablePointer<Double>
    private let ends: UnsafeMutablePointer<Double>
    private var count = 0

    public init(capacity: Int) {
        self.capacity = capacity
        phases = .allocate(capacity: capacity)
        starts = .allocate(capacity: capacity)
        ends = .allocate(capacity: capacity)
    }

    deinit {
        phases.deallocate()
        starts.deallocate()
        ends.deallocate()
    }

    @inline(__always) public func now() -> Double { ProcessStatistics.now() }

    /// Records `phase` from `start` to now and returns now, the start of whatever comes next.
    @discardableResult @inline(__always)
    public func record(_ phase: Phase, since start: Double) -> Double {
        let end = now()
        if count < capacity {
            phases[count] = phase.rawValue
            starts[count] = start
            ends[count] = end
            count += 1
        }
        return end
    }

    /// The spans so far, as bytes for an all-gather (phase, start µs, duration µs), and forgets them.
    func drain() -> [UInt8] {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(count * 17)
        for i in 0..<count {
            bytes.append(phases[i])
            withUnsafeBytes(of: (starts[i] * 1e6).bitPattern.littleEndian) { bytes.append(contentsOf: $0) }
            withUnsafeBytes(of: ((ends[i] - starts[i]) * 1e6).bitPattern.littleEndian) { bytes.append(contentsOf: $0) }
        }
        count = 0
        return bytes
    }
}

/// The trace file on rank 0: a JSON array of trace events, valid JSON once `close()` has run (and readable by
/// Perfetto and Chrome even if a crash cut it short).
public final class TimelineWriter {
    private let handle: FileHandle
    private let path: String
    private var wroteEvent = false

    public init(path: String, replicas: Int) throws {
        guard FileManager.default.createFile(atPath: path, contents: nil), let handle = FileHandle(forWritingAtPath: path) else {
            throw TandemError(.io, "\(path): cannot create the timeline file")
        }
        self.handle = handle
        self.path = path
        try write("[\n")
        for replica in 0..<replicas {
            try event(#"{"name":"thread_name","ph":"M","pid":0,"tid":\#(replica),"args":{"name":"replica \#(replica)"}}"#)
        }
    }

    /// Appends every replica's drained spans (in rank order).
    public func append(_ replicas: [[UInt8]]) throws {
        var text = ""
        for (replica, bytes) in replicas.enumerated() {
            var offset = 0
            while offset + 17 <= bytes.count {
                let phase = Timeline.Phase(rawValue: bytes[offset]) ?? .forward
                let start = Double(bitPattern: UInt64(littleEndianBytes: bytes[offset + 1..<offset + 9]))
                let duration = Double(bitPattern: UInt64(littleEndianBytes: bytes[offset + 9..<offset + 17]))
                text += (wroteEvent || !text.isEmpty ? ",\n" : "")
                    + #"{"name":"\#(phase.name)","ph":"X","pid":0,"tid":\#(replica),"ts":\#(String(format: "%.3f", start)),"dur":\#(String(format: "%.3f", duration))}"#
                offset += 17
            }
        }
        if !text.isEmpty {
            try write(text)
            wroteEvent = true
        }
    }

    public func close() throws {
        try write("\n]\n")
        try handle.close()
    }

    private func event(_ json: String) throws {
        try write((wroteEvent ? ",\n" : "") + json)
        wroteEvent = true
    }

    private func write(_ text: String) throws {
        do {
            try handle.write(contentsOf: Data(text.utf8))
        } catch {
            throw TandemError(.io, "\(path): cannot write the timeline (\(error.localizedDescription))")
        }
    }
}

extension UInt64 {
    init(littleEndianBytes bytes: ArraySlice<UInt8>) {
        self = bytes.reversed().reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
    }
}
