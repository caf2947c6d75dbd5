// The sidecar bench's C open-loop generator (bench/sidecar/openLoop.c, driven by cLoad.ts), compiled
// with the machine's C compiler and run as the bench runs it (one long-lived child, many commands),
// against real node:http servers on 127.0.0.1 port 0, raw node:net servers for the answers no HTTP
// server sends (garbage, an endless header block, a close mid-body), and an nginx pair where nginx
// is installed. Without a C compiler the suite skips with the reason (in CI, where
// scripts/test-tools.sh installs gcc, it fails).
import { execFileSync, spawnSync } from "node:child_process"
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs"
import * as net from "node:net"
import { tmpdir } from "node:os"
import { dirname, join } from "node:path"
import { performance } from "node:perf_hooks"
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest"
import { buildOpenLoop, C_SOURCES, type CLoad, CLoadFailed, CLoadRefused, startCLoad } from "../../bench/sidecar/cLoad.ts"
import { GENERATORS, startGenerator } from "../../bench/sidecar/generator.ts"
import { makeTarget, openLoop } from "../../bench/sidecar/nodeLoad.ts"
import { parseArgs } from "../../bench/sidecar/options.ts"
import { startProxyPair } from "../../bench/sidecar/proxies.ts"
import { makePayload, SERVICE_HOST } from "../../bench/sidecar/request.ts"
import { findExecutable } from "../../bench/sidecar/which.ts"
import { type Answer, benchRequestServer, echo } from "../support/benchRequestServer.ts"
import { assertCapability, type Capability, gate } from "../support/netnsProcess.ts"

const cc = process.env.CC ?? "cc"
const capability: Capability = spawnSync(cc, ["--version"]).status === 0 ? { ok: true } : { ok: false, reason: `no C compiler (${cc}; apt-get install gcc)` }
const compiled = gate("the C open-loop generator", capability)
const payload = makePayload()
const HOST = "127.0.0.1"

const cleanups: Array<() => void | Promise<void>> = []
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup()
})

const listen = async <S extends net.Server>(server: S): Promise<number> => {
  await new Promise<void>((resolve) => server.listen(0, HOST, resolve))
  cleanups.push(() => new Promise<void>((resolve) => server.close(() => resolve())))
  return (server.address() as net.AddressInfo).port
}

/** The bench's request checked and answered (echoed by default); cleaned up after the test. */
const httpServer = (answer?: Answer) => benchRequestServer(cleanups, answer)

/** A raw server: each connection's bytes go to `onData` with its socket (answers no HTTP server would send). */
const rawServer = async (onData: (socket: net.Socket, data: Buffer) => void) => {
  const sockets = new Set<net.Socket>()
  const server = net.createServer((socket) => {
    sockets.add(socket)
    socket.on("close", () => sockets.delete(socket))
    socket.on("error", () => {})
    socket.on("data", (data) => onData(socket, data))
  })
  const port = await listen(server)
  // Before the server's close (which waits for its connections): the generator keeps its idle ones.
  cleanups.push(() => {
    for (const socket of sockets) socket.destroy()
  })
  return port
}

