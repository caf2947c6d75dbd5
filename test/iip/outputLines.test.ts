// lineWriter: the bound on what a stalled stdout or stderr holds (src/iip/outputLines.ts).
import { Writable } from "node:stream"
import { describe, expect, it } from "vitest"
import { lineWriter } from "../../src/iip/outputLines.ts"

/** A stream whose reader takes nothing until `drain()`. */
const stalled = () => {
  const held: Array<Uint8Array> = []
  const output = {
    destroyed: false,
    get writableLength() {
      return held.reduce((sum, line) => sum + line.length, 0)
    },
    write: (line: Uint8Array) => held.push(line),
    drain: () => held.splice(0).map((line) => Buffer.from(line).toString())
  }
  return output
}

describe("lineWriter", () => {
  it("drops lines past its bound, counts them, and says how many before the next line written", () => {
    const output = stalled()
    const write = lineWriter(output, 90)
    for (let i = 0; i < 30; i++) write(`line ${String(i).padStart(3, "0")}\n`)
    const held = output.drain()
    expect(held).toStrictEqual(Array.from({ length: 10 }, (_, i) => `line ${String(i).padStart(3, "0")}\n`))
    expect(write.dropped()).toBe(20)
    write("after\n")
    const [note, after] = output.drain()
    expect(JSON.parse(note!)).toMatchObject({ event: "log-lines-dropped", lines: 20 })
    expect(after).toBe("after\n")
    write("again\n")
    expect(output.drain()).toStrictEqual(["again\n"])
    expect(write.dropped()).toBe(20)
  })

  it("drops every line once its stream is destroyed", () => {
    const output = stalled()
    const write = lineWriter(output, 90)
    output.destroyed = true
    write("lost\n")
    expect(output.drain()).toStrictEqual([])
    expect(write.dropped()).toBe(1)
  })

  it("bounds what a real stream holds in bytes, not UTF-16 units: lines of two-byte characters hold at most the bound", () => {
    // As net.Socket (process.stdout on a pipe): strings taken as they are, writableLength their .length.
    const pipe = new Writable({ decodeStrings: false, write: () => {} })
    const write = lineWriter(pipe, 1000)
    // 100 'é' and a newline: 101 UTF-16 units, 201 bytes of UTF-8 in the pipe.
    const line = `${"é".repeat(100)}\n`
    for (let i = 0; i < 20; i++) write(line)
    const held = 20 - write.dropped()
    expect(held * Buffer.byteLength(line), `${held} lines held`).toBeLessThanOrEqual(1000)
    expect(held).toBe(4)
    pipe.destroy()
  })
})
