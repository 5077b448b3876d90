import Foundation
import TandemCore

/// Decodes JSON, turning Foundation's decoding errors into one line naming the field and the expected type.
///
/// `path` names the source in messages (a file, "TF_CONFIG", a checkpoint's metadata).
public func decodeJSON<T: Decodable>(_ type: T.Type, from data: Data, path: String) throws -> T {
    do {
        return try JSONDecoder().decode(type, from: data)
    } catch let error as DecodingError {
        throw JSONFieldError.describe(error, decoding: type, from: data, path: path)
    }
}

/// Turns a `DecodingError` into a `TandemError` that names the field.
enum JSONFieldError {
    static func describe<T: Decodable>(_ error: DecodingError, decoding type: T.Type, from data: Data, path: String) -> TandemError {
        switch error {
        case .typeMismatch(let expected, let context):
            return TandemError(.badConfig, "\(path): field \(field(context.codingPath)) must be \(describe(expected))")
        case .valueNotFound(let expected, let context):
            return TandemError(.badConfig, "\(path): field \(field(context.codingPath)) is null, expected \(describe(expected))")
        case .keyNotFound(let key, let context):
            return TandemError(.badConfig, "\(path): missing field \(field(context.codingPath, key))")
        case .dataCorrupted(let context) where !context.codingPath.isEmpty:
            return TandemError(.badConfig, "\(path): field \(field(context.codingPath)): \(context.debugDescription)")
        case .dataCorrupted(let context):
            guard let tree = try? JSONSerialization.jsonObject(with: data, options: [.fragmentsAllowed]) else {
                let underlying = (context.underlyingError as NSError?)?.userInfo[NSDebugDescriptionErrorKey] as? String
                return TandemError(.badConfig, "\(path): malformed JSON (\(underlying ?? context.debugDescription))")
            }
            if let culprit = unrepresentableNumber(in: tree, decoding: type) {
                return TandemError(.badConfig, "\(path): field \(culprit.field) \(culprit.problem)")
            }
            return TandemError(.badConfig, "\(path): \(context.debugDescription)")
        @unknown default:
            return TandemError(.badConfig, "\(path): \(error)")
        }
    }

    /// Note [Numbers that do not fit their field]: Foundation's JSONDecoder reports a number that is valid JSON
    /// but does not fit the Swift type of its field (20.5 or 1e30 for an `Int`, 1e39 for a `Float`) as "not valid
    /// JSON", with no coding path. The file is valid JSON, so the culprit is found by trying: each number of the
    /// parsed tree in turn is replaced by 0, and the one whose replacement makes that error go away is the field.
    /// Whether the field takes fractions (0.5 decodes there) tells an integer field from a floating-point one.
    /// This runs only on the error path, over a tree the size of a config.
    private static func unrepresentableNumber<T: Decodable>(in tree: Any, decoding type: T.Type) -> (field: String, problem: String)? {
        var numbers: [(path: [PathStep], value: NSNumber)] = []
        collectNumbers(tree, path: [], into: &numbers)
        func failsAsUnrepresentable(_ candidate: Any) -> Bool {
            guard let data = try? JSONSerialization.data(withJSONObject: candidate, options: [.fragmentsAllowed]) else { return false }
            do {
                _ = try JSONDecoder().decode(type, from: data)
                return false
            } catch DecodingError.dataCorrupted(let context) where context.codingPath.isEmpty {
                return true
            } catch {
                return false
            }
        }
        guard failsAsUnrepresentable(tree) else { return nil }
        for (path, value) in numbers.prefix(10_000) {
            guard !failsAsUnrepresentable(replacing(path, in: tree, with: 0)) else { continue }
            let takesFractions = !failsAsUnrepresentable(replacing(path, in: tree, with: 0.5))
            let number = value.doubleValue
            let found = number == number.rounded() && abs(number) < 1e15 ? String(Int(number)) : "\(number)"
            let problem: String
            if takesFractions {
                problem = "must be a number of magnitude at most \(Float.greatestFiniteMagnitude) (a 32-bit float), found \(found)"
            } else if number != number.rounded() {
                problem = "must be an integer, found \(found)"
            } else {
                problem = "is out of range for an integer here, found \(found)"
            }
            return (describe(path), problem)
        }
        return nil
    }

    private enum PathStep {
        case key(String)
        case index(Int)
    }

    private static func collectNumbers(_ value: Any, path: [PathStep], into numbers: inout [(path: [PathStep], value: NSNumber)]) {
        if let object = value as? [String: Any] {
            for key in object.keys.sorted() { collectNumbers(object[key]!, path: path + [.key(key)], into: &numbers) }
        } else if let array = value as? [Any] {
            for (index, element) in array.enumerated() { collectNumbers(element, path: path + [.index(index)], into: &numbers) }
        } else if let number = value as? NSNumber, type(of: value) == NSNumber.self {
            // Booleans are NSNumber subclasses (__NSCFBoolean) here: only true numbers qualify.
            numbers.append((path, number))
        }
    }

    private static func replacing(_ path: [PathStep], in tree: Any, with replacement: Any) -> Any {
        guard let step = path.first else { return replacement }
        let rest = Array(path.dropFirst())
        switch step {
        case .key(let key):
            var object = tree as! [String: Any]
            object[key] = replacing(rest, in: object[key]!, with: replacement)
            return object
        case .index(let index):
            var array = tree as! [Any]
            array[index] = replacing(rest, in: array[index], with: replacement)
            return array
        }
    }

    private static func describe(_ path: [PathStep]) -> String {
        let joined = path.map { step -> String in
            switch step {
            case .key(let key): return "." + key
            case .index(let index): return "[\(index)]"
            }
        }.joined()
        return joined.hasPrefix(".") ? String(joined.dropFirst()) : joined
    }

    static func field(_ codingPath: [CodingKey], _ last: CodingKey? = nil) -> String {
        let keys = (codingPath + (last.map { [$0] } ?? [])).map { key in
            key.intValue.map { "[\($0)]" } ?? ".\(key.stringValue)"
        }
        let joined = keys.joined()
        return joined.hasPrefix(".") ? String(joined.dropFirst()) : joined
    }

    static func describe(_ type: Any.Type) -> String {
        switch type {
        case is Int.Type, is UInt64.Type: return "an integer"
        case is Float.Type, is Double.Type: return "a number"
        case is String.Type: return "a string"
        case is Bool.Type: return "true or false"
        case is [Any].Type: return "an array"
        default: return String(describing: type).hasPrefix("Array") ? "an array" : "an object"
        }
    }
}
