// Feeds every reader of outside input thousands of seeded mutations of valid files — truncations, bit flips,
// huge or negative numbers, wrong types — and checks that each gives a TandemError or valid data.
//
// It runs as a process of its own (EndToEndTests.FuzzTests starts it under a timeout) because what it guards
// against ends a process: a trap is a crash, a hang meets the timeout, and an allocation beyond what the file size
// justifies fails against the data limit set below (Swift then stops with "failed to allocate"), so the test
// fails naming the reader and the case. Leaves out: the readers' behaviour on files larger than a few hundred KB.
//
//   FuzzReaders [--seed S] [--cases N] [--only READER] [--from K]
import Foundation
import TandemCore
import TandemData
import TandemNN
import TandemTestSupport
import TandemTrain

struct Options {
    var seed: UInt64 = 1
    var cases = 3000
    var only: String?
    var from = 0

    init(_ arguments: [String]) {
        var rest = arguments.dropFirst()
        while let flag = rest.popFirst() {
            let value = rest.popFirst() ?? ""
            switch flag {
            case "--seed": seed = UInt64(value) ?? seed
            case "--cases": cases = Int(value).map { min(max($0, 1), 1_000_000) } ?? cases
            case "--only": only = value
            case "--from": from = Int(value).map { max($0, 0) } ?? 0
            default: fatalError("usage: FuzzReaders [--seed S] [--cases N] [--only READER] [--from K]")
            }
        }
    }
}

// MARK: the data limit

/// Private writable memory the fuzzer may hold beyond what it holds at start: far more than any seed file (the
/// largest is ~50 KB; deflate expands at most 1032:1), far less than a header's claim of gigabytes.
let allowanceBytes = 256 << 20

func limitData(toCurrentPlus allowance: Int) {
    let status = (try? String(contentsOfFile: "/proc/self/status", encoding: .utf8)) ?? ""
    let dataKB = status.split(separator: "\n").first { $0.hasPrefix("VmData:") }
        .flatMap { Int($0.split(separator: " ", omittingEmptySubsequences: true).dropFirst().first ?? "") } ?? 0
    var limit = rlimit(rlim_cur: rlim_t(dataKB * 1024 + allowance), rlim_max: rlim_t.max)
    guard setrlimit(Int32(RLIMIT_DATA.rawValue), &limit) == 0 else { fatalError("setrlimit failed") }
    print("data limit: \(dataKB / 1024) MB in use + \(allowance >> 20) MB")
}

// MARK: mutations

struct Mutator {
    var generator: SeededGenerator

    mutating func below(_ bound: Int) -> Int { bound <= 1 ? 0 : Int(generator.next() % UInt64(bound)) }

    static let numbers = ["-7", "0", "-1", "1e39", "-1e39", "20.5", "1e-50", "99999999999999999999", "-99999999999999999999",
                          "2147483648", "4294967296", "9223372036854775807", "9223372036854775808", "1e308", "NaN", "\"abc\"",
                          "null", "true", "[]", "{}", "[1,2]", "\"\"", "18446744073709551615"]
    static let strings = ["\"\"", "\"\\u001b[31m\\r\"", "\"" + String(repeating: "x", count: 5000) + "\"", "123", "null", "[\"a\"]",
                          "{\"a\":1}", "\"../../../etc/passwd\"", "\"a:b:c\"", "\"localhost:99999\"", "\"[::1]:0\""]
    static let words: [UInt32] = [0, 1, 0x7F, 0x80, 0xFF, 0xFFFF, 0x7FFF_FFFF, 0x8000_0000, 0xFFFF_FFFF, 1 << 24, 1 << 28]