describe.skipIf(compiled.skip)(compiled.title, () => {
  let load: CLoad
  let nextId = 0
  /** A fresh target id for `port` (ids are never reused in a file). */
  const target = async (port: number, maxSockets = 16, hostHeader?: string): Promise<number> => {
    const id = nextId++
    await load.target(id, HOST, port, hostHeader, maxSockets)
    return id
  }

  beforeAll(async () => {
    assertCapability(capability, "a C compiler (the bench's open-loop generator)")
    load = await startCLoad(buildOpenLoop(cc)!)
  })
  afterAll(async () => {
    await load?.close()
  })

  it("sends exactly RATE * MS / 1000 requests on schedule, each answered, due times increasing by 1 / RATE", async () => {
    const { seen, port } = await httpServer(echo)
    const id = await target(port)
    const before = Date.now()
    const sample = await load.run(id, 500, 0, 400, 2000)
    const after = Date.now()
    expect(seen.wrong).toStrictEqual([])
    expect(sample).toMatchObject({ sent: 200, errors: 0, firstError: undefined })
    expect(seen.requests).toBe(200)
    expect(sample.calls.ms.length).toBe(200)
    expect(sample.latencies.length).toBe(200)
    for (let i = 0; i < 200; i++) {
      expect(sample.calls.ms[i]).toBeGreaterThan(0)
      expect(sample.calls.ms[i]).toBeLessThan(2000)
      if (i > 0) expect(sample.calls.dueMs[i]! - sample.calls.dueMs[i - 1]!).toBeCloseTo(2, 2)
    }
    // Epoch milliseconds, inside the run.
    expect(sample.calls.dueMs[0]).toBeGreaterThanOrEqual(before)
    expect(sample.calls.dueMs[199]).toBeLessThanOrEqual(after)
    expect(sample.p50).toBeLessThanOrEqual(sample.p99)
    expect(sample.max).toBe(sample.latencies[199])
    expect(sample.maxOutstanding).toBeGreaterThanOrEqual(1)
  })

  it("reads a long run's answer whole, however many chunks it comes in (3,000 calls, ~100 KB)", async () => {
    const { seen, port } = await httpServer(echo)
    const sample = await load.run(await target(port, 64), 5000, 0, 600, 3000)
    expect(sample).toMatchObject({ sent: 3000, errors: 0 })
    expect(sample.calls.dueMs.length).toBe(3000)
    expect(seen.requests).toBe(3000)
  })

  it("counts only the requests due after the warm-up, and keeps its connections alive across runs", async () => {
    const { seen, port } = await httpServer(echo)
    // One connection at most: every request of both runs on it, however late the server answers
    // on a loaded machine (with more allowed, a stall would open more and prove nothing).
    const id = await target(port, 1)
    const first = await load.run(id, 200, 100, 100, 2000)
    const second = await load.run(id, 200, 0, 100, 2000)
    expect(first).toMatchObject({ sent: 40, errors: 0 })
    expect(first.calls.ms.length).toBe(20)
    expect(second).toMatchObject({ sent: 20, errors: 0 })
    expect(seen.requests).toBe(60)
    expect(seen.connections).toBe(1)
  })

  it("sends nodeLoad.ts's request byte for byte, the Host header given or host:port", async () => {
    const heads: Array<string> = []
    const port = await rawServer((socket, data) => {
      const text = data.toString("latin1")
      const end = text.indexOf("\r\n\r\n")
      if (end !== -1) heads.push(text.slice(0, end + 4))
      socket.end("HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 0\r\n\r\n")
    })
    for (const hostHeader of [undefined, SERVICE_HOST]) {
      const node = makeTarget(HOST, port, hostHeader, 1)
      await openLoop(node, payload, 100, 0, 10)
      node.agent.destroy()
      await load.run(await target(port, 1, hostHeader), 100, 0, 10, 2000)
    }
    expect(heads.length).toBe(4)
    expect(heads[1]).toBe(heads[0])
    expect(heads[3]).toBe(heads[2])
    expect(heads[2]).toContain(`host: ${SERVICE_HOST}\r\n`)
  })

  it("sends with write(2), so the bench's syscall count (/proc/PID/io syscw) sees its sends as it sees the Node loop's", async () => {
    const { port } = await httpServer()
    const id = await target(port)
    const syscw = () => Number(/^syscw: (\d+)$/m.exec(readFileSync(`/proc/${load.pid}/io`, "utf8"))![1])
    const before = syscw()
    expect(await load.run(id, 500, 0, 100, 2000)).toMatchObject({ sent: 50, errors: 0 })
    // Each of the 50 requests takes a write at least (send(2) is not counted: 1, the answer line).
    expect(syscw() - before).toBeGreaterThanOrEqual(50)
  })

  it("counts an answer of status 500 as an error naming the status", async () => {
    const { port } = await httpServer((_body, _req, res) => {
      res.writeHead(500, { "content-length": 5 })
      res.end("oops!")
    })
    const sample = await load.run(await target(port), 500, 0, 100, 2000)
    expect(sample).toMatchObject({ sent: 50, errors: 50, firstError: "status 500" })
    expect(sample.calls.ms.length).toBe(0)
    expect(sample.p99).toBeNaN()
  })

  it("counts a body of the wrong length as an error naming its length", async () => {
    const { port } = await httpServer((body, _req, res) => {
      res.writeHead(200, { "content-length": 1000 })
      res.end(body.subarray(0, 1000))
    })
    expect(await load.run(await target(port), 500, 0, 20, 2000)).toMatchObject({ sent: 10, errors: 10, firstError: "echoed 1000 bytes" })
  })

  it("reads chunked answers (chunk by chunk, trailers too) as whole bodies", async () => {
    const { seen, port } = await httpServer((body, _req, res) => {
      res.writeHead(200, { "transfer-encoding": "chunked", trailer: "x-sum" })
      res.write(body.subarray(0, 100))
      res.write(body.subarray(100, 1000))
      res.addTrailers({ "x-sum": "1024" })
      res.end(body.subarray(1000))
    })
    const sample = await load.run(await target(port), 500, 0, 100, 2000)
    expect(sample).toMatchObject({ sent: 50, errors: 0 })
    expect(sample.calls.ms.length).toBe(50)
    expect(seen.connections).toBeLessThan(50)
  })

  it("opens a new connection after each `connection: close` answer, every request answered", async () => {
    const { seen, port } = await httpServer((body, _req, res) => {
      res.writeHead(200, { "content-length": body.length, connection: "close" })
      res.end(body)
    })
    const sample = await load.run(await target(port), 500, 0, 100, 2000)
    expect(sample).toMatchObject({ sent: 50, errors: 0 })
    expect(seen.connections).toBe(50)
  })

  it("drops an idle connection the server closed between two runs instead of sending on it", async () => {
    // Answers as if keeping the connection, then closes it (a server's keep-alive timeout).
    const port = await rawServer((socket, data) => {
      if (data.includes("\r\n\r\n")) socket.end(Buffer.concat([Buffer.from("HTTP/1.1 200 OK\r\ncontent-length: 1024\r\n\r\n"), payload]))
    })
    const id = await target(port, 4)
    for (let run = 0; run < 5; run++) expect(await load.run(id, 100, 0, 10, 2000)).toMatchObject({ sent: 1, errors: 0 })
  })

  it("reads a body that runs until the server closes (no length, no chunks)", async () => {
    const port = await rawServer((socket, data) => {
      if (data.includes("\r\n\r\n")) socket.end(Buffer.concat([Buffer.from("HTTP/1.1 200 OK\r\n\r\n"), payload]))
    })
    expect(await load.run(await target(port), 200, 0, 50, 2000)).toMatchObject({ sent: 10, errors: 0 })
  })

  it("never holds more than MAXSOCKETS connections: the rest wait in order, all answered", async () => {
    // A slow server (each answer 10 ms late): 2 connections serve 200 req/s at most, so at 1,000
    // req/s most requests must wait for a free connection.
    const { seen, port } = await httpServer((body, req, res) => void setTimeout(() => echo(body, req, res), 10))
    const sample = await load.run(await target(port, 2), 1000, 0, 50, 3000)
    expect(sample).toMatchObject({ sent: 50, errors: 0 })
    expect(seen.connections).toBe(2)
    expect(sample.maxOutstanding).toBeGreaterThanOrEqual(10)
    // Waiting counts: the last requests wait for the first ones' answers.
    expect(sample.max).toBeGreaterThan(100)
  })

  it("measures the requests due while it could not send (the generator stopped) from when they were due", async () => {
    // At the server's 50th request the generator is stopped for 200 ms: the requests that fall due
    // meanwhile go out late, and their latency must include the wait (no coordinated omission).
    let stoppedMs = 0
    let answered = 0
    const { port } = await httpServer((body, req, res) => {
      echo(body, req, res)
      if (++answered !== 50) return
      process.kill(load.pid, "SIGSTOP")
      const stoppedAt = performance.now()
      setTimeout(() => {
        process.kill(load.pid, "SIGCONT")
        stoppedMs = performance.now() - stoppedAt
      }, 200)
    })
    cleanups.push(() => void process.kill(load.pid, "SIGCONT"))
    const sample = await load.run(await target(port), 1000, 0, 400, 2000)
    expect(sample).toMatchObject({ sent: 400, errors: 0 })
    expect(stoppedMs).toBeGreaterThan(150)
    // A request falls due each ms: those of the stop's first half were sent after it ended, so each
    // waited half of it at least (measured from sending, only the few in flight would).
    const late = sample.latencies.filter((ms) => ms >= stoppedMs / 2).length
    expect(late).toBeGreaterThanOrEqual(Math.floor(stoppedMs / 2) - 20)
  })

  it("ends a run GIVEUP_MS after the last request was due, the unanswered counted as errors, and serves the next command", async () => {
    const silent = await rawServer(() => {})
    const started = performance.now()
    const sample = await load.run(await target(silent, 4), 200, 0, 50, 300)
    const took = performance.now() - started
    expect(sample).toMatchObject({ sent: 10, errors: 10, firstError: "10 requests unanswered 300 ms after the last was due" })
    expect(took).toBeGreaterThanOrEqual(300)
    expect(took).toBeLessThan(3000)
    const { port } = await httpServer(echo)
    expect(await load.run(await target(port), 200, 0, 50, 2000)).toMatchObject({ sent: 10, errors: 0 })
  })

  it("counts a connection refused after connect's EINPROGRESS as an error of its request, each one", async () => {
    // A port nobody listens on any more: the refusal comes back through the socket's error, later.
    const server = net.createServer()
    const port = await new Promise<number>((resolve) => server.listen(0, HOST, () => resolve((server.address() as net.AddressInfo).port)))
    await new Promise<void>((resolve) => server.close(() => resolve()))
    expect(await load.run(await target(port, 4), 500, 0, 20, 1000)).toMatchObject({ sent: 10, errors: 10, firstError: "connect: Connection refused" })
  })

  const malformed: ReadonlyArray<readonly [string, (socket: net.Socket) => void, string]> = [
    ["garbage", (socket) => socket.write("garbage that is no answer\r\n\r\n"), "malformed status line"],
    ["a status of four digits", (socket) => socket.write(Buffer.concat([Buffer.from("HTTP/1.1 2000 OK\r\ncontent-length: 1024\r\n\r\n"), payload])), "malformed status line"],
    ["a header block over 16 KiB", (socket) => socket.write(`HTTP/1.1 200 OK\r\nx-long: ${"a".repeat(20_000)}`), "header block over 16384 bytes"],
    ["a close mid-body", (socket) => socket.end("HTTP/1.1 200 OK\r\ncontent-length: 1024\r\n\r\nonly this"), "connection closed mid-answer"],
    ["a close before any answer", (socket) => socket.end(), "connection closed before the answer"],
    ["a Content-Length of 1 TiB", (socket) => socket.write("HTTP/1.1 200 OK\r\ncontent-length: 1099511627776\r\n\r\n"), "content-length over 1 MiB"],
    ["both framings", (socket) => socket.write("HTTP/1.1 200 OK\r\ncontent-length: 4\r\ntransfer-encoding: chunked\r\n\r\n"), "both transfer-encoding and content-length"],
    ["a bad chunk size", (socket) => socket.write("HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n"), "bad chunk size"],
    ["an endless chunk-size line", (socket) => socket.write(`HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n4;${"x".repeat(5000)}`), "chunk-size line over 1024 bytes"],
    ["a chunk of 4 GiB", (socket) => socket.write("HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n100000000\r\n"), "chunk size too large"]
  ]
  for (const [what, answer, error] of malformed) {
    it(`counts ${what} as an error ("${error}"), drops the connection, and serves the next command`, async () => {
      const port = await rawServer((socket, data) => {
        if (data.includes("\r\n\r\n")) answer(socket)
      })
      const sample = await load.run(await target(port, 4), 200, 0, 25, 1000)
      expect(sample).toMatchObject({ sent: 5, errors: 5, firstError: error })
      const good = await httpServer(echo)
      expect(await load.run(await target(good.port), 200, 0, 25, 2000)).toMatchObject({ sent: 5, errors: 0 })
    })
  }

  it("survives 60 mangled answers (seeded: cut, bytes flipped, random framing), each request ending once", async () => {
    let seed = 14
    const random = () => {
      // mulberry32: the same answers every run.
      seed = (seed + 0x6d2b79f5) | 0
      let t = Math.imul(seed ^ (seed >>> 15), 1 | seed)
      t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t
      return ((t ^ (t >>> 14)) >>> 0) / 4294967296
    }
    const pick = <A>(all: ReadonlyArray<A>): A => all[Math.floor(random() * all.length)]!
    const mangled = (): Buffer => {
      const framing = pick([
        `content-length: ${pick([0, 1, 1023, 1024, 1025, 99999999])}\r\n`,
        `transfer-encoding: chunked\r\n`,
        `transfer-encoding: gzip, chunked\r\n`,
        ``
      ])
      const body = framing.startsWith("transfer") ? Buffer.from(`${pick(["400", "fffffff", "-1", "0", "400;x=y"])}\r\n${"b".repeat(1024)}\r\n0\r\n${pick(["", "x: y\r\n"])}\r\n`) : payload
      const answer = Buffer.concat([Buffer.from(`HTTP/1.${pick(["0", "1", "9"])} ${pick(["200", "100", "101", "204", "2000", "abc"])} OK\r\n${framing}${pick(["connection: close\r\n", "connection: keep-alive\r\n", ""])}\r\n`), body])
      const cut = answer.subarray(0, random() < 0.3 ? Math.floor(random() * answer.length) : answer.length)
      for (let flips = random() < 0.5 ? Math.floor(random() * 8) : 0; flips > 0; flips--) cut[Math.floor(random() * cut.length)] = Math.floor(random() * 256)
      return cut
    }
    const port = await rawServer((socket, data) => {
      if (data.includes("\r\n\r\n")) socket.end(mangled())
    })
    const id = await target(port, 4)
    for (let i = 0; i < 60; i++) {
      const sample = await load.run(id, 1000, 0, 1, 1000)
      expect(sample.sent).toBe(1)
      expect(sample.errors + sample.calls.ms.length).toBe(1)
    }
    const { port: good } = await httpServer(echo)
    expect(await load.run(await target(good), 200, 0, 25, 2000)).toMatchObject({ sent: 5, errors: 0 })
  })

  it("refuses a malformed command, a line over 4 KiB and an unknown target with an error line, and goes on", async () => {
    expect(await load.command("launch 1 2 3")).toMatchObject({ error: expect.stringMatching(/^unknown or malformed command/) })
    expect(await load.command(`target 0 ${HOST} 80 ${"h".repeat(5000)} 1`)).toStrictEqual({ error: "command line over 4096 bytes" })
    expect(await load.command(`target 0 ${HOST} 80 ${"h".repeat(300)} 1`)).toStrictEqual({ error: "host header over 256 bytes" })
    expect(await load.command("target 0 localhost 80 - 1")).toStrictEqual({ error: "host must be an IPv4 address" })
    await expect(load.run(63, 100, 0, 10, 10)).rejects.toThrow(CLoadRefused)
    const good = await httpServer(echo)
    const id = await target(good.port)
    expect(await load.command(`run ${id} 0 10 0 10`)).toMatchObject({ error: expect.stringMatching(/^rate must be/) })
    // Each duration within bounds alone, their sum past a long's range: refused, not wrapped negative.
    expect(await load.command(`run ${id} 1000 9223372036854775807 1 0`, 2000)).toStrictEqual({ error: "bad durations" })
    expect(await load.command(`run ${id} 1000 1 9223372036854775807 0`, 2000)).toStrictEqual({ error: "bad durations" })
    expect(await load.run(id, 200, 0, 25, 2000)).toMatchObject({ sent: 5, errors: 0 })
  })

  it("at its cap of connections over all targets, closes another target's idle one for a new one", async () => {
    // The generator compiled with a cap of 4 (MAX_CONNS), beside the suite's.
    const dir = mkdtempSync(join(tmpdir(), "cload-cap-"))
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }))
    const binary = join(dir, "openloop")
    execFileSync(cc, ["-O2", "-DMAX_CONNS=4", "-o", binary, ...C_SOURCES])
    const capped = await startCLoad(binary)
    cleanups.push(capped.close)
    // Each server answers only once 4 requests wait: 4 requests need 4 connections at once.
    const inFours = () =>
      httpServer((body, req, res) => {
        held.push(() => echo(body, req, res))
        if (held.length === 4) for (const answer of held.splice(0)) answer()
      })
    const held: Array<() => void> = []
    const first = await inFours()
    let closes = 0
    const firstsClosed = new Promise<void>((resolve) => first.server.on("connection", (socket: net.Socket) => socket.on("close", () => ++closes === 4 && resolve())))
    const second = await inFours()
    await capped.target(0, HOST, first.port, undefined, 4)
    await capped.target(1, HOST, second.port, undefined, 4)
    expect(await capped.run(0, 1000, 0, 4, 2000)).toMatchObject({ sent: 4, errors: 0 })
    expect(await capped.run(1, 1000, 0, 4, 2000)).toMatchObject({ sent: 4, errors: 0 })
    expect([first.seen.connections, second.seen.connections]).toStrictEqual([4, 4])
    // The first target's four idle connections went for the second's (the test's bound if not).
    await firstsClosed
    expect(closes).toBe(4)
  })

  const nginx = findExecutable("nginx")
  it.skipIf(nginx === undefined)(`through an nginx pair to a node:http app, every answer right${nginx === undefined ? " (skipped: nginx not installed; apt-get install nginx-light)" : ""}`, async () => {
    const { seen, port } = await httpServer(echo)
    const dir = mkdtempSync(join(tmpdir(), "cload-nginx-"))
    const spawned: Array<() => Promise<void>> = []
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }))
    cleanups.push(async () => {
      for (const stop of spawned.reverse()) await stop()
    })
    const pair = await startProxyPair("nginx", port, dir, spawned)
    if (typeof pair === "string") throw new Error(pair)
    const sample = await load.run(await target(pair.entry.port, 16, SERVICE_HOST), 1000, 100, 300, 3000)
    expect(sample).toMatchObject({ sent: 400, errors: 0 })
    expect(sample.calls.ms.length).toBe(300)
    expect(seen.wrong).toStrictEqual([])
    expect(seen.requests).toBe(400)
  })
})

