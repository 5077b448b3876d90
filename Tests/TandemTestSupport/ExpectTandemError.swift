import TandemCore
import Testing

/// Expects `body` to throw a TandemError whose message contains every fragment.
@discardableResult
public func expectTandemError(_ code: TandemError.Code? = nil, mentioning fragments: [String],
                              sourceLocation: SourceLocation = #_sourceLocation, _ body: () throws -> Void) -> TandemError? {
    do {
        try body()
        Issue.record("expected a TandemError mentioning \(fragments)", sourceLocation: sourceLocation)
    } catch let error as TandemError {
        if let code { #expect(error.code == code, "\(error.message)", sourceLocation: sourceLocation) }
        for fragment in fragments {
            #expect(error.message.contains(fragment), "\"\(error.message)\" does not mention \(fragment)", sourceLocation: sourceLocation)
        }
        return error
    } catch {
        Issue.record("expected a TandemError, got \(error)", sourceLocation: sourceLocation)
    }
    return nil
}