    /// One to three mutations of `bytes`; for text formats, a third of the cases one JSON-aware mutation instead.
    mutating func mutate(_ bytes: [UInt8], text: Bool) -> (bytes: [UInt8], what: [String]) {
        if text, below(3) == 0, let mutated = mutateJSON(bytes) { return mutated }
        var result = bytes
        var what: [String] = []
        for _ in 0..<(1 + below(3)) {
            let kinds = text ? 9 : 7
            switch below(kinds) {
            case 0 where !result.isEmpty:
                let flips = 1 + below(8)
                for _ in 0..<flips { result[below(result.count)] ^= UInt8(1) << UInt8(below(8)) }
                what.append("flip \(flips) bits")
            case 1:
                let length = below(result.count + 1)
                result = Array(result.prefix(length))
                what.append("truncate to \(length)")
            case 2 where !result.isEmpty:
                let start = below(result.count), length = 1 + below(min(64, result.count - start))
                result.removeSubrange(start..<start + length)
                what.append("delete \(length) at \(start)")
            case 3 where !result.isEmpty:
                let start = below(result.count), length = 1 + below(min(256, result.count - start))
                let at = below(result.count + 1)
                result.insert(contentsOf: result[start..<start + length], at: at)
                what.append("duplicate \(length) to \(at)")
            case 4 where !result.isEmpty:
                let at = below(result.count)
                result[at] = [0, 0xFF, 0x7F, 0x80, UInt8(truncatingIfNeeded: generator.next())][below(5)]
                what.append("byte at \(at)")
            case 5 where result.count >= 4:
                let at = below(result.count - 3), word = Self.words[below(Self.words.count)]
                let bigEndian = below(2) == 0
                for i in 0..<4 { result[at + i] = UInt8(truncatingIfNeeded: word >> (bigEndian ? 24 - 8 * i : 8 * i)) }
                what.append("word \(word) at \(at)")
            case 6 where result.count >= 8:
                // The first 8 bytes: safetensors' header length, IDX's magic and first dimension.
                let word = UInt64(Self.words[below(Self.words.count)]) << (below(2) == 0 ? 0 : 32)
                for i in 0..<8 { result[i] = UInt8(truncatingIfNeeded: word >> (8 * i)) }
                what.append("head \(word)")
            case 7:
                replaceToken(in: &result, matching: { $0 == UInt8(ascii: "-") || (UInt8(ascii: "0")...UInt8(ascii: "9")).contains($0) },
                             with: Self.numbers[below(Self.numbers.count)], what: &what)
            case 8:
                replaceToken(in: &result, matching: { $0 == UInt8(ascii: "\"") }, with: Self.strings[below(Self.strings.count)], what: &what)
            default:
                result.append(UInt8(truncatingIfNeeded: generator.next()))
                what.append("append a byte")
            }
        }
        return (result, what)
    }

    nonisolated(unsafe) static let values: [(String, Any)] = [
        ("-7", -7), ("-1", -1), ("0", 0), ("20.5", 20.5), ("1e39", 1e39), ("1e30", 1e30), ("2^31", 2_147_483_648),
        ("2^63", 9.3e18), ("\"-7\"", "-7"), ("\"abc\"", "abc"), ("\"\"", ""), ("\"1e39\"", "1e39"),
        ("\"99999999999999999999\"", "99999999999999999999"), ("escape", "\u{1B}[31m\r\n"), ("long", String(repeating: "y", count: 3000)),
        ("null", NSNull()), ("true", true), ("[]", [Any]()), ("{}", [String: Any]()), ("[1,2]", [1, 2]),
    ]

    /// A JSON document with one value replaced by a wrong type, a huge or negative number, or removed: reaches the
    /// checks behind the parser. A string that holds JSON (a checkpoint's model and config) is descended into.
    mutating func mutateJSON(_ bytes: [UInt8]) -> (bytes: [UInt8], what: [String])? {
        guard let tree = try? JSONSerialization.jsonObject(with: Data(bytes), options: [.fragmentsAllowed]) else { return nil }
        var what: [String] = []
        var mutated = tree
        for _ in 0..<(1 + below(3)) { mutated = mutateValue(mutated, path: "", what: &what) }
        guard let data = try? JSONSerialization.data(withJSONObject: mutated, options: [.fragmentsAllowed]) else { return nil }
        return ([UInt8](data), what)
    }

