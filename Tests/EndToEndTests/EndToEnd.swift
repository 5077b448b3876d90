import Testing

/// Every test that runs the binary belongs to this suite: serialized, because each run (and each mpirun job) uses
/// both cores, and concurrent jobs would only measure each other.
@Suite(.serialized)
enum EndToEnd {}
