/// A value handed to another thread when the code around it guarantees the two never use it at once.
public struct UncheckedSendable<Value>: @unchecked Sendable {
    public let value: Value
    public init(_ value: Value) { self.value = value }
}
