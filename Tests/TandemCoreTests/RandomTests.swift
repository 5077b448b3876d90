import Testing
import TandemCore

@Suite struct RandomTests {
    @Test func splitMix64ReferenceValues() {
        // Published SplitMix64 outputs for seed 0.
        var generator = SeededGenerator(seed: 0)
        #expect(generator.next() == 0xE220_A839_7B1D_CDAF)
        #expect(generator.next() == 0x6E78_9E6A_A1B9_65F4)
        #expect(generator.next() == 0x06C4_5D18_8009_454F)
    }

    static func draw(_ generator: inout SeededGenerator, _ count: Int) -> [UInt64] { (0..<count).map { _ in generator.next() } }

    @Test func sameSeedAndStreamGiveTheSameSequence() {
        var a = SeededGenerator(seed: 42, stream: 7), b = SeededGenerator(seed: 42, stream: 7)
        #expect(Self.draw(&a, 100) == Self.draw(&b, 100))
        var c = SeededGenerator(seed: 42), d = SeededGenerator(seed: 42)
        #expect(Self.draw(&c, 100) == Self.draw(&d, 100))
    }

    @Test func differentStreamsOrSeedsDiffer() {
        var base = SeededGenerator(seed: 42, stream: 7)
        let reference = Self.draw(&base, 50)
        for (seed, stream): (UInt64, UInt64) in [(42, 8), (42, 0), (43, 7), (0, 7)] {
            var other = SeededGenerator(seed: seed, stream: stream)
            let values = Self.draw(&other, 50)
            #expect(values != reference, "seed \(seed) stream \(stream)")
            #expect(Set(values).isDisjoint(with: reference), "seed \(seed) stream \(stream) overlaps")
        }
        // Consecutive streams (e.g. epochs) must not be shifted copies of one another.
        var epoch3 = SeededGenerator(seed: 1, stream: 3), epoch4 = SeededGenerator(seed: 1, stream: 4)
        #expect(Set(Self.draw(&epoch3, 200)).isDisjoint(with: Self.draw(&epoch4, 200)))
    }

    @Test func unitFloatsAreIn0To1With24Bits() {
        var generator = SeededGenerator(seed: 5)
        var total = 0.0
        for _ in 0..<20_000 {
            let value = generator.nextUnitFloat()
            #expect(value >= 0 && value < 1)
            #expect((value * 16_777_216).rounded() == value * 16_777_216)
            total += Double(value)
        }
        #expect(abs(total / 20_000 - 0.5) < 0.01)
    }

    static func shuffled(_ count: Int, seed: UInt64) -> [Int32] {
        var indices = (0..<Int32(count)).map { $0 }
        var generator = SeededGenerator(seed: seed)
        indices.withUnsafeMutableBufferPointer { generator.shuffle($0) }
        return indices
    }

    @Test func shuffleIsADeterministicPermutation() {
        let a = Self.shuffled(1000, seed: 9)
        #expect(a.sorted() == (0..<1000).map { $0 })
        #expect(a != (0..<1000).map { $0 })
        #expect(Self.shuffled(1000, seed: 9) == a)
        #expect(Self.shuffled(1000, seed: 10) != a)
        #expect(Self.shuffled(0, seed: 1) == [])
        #expect(Self.shuffled(1, seed: 1) == [0])
    }

    @Test func shuffleReachesEveryPermutationEvenly() {
        // Fisher–Yates gives each of the 6 orders of 3 items probability 1/6; an off-by-one (Sattolo) gives only
        // the 2 cyclic ones, a naive swap-with-any is visibly biased.
        var generator = SeededGenerator(seed: 2024)
        var counts: [[Int32]: Int] = [:]
        let trials = 12_000
        for _ in 0..<trials {
            var indices: [Int32] = [0, 1, 2]
            indices.withUnsafeMutableBufferPointer { generator.shuffle($0) }
            counts[indices, default: 0] += 1
        }
        #expect(counts.count == 6)
        for (order, count) in counts {
            #expect(abs(Double(count) / Double(trials) - 1.0 / 6) < 0.02, "\(order): \(count)")
        }
    }
}
