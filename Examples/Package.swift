// swift-tools-version:6.0
// Tandem's examples as a user's package would use the library: through the `Tandem` product of the repository,
// by path (a URL works the same way).
import PackageDescription

let package = Package(
    name: "TandemExamples",
    platforms: [.macOS(.v15)],
    dependencies: [
        .package(name: "Tandem", path: ".."),
    ],
    targets: [
        // The flags every example takes (--epochs, --batch-size, --seed, --replicas, --reduction-groups, --metrics, --save).
        .target(name: "ExampleOptions", dependencies: [.product(name: "Tandem", package: "Tandem")], path: "ExampleOptions"),
        .executableTarget(name: "CustomTrainingLoop", dependencies: ["ExampleOptions", .product(name: "Tandem", package: "Tandem")],
                          path: "CustomTrainingLoop"),
        .executableTarget(name: "KerasStyle", dependencies: ["ExampleOptions", .product(name: "Tandem", package: "Tandem")],
                          path: "KerasStyle"),
    ]
)