    private mutating func mutateValue(_ value: Any, path: String, what: inout [String]) -> Any {
        if var object = value as? [String: Any], !object.isEmpty, below(6) != 0 {
            let key = object.keys.sorted()[below(object.count)]
            if below(8) == 0 {
                object[key] = nil
                what.append("remove \(path).\(key)")
            } else {
                object[key] = mutateValue(object[key]!, path: path + "." + key, what: &what)
            }
            return object
        }
        if var array = value as? [Any], !array.isEmpty, below(6) != 0 {
            let index = below(array.count)
            array[index] = mutateValue(array[index], path: path + "[\(index)]", what: &what)
            return array
        }
        if let text = value as? String, below(2) == 0, let nested = mutateJSON(Array(text.utf8)) {
            what.append("inside \(path):")
            what += nested.what
            return String(decoding: nested.bytes, as: UTF8.self)
        }
        let (name, replacement) = Self.values[below(Self.values.count)]
        what.append("\(path.isEmpty ? "document" : path) = \(name)")
        return replacement
    }

    /// Replaces a number (from its first digit) or a string (from its opening quote) at a random place.
    private mutating func replaceToken(in bytes: inout [UInt8], matching start: (UInt8) -> Bool, with replacement: String, what: inout [String]) {
        let starts = bytes.indices.filter { start(bytes[$0]) && ($0 == 0 || !start(bytes[$0 - 1])) }
        guard !starts.isEmpty else { return }
        let first = starts[below(starts.count)]
        var end = first + 1
        if bytes[first] == UInt8(ascii: "\"") {
            while end < bytes.count && bytes[end] != UInt8(ascii: "\"") { end += bytes[end] == UInt8(ascii: "\\") ? 2 : 1 }
            end = min(end + 1, bytes.count)
        } else {
            while end < bytes.count && "0123456789.eE+-".utf8.contains(bytes[end]) { end += 1 }
        }
        bytes.replaceSubrange(first..<end, with: Array(replacement.utf8))
        what.append("token at \(first) → \(replacement.prefix(24))")
    }
}

// MARK: readers

/// A reader under test: `read` parses one file and checks what it accepted; a thrown TandemError is a refusal.
/// `mutate` makes one case from a seed: by default blind mutations (and text ones for text formats); a format
/// with framing (a length prefix, checksums) also mutates inside the frame and frames the result again, or nearly
/// every case would stop at the frame.
struct Reader {
    let name: String
    let seeds: [[UInt8]]
    let text: Bool
    var mutate: ((inout Mutator, [UInt8]) -> (bytes: [UInt8], what: [String]))? = nil
    let read: (_ bytes: [UInt8], _ path: String) throws -> Void

    init(name: String, seeds: [[UInt8]], text: Bool, mutate: ((inout Mutator, [UInt8]) -> (bytes: [UInt8], what: [String]))? = nil,
         read: @escaping (_ bytes: [UInt8], _ path: String) throws -> Void) {
        self.name = name
        self.seeds = seeds
        self.text = text
        self.mutate = mutate
        self.read = read
    }
}

/// Half the cases: the safetensors JSON header mutated as text and framed again with its new length.
func mutateSafetensors(_ mutator: inout Mutator, _ seed: [UInt8]) -> (bytes: [UInt8], what: [String]) {
    guard mutator.below(2) == 0, seed.count >= 8 else { return mutator.mutate(seed, text: false) }
    let length = (0..<8).reduce(0) { $0 | Int(seed[$1]) << (8 * $1) }
    guard length <= seed.count - 8 else { return mutator.mutate(seed, text: false) }
    let original = Array(seed[8..<8 + length])
    let (header, what) = mutator.below(2) == 0 ? (mutator.mutateJSON(original) ?? mutator.mutate(original, text: true))
                                               : mutator.mutate(original, text: true)
    let prefix = (0..<8).map { UInt8(truncatingIfNeeded: header.count >> (8 * $0)) }
    return (prefix + header + seed[(8 + length)...], ["header: "] + what)
}

