import Testing
import TandemCore

@Suite struct TensorTests {
    @Test func initialisers() {
        #expect(Tensor(3).shape == [] && Tensor(3).scalar == 3 && Tensor(3).count == 1)
        #expect(Tensor([1, 2, 3]).shape == [3])
        #expect(Tensor(zeros: [2, 3]) == Tensor(shape: [2, 3], scalars: [0, 0, 0, 0, 0, 0]))
        #expect(Tensor(zeros: [0, 5]).count == 0)
    }

    @Test func glorotUniformStaysWithinItsLimit() {
        var generator = SeededGenerator(seed: 3)
        let kernel = Tensor.glorotUniform(fanIn: 60, fanOut: 40, generator: &generator)
        let limit = (6.0 / 100.0).squareRoot()
        #expect(kernel.shape == [60, 40])
        let magnitudes = kernel.scalars.map { Double(abs($0)) }
        #expect(magnitudes.allSatisfy { $0 <= limit })
        #expect(magnitudes.max()! > 0.95 * limit)
        #expect(abs(magnitudes.reduce(0, +) / Double(magnitudes.count) - limit / 2) < 0.05 * limit)
        #expect(abs(kernel.scalars.reduce(0.0) { $0 + Double($1) } / Double(kernel.count)) < 0.05 * limit)
    }

    @Test func flatArena() {
        let arena = FlatArena(count: 5)
        #expect(arena.array == [0, 0, 0, 0, 0])
        arena[2] = 7
        arena.base[4] = -1
        #expect(arena.array == [0, 0, 7, 0, -1])
        let copy = FlatArena(count: 5)
        copy.copy(from: arena)
        #expect(copy.array == arena.array)
        arena.zero()
        #expect(arena.array == [0, 0, 0, 0, 0] && copy[2] == 7)
        #expect(FlatArena(count: 0).array == [])
        #expect(ArenaView(name: "w", offset: 3, shape: [4, 5]).count == 20)
    }

    @Test func activationNames() throws {
        #expect(try Activation(name: "ReLU") == .relu)
        #expect(try Activation(name: "linear") == .identity)
        #expect(try Activation(name: "Softmax") == .softmax)
        let error = #expect(throws: TandemError.self) { try Activation(name: "swish") }
        #expect(error?.code == .badConfig)
        #expect(error?.message.contains("\"swish\"") == true)
        #expect(error?.message.contains("tanh") == true)
    }

    @Test func tandemErrorDescribesItselfByItsMessage() {
        let error = TandemError(.numeric, "loss became nan")
        #expect(error.description == "loss became nan")
        #expect(error.code == .numeric && error.code.description == "numeric")
        #expect(error == TandemError(.numeric, "loss became nan"))
        #expect(error != TandemError(.io, "loss became nan"))
    }
}
