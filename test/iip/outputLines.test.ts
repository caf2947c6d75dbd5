// lineWriter: the bound on what a stalled stdout or stderr holds (src/iip/outputLines.ts).
import { spawn } from "node:child_process"
import { closeSync, openSync } from "node:fs"
import { resolve } from "node:path"
import { Writable } from "node:stream"
import { describe, expect, it } from "vitest"
import { lineWriter } from "../../src/iip/outputLines.ts"
import { CHILD_START_MS, holdsStarts } from "../support/childStart.ts"
import { withTimeout } from "../support/iipRaw.ts"

const outputLines = resolve(import.meta.dirname, "../../src/iip/outputLines.ts")

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

  it("flush says the lines dropped and not yet said, once, whatever the stream holds (a stop: no line follows)", () => {
    const output = stalled()
    const write = lineWriter(output, 20)
    for (let i = 0; i < 5; i++) write("0123456789\n")
    write.flush()
    write.flush()
    const held = output.drain()
    expect(held.slice(0, 1)).toStrictEqual(["0123456789\n"])
    expect(held.slice(1).map((line) => JSON.parse(line) as unknown)).toMatchObject([{ event: "log-lines-dropped", lines: 4 }])
  })

  it("counts the lines a real stream holds unwritten, the dropped-lines note among them, until it passes them on", async () => {
    // A stream that takes nothing until `go`: its write callbacks come only then.
    let go: () => void = () => {}
    const pipe = new Writable({ highWaterMark: 16, write: (_chunk, _encoding, done) => void (go = done) })
    const write = lineWriter(pipe, 30)
    for (let i = 0; i < 5; i++) write("0123456789\n")
    // Two held (one in the stream's write, one queued: 22 bytes of the 30), three dropped; the note joins them at a stop.
    expect([write.unwritten(), write.dropped()]).toStrictEqual([2, 3])
    write.flush()
    expect(write.unwritten()).toBe(3)
    for (let i = 0; i < 3; i++) {
      go()
      await new Promise((resolve) => setImmediate(resolve))
    }
    expect(write.unwritten()).toBe(0)
    pipe.destroy()
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

describe("the process's own streams", () => {
  /** A node process writing `lines` access lines through stdoutLines to `stdout`; its stderr. */
  const run = (stdout: number | "pipe", lines: number): Promise<string> => {
    const script = [
      `import { stdoutLines } from ${JSON.stringify(outputLines)}`,
      `process.on("uncaughtException", (error) => process.stderr.write("uncaught " + error.code + "\\n"))`,
      `for (let i = 0; i < ${lines}; i++) stdoutLines()("an access line\\n")`
    ].join("\n")
    const child = spawn(process.execPath, ["--input-type=module", "-e", script], { stdio: ["ignore", stdout, "pipe"] })
    if (child.stdout !== null) child.stdout.destroy()
    let stderr = ""
    child.stderr!.on("data", (chunk: Buffer) => (stderr += chunk.toString()))
    return withTimeout(new Promise((done) => child.once("close", () => done(stderr))), CHILD_START_MS, "the writing process to finish")
  }

  it("a stdout that fails otherwise than with its reader gone (ENOSPC: a full disk) is not silenced", async () => {
    const full = openSync("/dev/full", "w")
    try {
      expect(await run(full, 3)).toContain("uncaught ENOSPC")
    } finally {
      closeSync(full)
    }
  }, holdsStarts(1, 5000))

  it("a stdout whose reader is gone (EPIPE) drops its lines quietly", async () => {
    expect(await run("pipe", 3)).toBe("")
  }, holdsStarts(1, 5000))
})