/// Half the cases: the PNG's IHDR width, height, bit depth or colour type replaced and its CRC recomputed, so the
/// decoder believes the header and must check it against the data.
func mutatePNG(_ mutator: inout Mutator, _ seed: [UInt8]) -> (bytes: [UInt8], what: [String]) {
    // Signature (8), IHDR length (4) and type (4), then width, height, depth, colour type...; CRC after 13 bytes.
    guard mutator.below(2) == 0, seed.count >= 33 else { return mutator.mutate(seed, text: false) }
    var bytes = seed
    let field = mutator.below(4)
    switch field {
    case 0, 1:
        let word = Mutator.words[mutator.below(Mutator.words.count)]
        for i in 0..<4 { bytes[16 + 4 * field + i] = UInt8(truncatingIfNeeded: word >> (24 - 8 * i)) }
    default:
        bytes[24 + field - 2] = [0, 1, 2, 3, 4, 6, 8, 16, 255][mutator.below(9)]
    }
    let crc = crc32(Array(bytes[12..<29]))
    for i in 0..<4 { bytes[29 + i] = UInt8(truncatingIfNeeded: crc >> (24 - 8 * i)) }
    return (bytes, ["IHDR field \(field)"])
}

func crc32(_ bytes: [UInt8]) -> UInt32 {
    var crc = ~UInt32(0)
    for byte in bytes {
        crc ^= UInt32(byte)
        for _ in 0..<8 { crc = crc & 1 == 1 ? 0xEDB8_8320 ^ (crc >> 1) : crc >> 1 }
    }
    return ~crc
}

struct InvalidData: Error { let message: String }

func check(_ condition: Bool, _ message: @autoclosure () -> String) throws {
    if !condition { throw InvalidData(message: message()) }
}

let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
nonisolated(unsafe) let work = try TemporaryDirectory(prefix: "tandem-fuzz")
defer { work.remove() }

func contents(_ relative: String) throws -> [UInt8] { [UInt8](try Data(contentsOf: root.appendingPathComponent(relative))) }

func gzip(_ bytes: [UInt8]) throws -> [UInt8] {
    let plain = try work.write("seed.raw", bytes)
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/bin/gzip")
    process.arguments = ["-f", "-k", "-9", plain]
    try process.run()
    process.waitUntilExit()
    return [UInt8](try Data(contentsOf: URL(fileURLWithPath: plain + ".gz")))
}

func idx(dimensions: [Int], fill: (Int) -> UInt8) -> [UInt8] {
    var bytes: [UInt8] = [0, 0, 8, UInt8(dimensions.count)]
    for dimension in dimensions { bytes += [24, 16, 8, 0].map { UInt8(truncatingIfNeeded: dimension >> $0) } }
    return bytes + (0..<dimensions.reduce(1, *)).map(fill)
}

func configReader() throws -> Reader {
    let seeds = try ["fashion-mnist-mlp", "fashion-mnist-tanh", "fashion-mnist-cnn", "fashion-mnist-cnn-bn", "cluster-ps", "cluster-mirrored", "linear-regression"]
        .map { try contents("configs/\($0).json") }
    return Reader(name: "config", seeds: seeds, text: true) { bytes, path in
        var config = try decodeJSON(JobConfig.self, from: Data(bytes), path: path)
        config.sourcePath = root.appendingPathComponent("configs/job.json").path  // TLS files resolve as for a shipped config
        try config.validate(path: path)
        try check(config.training.batchSize >= 1 && config.model.placement().parameterCount < Int.max, "accepted an invalid config")
    }
}

