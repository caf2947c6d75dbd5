// The sidecar's own environment: its stdout and stderr are pipes a stalled container log driver
// stops reading. Node on Linux writes to a pipe asynchronously and queues what the pipe does not
// take, without bound; the access log (one line per request, the URI the app chose in it) and the
// warnings must not grow the sidecar's memory with each request while nobody reads them.
import { spawn } from "node:child_process"
import { readFileSync } from "node:fs"
import * as http from "node:http"
import { resolve } from "node:path"
import { afterEach, describe, expect, it } from "vitest"
import { CHILD_START_MS, holdsStarts } from "../support/childStart.ts"
import { withTimeout } from "../support/iipRaw.ts"

const main = resolve(import.meta.dirname, "../../src/cli/main.ts")
const stops: Array<() => void> = []
afterEach(() => {
  for (const stop of stops.splice(0)) stop()
})

const rssBytes = (pid: number): number => Number(/VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"))![1]) * 1024

/** `count` GETs of `path` to `host:port` over `connections` keep-alive connections; statuses seen. */
const requests = async (port: number, path: string, count: number, connections: number): Promise<Set<number>> => {
  const agent = new http.Agent({ keepAlive: true, maxSockets: connections })
  const statuses = new Set<number>()
  let next = 0
  const worker = async (): Promise<void> => {
    while (next < count) {
      next++
      statuses.add(await new Promise<number>((done, failed) => {
        http.get({ host: "127.0.0.1", port, path, agent, headers: { host: "nowhere" } }, (res) => {
          res.resume()
          res.once("end", () => done(res.statusCode!))
        }).once("error", failed)
      }))
    }
  }
  await Promise.all(Array.from({ length: connections }, worker))
  agent.destroy()
  return statuses
}

/** A sidecar with the access log on (and `extraArgs`); its stdout read up to the ready line, then left unread. */
const startSidecar = async (extraArgs: ReadonlyArray<string> = []) => {
  const child = spawn(process.execPath, [main, "sidecar", "--service", "web", "--outbound", "127.0.0.1:0", "--inbound", "127.0.0.1:0", "--admin", "127.0.0.1:0", "--admin-control", "127.0.0.1:0", "--access-log", ...extraArgs], {
    stdio: ["ignore", "pipe", "pipe"],
    env: Object.fromEntries(Object.entries(process.env).filter(([name]) => !name.startsWith("IIP_MESH_") && !name.startsWith("OTEL_")))
  })
  stops.push(() => child.kill("SIGKILL"))
  let stderr = ""
  child.stderr.on("data", (chunk: Buffer) => (stderr += chunk.toString()))
  const readyLine = new Promise<{ outbound: string; admin: string }>((done, failed) => {
    let out = ""
    const onData = (chunk: Buffer): void => {
      out += chunk.toString()
      const end = out.indexOf("\n")
      if (end < 0) return
      // From here on nobody reads stdout: the pipe fills and the sidecar's writes queue.
      child.stdout.off("data", onData)
      child.stdout.pause()
      done(JSON.parse(out.slice(0, end)) as { outbound: string; admin: string })
    }
    child.stdout.on("data", onData)
    child.once("exit", (code) => failed(new Error(`sidecar exited with ${code}: ${stderr}`)))
  })
  const ready = await withTimeout(readyLine, CHILD_START_MS, "the sidecar-ready line")
  return { child, port: Number(ready.outbound.split(":")[1]), admin: ready.admin, stderr: () => stderr }
}

describe("a sidecar whose stdout nobody reads", () => {
  it("holds a bounded amount of access log, says how many lines it dropped once read again, and counts them in /metrics", async () => {
    const { admin, child, port } = await startSidecar()
    const uri = `/${"u".repeat(8000)}`
    await requests(port, uri, 500, 4)
    const before = rssBytes(child.pid!)
    const statuses = await requests(port, uri, 3000, 8)
    const grown = rssBytes(child.pid!) - before
    // Past IIP's 2,048-byte paths: answered 414 at once, its access line 8 KB. 3,000 of them are 24 MB,
    // which grew a sidecar queueing them by 46 MB (10,000: 170 MB); bounded, it grew 0.8 to 2.9 MB.
    expect([...statuses]).toStrictEqual([414])
    expect(grown, `RSS grew by ${(grown / 1e6).toFixed(1)} MB`).toBeLessThan(20e6)
    const lines: Array<Record<string, unknown>> = []
    await new Promise<void>((done) => {
      let out = ""
      child.stdout.on("data", (chunk: Buffer) => {
        out += chunk.toString()
        const end = out.lastIndexOf("\n")
        for (const line of out.slice(0, end + 1).split("\n").filter((l) => l !== "")) lines.push(JSON.parse(line) as Record<string, unknown>)
        out = out.slice(end + 1)
        if (lines.some((l) => l.event === "log-lines-dropped")) done()
      })
      child.stdout.resume()
      // The first line after the stall carries the count; one more request writes it.
      void requests(port, "/after", 1, 1)
    })
    const dropped = lines.find((l) => l.event === "log-lines-dropped")!
    expect(Number(dropped.lines)).toBeGreaterThan(0)
    expect(lines.filter((l) => l.status === 414).length + Number(dropped.lines)).toBeGreaterThanOrEqual(3000)
    // Counted where an alert can see it, too.
    const metrics = await (await fetch(`http://${admin}/metrics`)).text()
    expect(metrics).toContain(`iip_mesh_log_lines_dropped_total{stream="stdout"} ${dropped.lines}\n`)
  }, holdsStarts(1, 30_000))

  it("stopped while lines are dropped, says how many before it exits", async () => {
    const { child, port } = await startSidecar()
    // 400 lines of 8 KB: past the pipe's 64 KiB and the 1 MiB held, about 250 are dropped.
    expect([...await requests(port, `/${"u".repeat(8000)}`, 400, 4)]).toStrictEqual([414])
    const exited = new Promise<number | null>((done) => child.once("exit", (code) => done(code)))
    child.kill("SIGTERM")
    let out = ""
    child.stdout.on("data", (chunk: Buffer) => (out += chunk.toString()))
    child.stdout.resume()
    await new Promise((done) => child.stdout.once("end", done))
    expect(await exited).toBe(0)
    const lines = out.split("\n").filter((l) => l !== "").map((l) => JSON.parse(l) as Record<string, unknown>)
    const dropped = lines.find((l) => l.event === "log-lines-dropped")
    expect(dropped, "a log-lines-dropped line").toBeDefined()
    expect(lines.filter((l) => l.status === 414).length + Number(dropped!.lines)).toBe(400)
  }, holdsStarts(1, 30_000))

  it("stopped while nobody reads its stdout any more, exits within the output flush bound and says on stderr what it left unwritten", async () => {
    const { child, port, stderr } = await startSidecar(["--output-flush-timeout", "1500ms"])
    expect([...await requests(port, `/${"u".repeat(8000)}`, 400, 4)]).toStrictEqual([414])
    const exited = new Promise<number | null>((done) => child.once("exit", (code) => done(code)))
    const stopped = performance.now()
    child.kill("SIGTERM")
    // Before: it never exited (node waits for the pipe to take what it holds); bounded here, far past the 1.5 s.
    let giveUp: NodeJS.Timeout | undefined
    const code = await Promise.race([exited, new Promise<string>((done) => (giveUp = setTimeout(() => done("still running after 8 s"), 8000)))])
    clearTimeout(giveUp)
    const tookMs = performance.now() - stopped
    expect(code).toBe(0)
    // It waited the bound (not less: a pipe that drains in time loses nothing), then exited: an idle
    // sidecar's drain takes milliseconds, so the 2.5 s past the bound are slack for a loaded machine.
    expect(tookMs).toBeGreaterThanOrEqual(1400)
    expect(tookMs).toBeLessThan(4000)
    const unwritten = stderr().split("\n").filter((l) => l.includes('"output-unwritten"')).map((l) => JSON.parse(l) as Record<string, unknown>)
    console.log(`stalled stdout at stop: exited ${code} after ${tookMs.toFixed(0)} ms, ${JSON.stringify(unwritten)}`)
    expect(unwritten).toHaveLength(1)
    expect(unwritten[0]).toMatchObject({ stream: "stdout", afterMs: 1500 })
    // What the pipe never took: the lines queued (about 1 MiB of 8 KB lines, the log-lines-dropped line among them), and those dropped before.
    expect(Number(unwritten[0]!.lines)).toBeGreaterThan(50)
    expect(Number(unwritten[0]!.dropped)).toBeGreaterThan(0)
    expect(Number(unwritten[0]!.lines) + Number(unwritten[0]!.dropped)).toBeLessThanOrEqual(401)
  }, holdsStarts(1, 30_000))

  it("stopped while its stdout is read slowly (about 300 KB/s: the MiB it holds takes past the bound), waits while lines are taken: every line arrives, none said unwritten", async () => {
    const { child, port, stderr } = await startSidecar(["--output-flush-timeout", "1s"])
    // About 1 MiB of 8 KB lines held (and the pipe's 64 KiB), the rest dropped: some 3.5 s of reading at 300 KB/s.
    expect([...await requests(port, `/${"u".repeat(8000)}`, 400, 4)]).toStrictEqual([414])
    const exited = new Promise<number | null>((done) => child.once("exit", (code) => done(code)))
    child.kill("SIGTERM")
    // A reader that takes 300 KB a second: each chunk read, it pauses for the time that chunk is worth at that rate.
    let out = ""
    let paused: NodeJS.Timeout | undefined
    child.stdout.on("data", (chunk: Buffer) => {
      out += chunk.toString()
      child.stdout.pause()
      paused = setTimeout(() => child.stdout.resume(), chunk.length / 300)
    })
    child.stdout.resume()
    const ended = new Promise((done) => child.stdout.once("end", done))
    const code = await exited
    await ended
    clearTimeout(paused)
    // A line cut off by the exit (the process ended mid-write) is no JSON: counted as torn.
    const parsed = out.split("\n").filter((l) => l !== "").map((l) => {
      try {
        return JSON.parse(l) as Record<string, unknown>
      } catch {
        return undefined
      }
    })
    const lines = parsed.filter((l) => l !== undefined)
    const torn = parsed.length - lines.length
    const dropped = Number(lines.find((l) => l.event === "log-lines-dropped")?.lines ?? 0)
    const unwritten = stderr().split("\n").filter((l) => l.includes('"output-unwritten"'))
    console.log(`slow stdout at stop: exited ${code}, ${out.length} bytes read, ${lines.length} lines (${torn} torn), ${dropped} dropped before the stop, ${JSON.stringify(unwritten)}`)
    // Before: cut at the 1 s bound although the pipe was taking lines (the last one torn), the rest said unwritten.
    expect({ code, torn, unwritten, whole: lines.filter((l) => l.status === 414).length + dropped }).toStrictEqual({ code: 0, torn: 0, unwritten: [], whole: 400 })
  }, holdsStarts(1, 30_000))

  it("whose stdout is closed keeps answering, and a write to it is no uncaught exception", async () => {
    const { admin, child, port } = await startSidecar()
    child.stdout.destroy()
    expect([...await requests(port, "/x", 20, 2)]).toStrictEqual([503])
    const metrics = await (await fetch(`http://${admin}/metrics`)).text()
    // Before: one per request (20), each an uncaught-exception line on stderr.
    expect(metrics).toContain(`iip_mesh_uncaught_errors_total{kind="exception"} 0\n`)
    expect(child.exitCode).toBeNull()
  }, holdsStarts(1, 30_000))
})
