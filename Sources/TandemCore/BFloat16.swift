/// bfloat16: the top 16 bits of a Float32 (same exponent range, 8 significant bits). Used to halve the bytes of a
/// gradient all-reduce on the wire, as Horovod's fp16 compression does, without fp16's overflow risk.

/// Rounds to the nearest bfloat16, ties to even; NaN stays NaN.
@inlinable @inline(__always)
public func bfloat16Bits(_ value: Float) -> UInt16 {
    let bits = value.bitPattern
    if value.isNaN { return UInt16(bits >> 16) | 0x40 }
    let roundingBias: UInt32 = 0x7FFF + ((bits >> 16) & 1)
    return UInt16((bits &+ roundingBias) >> 16)
}

@inlinable @inline(__always)
public func floatFromBFloat16Bits(_ bits: UInt16) -> Float { Float(bitPattern: UInt32(bits) << 16) }

public func convertToBFloat16(_ source: UnsafePointer<Float>, _ destination: UnsafeMutablePointer<UInt16>, count: Int) {
    for i in 0..<count { destination[i] = bfloat16Bits(source[i]) }
}

public func convertFromBFloat16(_ source: UnsafePointer<UInt16>, _ destination: UnsafeMutablePointer<Float>, count: Int) {
    for i in 0..<count { destination[i] = floatFromBFloat16Bits(source[i]) }
}