func tfConfigReader() throws -> Reader {
    let config = try JobConfig.load(path: root.appendingPathComponent("configs/cluster-ps.json").path)
    let seed = #"{"cluster":{"chief":["localhost:2530"],"worker":["localhost:2531","host-b:2532"],"ps":["[::1]:2533"]},"task":{"type":"worker","index":1}}"#
    return Reader(name: "TF_CONFIG", seeds: [Array(seed.utf8)], text: true) { bytes, _ in
        guard let spec = try ClusterSpec.resolve(config: config, environment: ["TF_CONFIG": String(decoding: bytes, as: UTF8.self)]) else { return }
        if let task = spec.task { try check(spec.roles[task.type].map { $0.indices.contains(task.index) } == true, "task outside the cluster") }
        try check(spec.tasks.allSatisfy { (1...65535).contains($0.address.port) }, "port out of range")
    }
}

func idxReader() throws -> Reader {
    let images = idx(dimensions: [20, 28, 28]) { UInt8(truncatingIfNeeded: $0 &* 37) }
    let labels = idx(dimensions: [20]) { UInt8($0 % 10) }
    return Reader(name: "IDX", seeds: [images, labels, try gzip(images)], text: false) { _, path in
        let contents = try IDXReader.read(path: path)
        try check(contents.bytes.count == SaturatingSize.product(contents.dimensions), "data does not match dimensions \(contents.dimensions)")
    }
}

func csvReader() throws -> Reader {
    var generator = SeededGenerator(seed: 3)
    var table = "f0,f1,f2,label\n"
    for _ in 0..<40 { table += (0..<3).map { _ in String(generator.nextUnitFloat() * 4 - 2) }.joined(separator: ",") + ",\(generator.next() % 3)\n" }
    return Reader(name: "CSV", seeds: [try contents("configs/linear-regression.csv"), Array(table.utf8)], text: true) { _, path in
        let (examples, _) = try CSVReader.read(path: path, targetColumn: nil)
        try check(examples.count >= 1 && examples.targets.count == examples.count && examples.classCount >= 1, "inconsistent examples")
    }
}

func safetensorsReader() throws -> Reader {
    let directory = work.file("seed-checkpoints")
    let config = try JobConfig.load(path: root.appendingPathComponent("configs/linear-regression.json").path)
    let model = try Sequential(spec: ModelSpec(inputSize: 12, layers: [.init(units: 16, activation: .tanh), .init(units: 3, activation: .softmax)]),
                               seed: 1, maxBatchSize: 8)
    let optimizer = try OptimizerSpec(name: "sgd", learningRate: 0.1, momentum: 0.9).makeOptimizer(parameterCount: model.parameterCount)
    let path = try CheckpointDirectory(path: directory).save(
        TrainingState.checkpoint(model: model, optimizer: optimizer, epoch: 3, seed: 1, config: config), epoch: 3)
    return Reader(name: "safetensors", seeds: [[UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))], text: false,
                  mutate: mutateSafetensors) { _, path in
        // What inspect, evaluate, predict and --resume do with a checkpoint.
        let checkpoint = try Checkpoint.read(path: path)
        for entry in checkpoint.entries {
            try check(entry.values.count == SaturatingSize.product(entry.shape), "\(entry.name): values do not match shape \(entry.shape)")
        }
        let spec = try TrainingState.modelSpec(in: checkpoint, path: path)
        let restored = try Sequential(spec: spec, seed: 0, maxBatchSize: 8)
        let state = try OptimizerSpec(name: "sgd", learningRate: 0.1, momentum: 0.9).makeOptimizer(parameterCount: restored.parameterCount)
        let epoch = try TrainingState.restore(checkpoint, path: path, into: restored, optimizer: state)
        try check(epoch >= 0 && state.iterations >= 0, "negative counters")
        _ = TrainingState.scaling(in: checkpoint, features: restored.inputSize)
    }
}

