// swift-tools-version:6.0
import Foundation
import PackageDescription

/// Tandem's own kernels (im2col, pooling, the hand-written small products, Adam) are Swift on SIMD types, compiled
/// for the CPU of the machine that builds them, as the C floor is with `-march=native`: x86-64's baseline has no
/// AVX or FMA, and those kernels ran at half speed or less on it. The binary then needs that CPU family;
/// `TANDEM_TARGET_CPU=x86-64` (or any LLVM CPU name) builds for another, `TANDEM_TARGET_CPU=` for the baseline.
/// Numerics do not change: Swift neither fuses multiply-adds nor reorders sums unless the code asks.
let hostCPUFlags: Set<Substring> = {
    guard let info = try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8),
          let line = info.split(separator: "\n").first(where: { $0.hasPrefix("flags") }) else { return [] }
    return Set(line.split(separator: " "))
}()
let targetCPU: String? = {
    if let chosen = ProcessInfo.processInfo.environment["TANDEM_TARGET_CPU"] { return chosen.isEmpty ? nil : chosen }
    #if arch(x86_64)
    if ["avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512cd"].allSatisfy(hostCPUFlags.contains) { return "skylake-avx512" }
    if ["avx2", "fma", "bmi2"].allSatisfy(hostCPUFlags.contains) { return "haswell" }
    #endif
    return nil
}()
/// `FUSED_MULTIPLY_ADD`: the target has FMA instructions, so a kernel may ask for them (on a CPU without, LLVM
/// would call `fmaf` per element).
let nativeCode: [SwiftSetting] = targetCPU.map {
    [.unsafeFlags(["-target-cpu", $0])] + (["haswell", "skylake-avx512"].contains($0) ? [.define("FUSED_MULTIPLY_ADD")] : [])
} ?? []

let package = Package(
    name: "Tandem",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "tandem", targets: ["tandem"]),
        // What a package depends on: `import Tandem`.
        .library(name: "Tandem", targets: ["Tandem"]),
        // The parameter-server strategy (gRPC), apart so that `import Tandem` alone does not link gRPC.
        .library(name: "TandemParameterServer", targets: ["TandemParameterServer"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.6.0"),
        .package(url: "https://github.com/grpc/grpc-swift-2", from: "2.4.0"),
        .package(url: "https://github.com/grpc/grpc-swift-nio-transport", from: "2.9.0"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.80.0"),
    ],
    targets: [
        .systemLibrary(name: "CBLAS", pkgConfig: "openblas", providers: [.apt(["libopenblas-dev"])]),
        .systemLibrary(name: "CZlib", pkgConfig: "zlib", providers: [.apt(["zlib1g-dev"])]),
        .systemLibrary(name: "CPNG", pkgConfig: "libpng", providers: [.apt(["libpng-dev"])]),
        .systemLibrary(name: "CMPI", pkgConfig: "ompi-c", providers: [.apt(["libopenmpi-dev"])]),
        .systemLibrary(name: "CAffinity"),
        .systemLibrary(name: "CPrefetch"),

        .target(name: "TandemCore", dependencies: ["CBLAS"], swiftSettings: nativeCode),
        .target(name: "TandemNN", dependencies: ["TandemCore", "CBLAS"], swiftSettings: nativeCode),
        .target(name: "TandemData", dependencies: ["TandemCore", "CZlib", "CPNG", "CPrefetch"], swiftSettings: nativeCode),
        // Communicators (MPI ranks, replica threads, the single process), the fixed-tree sum, the stall inspector:
        // bytes and ranks, nothing about models.
        .target(name: "TandemCollectives", dependencies: ["TandemCore", "CMPI", "CAffinity"], swiftSettings: nativeCode),
        .target(name: "TandemTrain", dependencies: [
            "TandemCore", "TandemNN", "TandemData", "TandemCollectives",
            .product(name: "Logging", package: "swift-log"),
        ]),
        .target(name: "TandemParameterServer", dependencies: [
            "TandemTrain", "TandemCollectives", "TandemCore", "TandemNN", "TandemData",
            .product(name: "GRPCCore", package: "grpc-swift-2"),
            .product(name: "GRPCNIOTransportHTTP2", package: "grpc-swift-nio-transport"),
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOPosix", package: "swift-nio"),
        ]),
        // Strategies over the collectives: replica threads, MPI ranks and both.
        .target(name: "TandemDistributed", dependencies: ["TandemTrain", "TandemCollectives", "TandemCore"]),
        .target(name: "Tandem", dependencies: ["TandemCore", "TandemNN", "TandemData", "TandemCollectives", "TandemTrain", "TandemDistributed"]),
        .executableTarget(name: "tandem", dependencies: [
            "Tandem", "TandemParameterServer",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
            .product(name: "Logging", package: "swift-log"),
        ]),
        .executableTarget(name: "LinearRegressionExample", dependencies: ["TandemCore"],
                          path: "Examples/LinearRegression"),
        .executableTarget(name: "FashionTapeExample", dependencies: ["TandemCore", "TandemData", "TandemNN"],
                          path: "Examples/FashionTape"),

        // Helpers the test targets share (temporary folders, a PNG encoder, an expectation on Tandem's errors).
        .target(name: "TandemTestSupport", dependencies: ["TandemCore"], path: "Tests/TandemTestSupport"),
        // Seeded mutations of valid files through every reader, as a process of its own (EndToEndTests.FuzzTests).
        .executableTarget(name: "FuzzReaders", dependencies: ["TandemCore", "TandemData", "TandemNN", "TandemTrain", "TandemTestSupport"],
                          path: "Tests/FuzzReaders"),
        // Heap allocations per steady-state step of both training paths and every strategy, counted by malloc and its
        // relatives defined in the executable itself (EndToEndTests.AllocationTests).
        .target(name: "CAllocationCounter", path: "Tests/CAllocationCounter"),
        .executableTarget(name: "CountAllocations", dependencies: [
            "CAllocationCounter", "TandemCore", "TandemData", "TandemNN", "TandemCollectives", "TandemTrain", "TandemParameterServer",
        ], path: "Tests/CountAllocations"),
        .testTarget(name: "TandemCoreTests", dependencies: ["TandemCore"]),
        .testTarget(name: "TandemNNTests", dependencies: ["TandemNN", "TandemCore", "TandemTestSupport"]),
        .testTarget(name: "TandemDataTests", dependencies: ["TandemData", "TandemCore", "TandemTestSupport"]),
        .testTarget(name: "TandemTrainTests", dependencies: ["TandemTrain", "TandemNN", "TandemData", "TandemCore", "TandemTestSupport"]),
        .testTarget(name: "TandemCollectivesTests", dependencies: ["TandemCollectives", "TandemTrain", "TandemNN", "TandemCore"]),
        .testTarget(name: "EndToEndTests", dependencies: ["TandemData", "TandemTrain", "TandemTestSupport"], exclude: ["Scripts"]),
    ]
)