describe("the generator's driver (cLoad.ts)", () => {
  /** A cache root of its own (the real one, the temp dir, is shared with the bench). */
  const cacheRoot = () => {
    const root = mkdtempSync(join(tmpdir(), "cload-cache-"))
    cleanups.push(() => rmSync(root, { recursive: true, force: true }))
    return root
  }

  it.skipIf(compiled.skip)("builds a binary of its own for another compiler, and reuses each", () => {
    const root = cacheRoot()
    // Another compiler (as a sanitizing wrapper would be): the same sources, its own binary.
    const wrapper = join(root, "other-cc")
    writeFileSync(wrapper, `#!/bin/sh\nexec ${cc} "$@"\n`, { mode: 0o755 })
    const plain = buildOpenLoop(cc, root)
    const wrapped = buildOpenLoop(wrapper, root)
    expect(wrapped).not.toBe(plain)
    expect(buildOpenLoop(cc, root)).toBe(plain)
    expect(buildOpenLoop(wrapper, root)).toBe(wrapped)
  })

  it.skipIf(compiled.skip)("never runs a cached binary from a directory others may write to", () => {
    const root = cacheRoot()
    const binary = buildOpenLoop(cc, root)!
    // Anyone could have put their own program there since.
    chmodSync(dirname(binary), 0o777)
    expect(() => buildOpenLoop(cc, root)).toThrow(CLoadFailed)
    expect(() => buildOpenLoop(cc, root)).toThrow(/writable by others/)
  })

  it("kills a generator that stops answering and fails what waited on it, past the run's time and the grace", async () => {
    // A stand-in that reads its commands and never answers (a hung generator).
    const dir = mkdtempSync(join(tmpdir(), "cload-hung-"))
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }))
    const binary = join(dir, "hung")
    writeFileSync(binary, "#!/bin/sh\nexec cat > /dev/null\n", { mode: 0o755 })
    const hung = await startCLoad(binary, 200)
    cleanups.push(hung.close)
    const started = performance.now()
    await expect(hung.run(0, 100, 0, 100, 100)).rejects.toThrow(/the generator gave no answer to "run 0 100 100 0 100" within 0\.4 s; killed it/)
    expect(performance.now() - started).toBeGreaterThanOrEqual(400)
    // Killed: what comes next fails at once.
    await expect(hung.target(0, HOST, 1, undefined, 1)).rejects.toThrow(/gave no answer/)
    await hung.close()
    expect(() => process.kill(hung.pid, 0)).toThrow(/ESRCH/)
  })
})