func pngReader() throws -> Reader {
    let gray = pngBytes(width: 28, height: 28, channels: 1, samples: (0..<784).map { UInt8(truncatingIfNeeded: $0 * 7) })
    let rgba = pngBytes(width: 9, height: 5, channels: 4, samples: (0..<180).map { UInt8(truncatingIfNeeded: $0 * 13) })
    return Reader(name: "PNG", seeds: [gray, rgba], text: false, mutate: mutatePNG) { _, path in
        let image = try GrayImage.readPNG(path: path)
        try check(image.pixels.count == image.width * image.height, "pixels do not match \(image.width)×\(image.height)")
        _ = image.resized(width: 28, height: 28)
    }
}

// MARK: naming the case that crashed

/// The running case's label as a C string, written to stderr by the signal handler when a case traps or fails to
/// allocate (write(2) on a buffer allocated beforehand is what a handler may do).
nonisolated(unsafe) let caseLabel = UnsafeMutablePointer<CChar>.allocate(capacity: 4096)
caseLabel.initialize(repeating: 0, count: 4096)

func nameCrashingCase() {
    for signal in [SIGILL, SIGTRAP, SIGABRT, SIGSEGV, SIGBUS, SIGFPE] {
        var action = sigaction()
        action.__sigaction_handler.sa_handler = { signal in
            let prefix = "\nFuzzReaders: crashed in "
            _ = prefix.withCString { write(2, $0, strlen($0)) }
            _ = write(2, caseLabel, strlen(caseLabel))
            _ = write(2, "\n", 1)
            Glibc.signal(signal, SIG_DFL)
            raise(signal)
        }
        action.sa_flags = Int32(bitPattern: UInt32(SA_RESETHAND))
        sigaction(signal, &action, nil)
    }
}

// MARK: the run

let options = Options(CommandLine.arguments)
let readers = try [configReader(), tfConfigReader(), idxReader(), csvReader(), safetensorsReader(), pngReader()]
    .filter { options.only == nil || $0.name == options.only }
limitData(toCurrentPlus: allowanceBytes)
nameCrashingCase()
var invalid: [String] = []
for (number, reader) in readers.enumerated() {
    var mutator = Mutator(generator: SeededGenerator(seed: options.seed, stream: UInt64(number + 1)))
    var accepted = 0, refused = 0
    let started = Date()
    for index in 0..<options.cases {
        let seed = reader.seeds[mutator.below(reader.seeds.count)]
        let (bytes, what) = reader.mutate.map { $0(&mutator, seed) } ?? mutator.mutate(seed, text: reader.text)
        guard index >= options.from else { continue }
        // The case is named before it runs: if it traps or exhausts the data limit, this is the last line printed.
        let label = "\(reader.name) case \(index) (seed \(options.seed)): \(what.joined(separator: ", "))"
        if index % 500 == 0 { print("\(reader.name): case \(index)"); fflush(nil) }
        _ = label.withCString { strncpy(caseLabel, $0, 4095) }
        let path = try work.write("case-\(reader.name.lowercased())", bytes)
        do {
            try reader.read(bytes, path)
            accepted += 1
        } catch is TandemError {
            refused += 1
        } catch let error as InvalidData {
            invalid.append("\(label): accepted invalid data: \(error.message)")
        } catch {
            invalid.append("\(label): threw \(type(of: error)), not a TandemError: \(error)")
        }
    }
    print("\(reader.name): \(accepted + refused) cases, \(accepted) accepted, \(refused) refused with a TandemError, "
          + "\(String(format: "%.1f", Date().timeIntervalSince(started))) s")
    fflush(nil)
}
for line in invalid.prefix(20) { print("INVALID \(line)") }
print(invalid.isEmpty ? "fuzz: no trap, no hang, no invalid result" : "fuzz: \(invalid.count) invalid results")
exit(invalid.isEmpty ? 0 : 1)
