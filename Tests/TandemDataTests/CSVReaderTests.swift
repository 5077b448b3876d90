import Foundation
import TandemCore
import TandemData
import TandemTestSupport
import Testing

@Suite struct CSVReaderTests {
    static func floats(_ examples: Examples) -> [Float] {
        guard case .floats(let values) = examples.features else { return [] }
        return values
    }

    @Test func headerAndTargetByName() throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let path = try directory.write("table.csv", text: "a, y ,b\n1,10,2\n3,30,4\n\n# a comment\n5,50,6\n")
        let (examples, header) = try CSVReader.read(path: path, targetColumn: "y")
        #expect(header == ["a", "y", "b"])
        #expect(examples.count == 3 && examples.featureCount == 2)
        #expect(examples.targets == [10, 30, 50])
        #expect(Self.floats(examples) == [1, 2, 3, 4, 5, 6])
    }

    @Test func defaultTargetIsTheLastColumn() throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let path = try directory.write("plain.csv", text: "1,2,3\r\n4,5,6\r\n-7.5,8e-1,9\r\n")
        let (examples, header) = try CSVReader.read(path: path)
        #expect(header == nil)
        #expect(examples.count == 3)
        #expect(examples.targets == [3, 6, 9])
        #expect(Self.floats(examples) == [1, 2, 4, 5, -7.5, 0.8])
    }

    @Test func targetByIndex() throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let path = try directory.write("plain.csv", text: "1,2,3\n4,5,6\n")
        let first = try CSVReader.read(path: path, targetColumn: "0").examples
        #expect(first.targets == [1, 4] && Self.floats(first) == [2, 3, 5, 6])
        let fromEnd = try CSVReader.read(path: path, targetColumn: "-2").examples
        #expect(fromEnd.targets == [2, 5] && Self.floats(fromEnd) == [1, 3, 4, 6])
        // With a header, an index still works when no column has that name.
        let withHeader = try directory.write("header.csv", text: "p,q,r\n1,2,3\n")
        #expect(try CSVReader.read(path: withHeader, targetColumn: "1").examples.targets == [2])
    }

    @Test func unknownTargetColumn() throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let path = try directory.write("t.csv", text: "a,b\n1,2\n")
        expectTandemError(.badConfig, mentioning: [path, "\"label\"", "\"a\", \"b\""]) { _ = try CSVReader.read(path: path, targetColumn: "label") }
        expectTandemError(.badConfig, mentioning: [path, "\"5\""]) { _ = try CSVReader.read(path: path, targetColumn: "5") }
    }

    @Test func nonNumericFieldNamesLineAndColumn() throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let path = try directory.write("bad.csv", text: "x,y,z\n1,2,3\n4,five,6\n")
        expectTandemError(.badInput, mentioning: ["\(path):3", "column 2", "\"five\""]) { _ = try CSVReader.read(path: path) }
        let infinite = try directory.write("inf.csv", text: "1,2\n3,inf\n")
        expectTandemError(.badInput, mentioning: ["\(infinite):2", "column 2"]) { _ = try CSVReader.read(path: infinite) }
        let empty = try directory.write("empty-field.csv", text: "1,2,3\n4,,6\n")
        expectTandemError(.badInput, mentioning: ["\(empty):2", "column 2"]) { _ = try CSVReader.read(path: empty) }
    }

    @Test func commentLinesKeepLineNumbers() throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let path = try directory.write("commented.csv", text: "# data\nx,y\n1,2\n3,oops\n")
        expectTandemError(.badInput, mentioning: ["\(path):4", "column 2"]) { _ = try CSVReader.read(path: path) }
    }

    @Test
    func blankLinesKeepLineNumbers() throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let path = try directory.write("blank.csv", text: "x,y\n\n1,2\n3,oops\n")
        expectTandemError(.badInput, mentioning: ["\(path):4", "column 2"]) { _ = try CSVReader.read(path: path) }
    }

    @Test func raggedRow() throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let path = try directory.write("ragged.csv", text: "a,b,c\n1,2,3\n4,5\n")
        expectTandemError(.badInput, mentioning: ["\(path):3", "2 fields", "expected 3"]) { _ = try CSVReader.read(path: path) }
        let long = try directory.write("long.csv", text: "1,2\n3,4,5\n")
        expectTandemError(.badInput, mentioning: ["\(long):2", "3 fields", "expected 2"]) { _ = try CSVReader.read(path: long) }
    }

    @Test func emptyAndDegenerateTables() throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let empty = try directory.write("empty.csv", text: "\n# nothing\n")
        expectTandemError(.badInput, mentioning: [empty, "no rows"]) { _ = try CSVReader.read(path: empty) }
        let headerOnly = try directory.write("header.csv", text: "a,b\n")
        expectTandemError(.badInput, mentioning: [headerOnly, "no data rows"]) { _ = try CSVReader.read(path: headerOnly) }
        let oneColumn = try directory.write("one.csv", text: "1\n2\n")
        expectTandemError(.badInput, mentioning: [oneColumn, "1 column"]) { _ = try CSVReader.read(path: oneColumn) }
        let missing = directory.file("missing.csv")
        expectTandemError(.io, mentioning: [missing]) { _ = try CSVReader.read(path: missing) }
    }
}
