/// Element-wise activations. `softmax` is only meaningful on a model's last layer, where training fuses it with
/// the cross-entropy loss and prediction applies it to turn logits into probabilities.
public enum Activation: String, Sendable, CaseIterable, Codable {
    case identity, relu, tanh, sigmoid, softmax

    public init(name: String) throws {
        let key = name.lowercased() == "linear" ? "identity" : name.lowercased()
        guard let value = Activation(rawValue: key) else {
            throw TandemError(.badConfig, "unknown activation \"\(name)\" (expected one of: \(Activation.allCases.map(\.rawValue).joined(separator: ", ")))")
        }
        self = value
    }
}

/// tanh as a rational function (odd degree 13 over even degree 6, the coefficients Eigen uses), clamped where
/// float tanh is ±1. Unlike a call to libm's tanhf it vectorizes, which is most of the tanh model's time otherwise.
@inline(__always)
public func fastTanh(_ input: Float) -> Float {
    let x = min(max(input, -7.905_311_107_635_498), 7.905_311_107_635_498)
    let x2 = x * x
    var p: Float = -2.760_768_477_423_55e-16
    p = p * x2 + 2.000_187_904_824_77e-13
    p = p * x2 + -8.604_671_522_137_35e-11
    p = p * x2 + 5.122_297_090_371_14e-08
    p = p * x2 + 1.485_722_357_179_79e-05
    p = p * x2 + 6.372_619_288_754_36e-04
    p = p * x2 + 4.893_524_558_917_86e-03
    p = p * x
    var q: Float = 1.198_258_394_667_02e-06
    q = q * x2 + 1.185_347_056_866_54e-04
    q = q * x2 + 2.268_434_632_439_00e-03
    q = q * x2 + 4.893_525_185_543_85e-03
    return p / q
}

@inline(__always)
public func fastSigmoid(_ x: Float) -> Float { 0.5 * fastTanh(0.5 * x) + 0.5 }
