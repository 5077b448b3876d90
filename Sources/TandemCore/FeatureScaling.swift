/// The per-feature affine map x′ = x · scale[c] + shift[c] applied while a batch is converted (TandemData fits
/// the standardization on a data set). In TandemCore so that a model can carry the scaling it was trained with.
public struct FeatureScaling: Sendable, Equatable {
    public var scale: [Float]
    public var shift: [Float]

    public init(scale: [Float], shift: [Float]) {
        self.scale = scale
        self.shift = shift
    }

    public static func identity(features: Int) -> FeatureScaling {
        FeatureScaling(scale: .init(repeating: 1, count: features), shift: .init(repeating: 0, count: features))
    }

    /// Pixels / 255.
    public static func unit(features: Int) -> FeatureScaling {
        FeatureScaling(scale: .init(repeating: 1 / 255, count: features), shift: .init(repeating: 0, count: features))
    }
}
