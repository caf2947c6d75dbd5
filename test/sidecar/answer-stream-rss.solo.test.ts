// A's memory while its callers stop reading large answers that stream back from B: B's app (node:http)
// streams 64 MiB to every call, and at A callers that never read (HTTP/1.1 sockets paused from the
// start, node:http2 streams paused) take none of it; meanwhile one caller on the same mesh connection
// reads a 16 MiB answer whole, and must be served while the others are held.
// Before --outbound-max-held-answer-bytes each answer could hold its whole 1 MiB stream window at A
// (granted by the hello, whether its caller read or not): A went +476.6 MiB (+453.7 after its idle
// GC; B's own budgets had ended 446 of the answers, A kept what it took of each until its caller
// went). Now A's connections state 64 KiB and an answer is widened as its caller reads, within the
// 64 MiB budget: +197.8 MiB, +142.1 after the GC, 74.2 MiB of answers held (one run each, beside
// other work).
// A is the built CLI in a process of its own (its memory measured alone, from /proc); B (in process),
// its app and the callers are here. Solo: it measures a process's memory.
import * as http from "node:http"
import * as http2 from "node:http2"
import * as net from "node:net"
import { afterEach, beforeEach, describe, expect, it } from "vitest"
import { memoryOf, spawnBuiltSidecar } from "../support/builtSidecar.ts"
import { Cleanup, waitFor } from "../support/iipRaw.ts"
import { LOOPBACK, sidecarConfig, startApp, startSidecar } from "../support/sidecarHarness.ts"
import { portOf } from "../support/sidecarProcess.ts"

const MiB = 1024 * 1024
const H1_CALLERS = 400
const H2_CALLERS = 100
const ANSWER = 64 * MiB
const FAST_ANSWER = 16 * MiB
const CHUNK = 64 * 1024
const BUDGET = 64 * MiB
const chunk = Buffer.alloc(CHUNK, 0x61)

const metricIn = (text: string, name: string): number => {
  const line = text.split("\n").find((l) => l.startsWith(`${name} `))
  return line === undefined ? Number.NaN : Number(line.slice(line.lastIndexOf(" ") + 1))
}

const get = (url: string, headers: http.OutgoingHttpHeaders = {}): Promise<{ status: number; bytes: number }> =>
  new Promise((resolve, reject) => {
    const req = http.get(url, { agent: false, headers }, (res) => {
      let bytes = 0
      res.on("data", (data: Buffer) => (bytes += data.length))
      res.on("end", () => resolve({ status: res.statusCode ?? 0, bytes }))
      res.on("error", reject)
    })
    req.on("error", reject)
  })