describe("the open loop's generator (--generator)", () => {
  it("is C by default, Node when asked, and names an unknown one", () => {
    expect(parseArgs([]).generator).toBe("c")
    expect(parseArgs(["--generator", "node"]).generator).toBe("node")
    expect(() => parseArgs(["--generator", "wrk2"])).toThrow(/--generator: unknown wrk2 \(choose from c, node\)/)
  })

  it("falls back to the Node loop without a C compiler, saying how to get one", async () => {
    const { generator, note } = await startGenerator<string>("c", () => undefined)
    cleanups.push(generator.close)
    expect(generator.kind).toBe("node")
    expect(generator.pid).toBe(process.pid)
    expect(note).toBe("cc not found: apt-get install gcc (the open loop runs on the Node generator meanwhile)")
  })

  for (const kind of GENERATORS) {
    it.skipIf(kind === "c" && compiled.skip)(`runs a slice per path on the ${kind} generator, each answered by its own server`, async () => {
      const one = await httpServer(echo)
      const two = await httpServer(echo)
      const { generator, note } = await startGenerator<string>(kind)
      cleanups.push(generator.close)
      expect(note).toBeUndefined()
      expect(generator.kind).toBe(kind)
      if (kind === "c") expect(generator.pid).not.toBe(process.pid)
      await generator.targets(new Map([["one", { host: HOST, port: one.port, hostHeader: undefined }], ["two", { host: HOST, port: two.port, hostHeader: SERVICE_HOST }]]), 8)
      expect(await generator.run("one", 400, 50)).toMatchObject({ sent: 20, errors: 0 })
      expect(await generator.run("two", 400, 25)).toMatchObject({ sent: 10, errors: 0 })
      expect([one.seen.requests, two.seen.requests]).toStrictEqual([20, 10])
      // A new round's targets: the connections of the last one are closed first.
      await generator.targets(new Map([["one", { host: HOST, port: one.port, hostHeader: undefined }]]), 8)
      expect(await generator.run("one", 400, 25)).toMatchObject({ sent: 10, errors: 0 })
      expect(one.seen.connections).toBeGreaterThanOrEqual(2)
    })
  }
})
