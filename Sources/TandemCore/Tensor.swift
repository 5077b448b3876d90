#if canImport(Glibc)
import Glibc
#endif

/// A Float32 tensor: a shape and its row-major scalars. The gradient tape works on these; the training hot path
/// works on arenas and pointers instead and never allocates a Tensor.
public struct Tensor: Sendable, Equatable, CustomStringConvertible {
    public var shape: [Int]
    public var scalars: [Float]

    public init(shape: [Int], scalars: [Float]) {
        precondition(shape.reduce(1, *) == scalars.count, "shape \(shape) does not hold \(scalars.count) scalars")
        self.shape = shape
        self.scalars = scalars
    }

    public init(_ scalar: Float) { self.init(shape: [], scalars: [scalar]) }
    public init(_ vector: [Float]) { self.init(shape: [vector.count], scalars: vector) }
    public init(zeros shape: [Int]) { self.init(shape: shape, scalars: Array(repeating: 0, count: shape.reduce(1, *))) }

    /// Glorot (Xavier) uniform: U(−l, l) with l = √(6 / (fanIn + fanOut)), Keras's default for Dense kernels.
    public static func glorotUniform(fanIn: Int, fanOut: Int, generator: inout SeededGenerator) -> Tensor {
        let limit = (6 / Float(fanIn + fanOut)).squareRoot()
        let scalars = (0..<fanIn * fanOut).map { _ in (2 * generator.nextUnitFloat() - 1) * limit }
        return Tensor(shape: [fanIn, fanOut], scalars: scalars)
    }

    public var count: Int { scalars.count }
    public var scalar: Float { scalars[0] }

    public var description: String { "Tensor(shape: \(shape), scalars: \(scalars.prefix(8))\(count > 8 ? "…" : ""))" }
}