describe("A's memory while its callers read none of the answers streaming back", () => {
  let cleanup: Cleanup
  beforeEach(() => {
    cleanup = new Cleanup()
  })
  afterEach(() => cleanup.run())

  it(`${H1_CALLERS} HTTP/1.1 and ${H2_CALLERS} h2c callers that never read 64 MiB answers: A's RSS stays bounded, a caller reading on the same connection is served`, { timeout: 180_000 }, async () => {
    // The app at B streams each answer in 64 KiB writes as fast as B takes them: what it wrote is what left it.
    const app = { written: 0, started: 0, open: new Set<http.ServerResponse>() }
    const server = await startApp(cleanup, (req, res) => {
      const total = req.url === "/fast" ? FAST_ANSWER : ANSWER
      app.started++
      app.open.add(res)
      res.on("close", () => app.open.delete(res))
      res.writeHead(200, { "content-type": "application/octet-stream", "content-length": String(total) })
      let sent = 0
      const pump = () => {
        while (sent < total && !res.destroyed) {
          sent += chunk.length
          app.written += chunk.length
          if (!res.write(chunk)) return void res.once("drain", pump)
        }
        res.end()
      }
      pump()
    })
    cleanup.add(() => app.open.forEach((res) => res.destroy()))
    const b = await startSidecar(cleanup, sidecarConfig({ service: "feed", app: server.address, requestTimeoutMs: 120_000, appPoolSize: 1000 }))
    const a = spawnBuiltSidecar(cleanup, ["--service", "shop", "--endpoint", `feed=${b.inboundAddress}`, "--inbound", "127.0.0.1:0", "--outbound", "127.0.0.1:0", "--admin", "127.0.0.1:0", "--request-timeout", "120000"])
    const ready = await a.ready
    const pid = a.proc.pid!
    const outbound = `http://${LOOPBACK}:${portOf(ready.outbound)}`
    // One answer read whole first (the connection to B up, the paths warm), then A at rest.
    expect(await get(`${outbound}/fast`, { host: "feed" })).toStrictEqual({ status: 200, bytes: FAST_ANSWER })
    const before = memoryOf(pid)

    for (let i = 0; i < H1_CALLERS; i++) {
      const socket = net.connect(portOf(ready.outbound), LOOPBACK)
      socket.on("error", () => {})
      socket.pause()
      socket.write("GET /big HTTP/1.1\r\nhost: feed\r\n\r\n")
      cleanup.add(() => socket.destroy())
    }
    const sessions = Array.from({ length: Math.ceil(H2_CALLERS / 50) }, () => {
      const session = http2.connect(outbound)
      session.on("error", () => {})
      cleanup.add(() => session.destroy())
      return session
    })
    for (let i = 0; i < H2_CALLERS; i++) {
      const stream = sessions[i % sessions.length]!.request({ ":path": "/big", ":authority": "feed" })
      stream.on("error", () => {})
      stream.pause()
    }
    // All the calls reached the app, and it has written nothing more for a second: every answer is
    // held as far as the mesh lets it go.
    await waitFor(() => app.started >= 1 + H1_CALLERS + H2_CALLERS, 60_000, "every call to reach the app")
    let last = -1
    let stillSince = performance.now()
    await waitFor(() => {
      if (app.written !== last) {
        last = app.written
        stillSince = performance.now()
      }
      return performance.now() - stillSince > 1000
    }, 120_000, "the app's writes to stop")
    // A caller that reads, on the same mesh connection, while the others are held.
    const fastAt = performance.now()
    expect(await get(`${outbound}/fast`, { host: "feed" })).toStrictEqual({ status: 200, bytes: FAST_ANSWER })
    const fastMs = performance.now() - fastAt
    const held = memoryOf(pid)
    const metrics = await new Promise<string>((resolve, reject) => {
      http.get(`http://${ready.admin}/metrics`, (res) => {
        let text = ""
        res.setEncoding("utf8")
        res.on("data", (part: string) => (text += part))
        res.on("end", () => resolve(text))
      }).on("error", reject)
    })
    const mib = (bytes: number) => (bytes / MiB).toFixed(1)
    const answerBytes = metricIn(metrics, "iip_mesh_outbound_answer_held_bytes")
    // Then A's idle GC (--idle-gc, 2 s after the burst): what is left is what A holds live.
    const released = a.stderr().split("memory-released").length
    await waitFor(() => a.stderr().split("memory-released").length > released, 60_000, "A's idle GC after the burst")
    const settled = memoryOf(pid)
    console.log(
      `A: RSS at rest ${mib(before.rss)} MiB, held ${mib(held.rss)} (+${mib(held.rss - before.rss)}), after its GC ${mib(settled.rss)} (+${mib(settled.rss - before.rss)}), peak ${mib(held.peak)}; answer bytes held ${mib(answerBytes)} MiB; the app wrote ${mib(app.written)} MiB to ${app.started} answers, ${app.started - app.open.size} ended by B; a 16 MiB answer read through in ${fastMs.toFixed(0)} ms`
    )
    // The budget (64 MiB), and past it what each answer may hold: its first window and a chunk granted once its caller's socket took all it held.
    expect(answerBytes).toBeLessThanOrEqual(BUDGET + (H1_CALLERS + H2_CALLERS) * 2 * CHUNK)
    // What A holds live after its GC: those, and what they do not count (the callers' sockets' buffers in node, the streams' objects, heap slack).
    expect(settled.rss - before.rss).toBeLessThan(BUDGET + (H1_CALLERS + H2_CALLERS) * 2 * CHUNK + 64 * MiB)
  })
})
