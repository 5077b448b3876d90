/// One contiguous, zero-initialised Float32 allocation.
///
/// Parameters, gradients and optimizer state each live in one arena so that a gradient all-reduce or an optimizer
/// update is one call or one loop over one buffer; layers only keep (offset, count) views into it.
public final class FlatArena: @unchecked Sendable {
    public let count: Int
    public let base: UnsafeMutablePointer<Float>

    public init(count: Int) {
        self.count = count
        base = .allocate(capacity: max(count, 1))
        base.initialize(repeating: 0, count: max(count, 1))
    }

    deinit { base.deallocate() }

    public var buffer: UnsafeMutableBufferPointer<Float> { UnsafeMutableBufferPointer(start: base, count: count) }

    public func zero() { base.update(repeating: 0, count: count) }

    public func copy(from other: FlatArena) {
        precondition(other.count == count, "arena sizes differ")
        base.update(from: other.base, count: count)
    }

    public subscript(index: Int) -> Float {
        get { base[index] }
        set { base[index] = newValue }
    }

    public var array: [Float] { Array(buffer) }

    /// FNV-1a over the bits of `arenas`, in order: equal only when every value is bit for bit the same.
    public static func bitHash(_ arenas: [FlatArena]) -> UInt64 {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for arena in arenas {
            for i in 0..<arena.count { hash = (hash ^ UInt64(arena.base[i].bitPattern)) &* 0x100_0000_01b3 }
        }
        return hash
    }
}

/// A named slice of an arena: what a layer holds instead of its own storage.
public struct ArenaView: Sendable, Equatable {
    public let name: String
    public let offset: Int
    public let shape: [Int]
    public var count: Int { shape.reduce(1, *) }

    public init(name: String, offset: Int, shape: [Int]) {
        self.name = name
        self.offset = offset
        self.shape = shape
    }
}
