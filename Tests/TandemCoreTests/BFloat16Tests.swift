import TandemCore
import Testing

struct BFloat16Tests {
    @Test func valuesWithEightSignificantBitsRoundTripExactly() {
        for value: Float in [0, 1, -1, 0.5, 3, 256, -1024, 1.5, 0.0078125, .infinity, -.infinity] {
            #expect(floatFromBFloat16Bits(bfloat16Bits(value)) == value)
        }
    }

    @Test func roundsToNearestWithTiesToEven() {
        // 1 + 2^-8 lies halfway between 1 and 1 + 2^-7: ties go to the even significand (1).
        #expect(floatFromBFloat16Bits(bfloat16Bits(1 + 0x1p-8)) == 1)
        // 1 + 3·2^-8 lies halfway between 1 + 2^-7 and 1 + 2^-6: the even one is 1 + 2^-6.
        #expect(floatFromBFloat16Bits(bfloat16Bits(1 + 3 * 0x1p-8)) == 1 + 0x1p-6)
        // Just above halfway rounds up.
        #expect(floatFromBFloat16Bits(bfloat16Bits(1 + 0x1p-8 + 0x1p-20)) == 1 + 0x1p-7)
        // Relative error of any normal value is at most 2^-9.
        for value: Float in [3.14159, -2.71828, 1e-20, 6.02e23, 0.1] {
            let rounded = floatFromBFloat16Bits(bfloat16Bits(value))
            #expect(abs(rounded - value) <= abs(value) * 0x1p-9)
        }
    }

    @Test func nanStaysNaN() {
        #expect(floatFromBFloat16Bits(bfloat16Bits(.nan)).isNaN)
        #expect(floatFromBFloat16Bits(bfloat16Bits(-.nan)).isNaN)
    }

    @Test func bufferConversionMatchesScalarConversion() {
        let source: [Float] = (0..<37).map { Float($0) * 0.173 - 3 }
        var wire = [UInt16](repeating: 0, count: source.count)
        var back = [Float](repeating: 0, count: source.count)
        source.withUnsafeBufferPointer { s in wire.withUnsafeMutableBufferPointer { convertToBFloat16(s.baseAddress!, $0.baseAddress!, count: 37) } }
        wire.withUnsafeBufferPointer { w in back.withUnsafeMutableBufferPointer { convertFromBFloat16(w.baseAddress!, $0.baseAddress!, count: 37) } }
        #expect(back == source.map { floatFromBFloat16Bits(bfloat16Bits($0)) })
    }
}
