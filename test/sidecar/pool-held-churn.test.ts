// B's held budget for its HTTP/1.1 app leg's streamed answers (src/sidecar/appExchange.ts over
// src/sidecar/heldAnswers.ts) under churn: every way a streamed answer ends (read whole, its caller
// cancels, its deadline, the app breaks it off, taken back past the budget, its answer ended but
// unread and its peer's connection lost, stalled mid-answer and its peer's connection lost) must let
// go of what it counted: its queue's bytes, its paused socket's MiB, and its place among the joined
// answers (a leak there grows the budget's set by one answer, queue and all, per call). And a socket
// destroyed mid-answer is never reused: calls after the churn get their own bytes, whole.
// Real peers: a node:http app, node:http callers through A, hand-played mesh dialers that grant each
// stream one byte (test/support/budgetAttack.ts).
import * as http from "node:http"
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest"
import { encodeEnvelope, EnvelopeKind } from "../../src/protocol/mesh.ts"
import { HeldAnswers } from "../../src/sidecar/heldAnswers.ts"
import { HttpMeta } from "../../src/sidecar/httpEnvelope.ts"
import { metric } from "../support/eventStreamApp.ts"
import { meshDialer } from "../support/budgetAttack.ts"
import { Cleanup, frame, waitFor } from "../support/iipRaw.ts"
import { LOOPBACK, sidecarConfig, startApp, startSidecar } from "../support/sidecarHarness.ts"

const MiB = 1024 * 1024
const KiB = 1024
const GET = new Map<string, string>().set(HttpMeta.method, "GET").set(HttpMeta.authority, "catalog")

/** What a GET through A came to: its status, the bytes read, whether every byte was `fill`, and its error if it broke. */
interface Got {
  readonly status: number
  readonly read: number
  readonly intact: boolean
  readonly error?: string
}

/** A GET of `path` through A; `cancelAfterFirst`: the caller goes away at its first bytes. */
const get = (port: number, path: string, cleanup: Cleanup, headers: Record<string, string> = {}, cancelAfterFirst = false): Promise<Got> =>
  new Promise((resolve) => {
    let read = 0
    let intact = true
    let ended = false
    const end = (got: Got) => {
      if (ended) throw new Error(`${path}: ended twice`)
      ended = true
      resolve(got)
    }
    const fill = Number(new URL(path, "http://a").searchParams.get("fill") ?? "0")
    const req = http.get({ host: LOOPBACK, port, path, headers: { host: "catalog", ...headers }, agent: false }, (res) => {
      res.on("data", (chunk: Buffer) => {
        read += chunk.length
        if (chunk.some((byte) => byte !== fill)) intact = false
        if (cancelAfterFirst) {
          req.destroy()
          end({ status: res.statusCode ?? 0, read, intact, error: "cancelled" })
        }
      })
      res.on("end", () => end({ status: res.statusCode ?? 0, read, intact }))
      res.on("error", (error) => {
        if (!ended) end({ status: res.statusCode ?? 0, read, intact, error: error.message })
      })
    })
    req.on("error", (error) => {
      if (!ended) end({ status: 0, read, intact, error: error.message })
    })
    cleanup.add(() => req.destroy())
  })

describe("B's held budget for its HTTP/1.1 leg under churn", () => {
  let cleanup: Cleanup
  beforeEach(() => {
    cleanup = new Cleanup()
  })
  afterEach(() => {
    vi.restoreAllMocks()
    return cleanup.run()
  })

  it("every way a streamed answer ends (read whole, cancelled, its deadline, broken off by the app, taken back, its peer lost) lets go of its bytes and its place among the held answers; no socket cut mid-answer is reused", { timeout: 60_000 }, async () => {
    // The app: /full answers `kib` KiB of `fill` and ends; /hold sends `kib` KiB of a 4 MiB answer, then nothing; /break sends them, then drops its socket.
    const holding = new Set<http.ServerResponse>()
    const app = await startApp(cleanup, (req, res) => {
      const url = new URL(req.url ?? "/", "http://app")
      const fill = Number(url.searchParams.get("fill") ?? "0")
      const kib = Number(url.searchParams.get("kib") ?? "100")
      if (url.pathname === "/full") {
        res.writeHead(200, { "content-length": String(kib * KiB) })
        return void res.end(Buffer.alloc(kib * KiB, fill))
      }
      res.writeHead(200, { "content-length": String(4 * MiB) })
      res.write(Buffer.alloc(kib * KiB, fill))
      if (url.pathname === "/break") return void setImmediate(() => req.socket.destroy())
      holding.add(res)
      res.on("close", () => holding.delete(res))
    })
    cleanup.add(() => holding.forEach((res) => res.destroy()))
    // Every HeldAnswers the sidecars make: B's HTTP/1.1 leg's is the one its answers join.
    const budgets = new Set<HeldAnswers>()
    const join = HeldAnswers.prototype.join
    vi.spyOn(HeldAnswers.prototype, "join").mockImplementation(function (this: HeldAnswers, answer) {
      budgets.add(this)
      return join.call(this, answer)
    })
    const b = await startSidecar(cleanup, sidecarConfig({ service: "catalog", app: app.address, appPoolMaxHeldBytes: 2 * MiB, requestTimeoutMs: 60_000 }))
    const a = await startSidecar(cleanup, sidecarConfig({ service: "store", endpoints: { catalog: [{ address: b.inboundAddress, weight: 1 }] }, requestTimeoutMs: 60_000 }))
    const bPort = Number(b.inboundAddress.split(":").pop())
    const held = () => metric(b, /^iip_mesh_app_pool_held_bytes /)
    const takenBack = () => metric(b, /^iip_mesh_app_pool_held_taken_back_total /)

    const outcomes: Array<Got> = []
    for (let round = 0; round < 4; round++) {
      // A caller that stalls every stream: mid-answer (paused, then counted its socket's MiB, then taken back), answers the app ended
      // but nobody reads, and some with a deadline of 300 ms that passes while they stall.
      const dialer = await meshDialer(bPort, cleanup, { streamWindow: 1 })
      for (let channel = 1; channel <= 12; channel++) {
        // 1 MiB sent: past the queue's high-water mark, its socket pauses.
        const path = channel % 3 === 1 ? "/full?kib=100" : "/hold?kib=1024"
        dialer.write(frame(1, path, channel, encodeEnvelope(EnvelopeKind.request, 0, channel, GET, Buffer.alloc(0), 8192, channel % 3 === 2 ? 300 : 0)))
      }
      // Callers through A, meanwhile: read whole, cancelled at their first bytes, broken off by the app.
      const calls: Array<Promise<Got>> = []
      for (let i = 0; i < 8; i++) {
        const fill = 1 + ((round * 8 + i) % 250)
        calls.push(get(a.outboundPort, `/full?kib=300&fill=${fill}`, cleanup))
        calls.push(get(a.outboundPort, `/hold?fill=${fill}`, cleanup, {}, true))
        calls.push(get(a.outboundPort, `/full?kib=70&fill=${fill}`, cleanup))
        calls.push(get(a.outboundPort, `/break?fill=${fill}`, cleanup))
      }
      outcomes.push(...(await Promise.all(calls)))
      // The stalled ones held past the budget for a second: some taken back; then their peer's connection is lost.
      await waitFor(() => dialer.packets.some((packet) => packet.data.toString("latin1").includes("past --app-pool-max-held-bytes")), 10_000, `round ${round}: a stalled answer taken back`)
      dialer.destroy()
    }
    expect(await takenBack()).toBeGreaterThan(0)
    // The answers read whole came whole and their own; the others ended.
    const full = outcomes.filter((_, i) => i % 4 === 0 || i % 4 === 2)
    expect(full.filter((got, i) => !(got.status === 200 && got.read === (i % 2 === 0 ? 300 : 70) * KiB && got.intact && got.error === undefined))).toEqual([])
    // All counted let go of: bytes and joined answers.
    const pool = [...budgets].filter((budget) => (budget as unknown as { setting: string }).setting === "--app-pool-max-held-bytes")
    expect(pool.length).toBe(1)
    const leg = pool[0]!
    await waitFor(() => leg.bytes === 0 && leg.counted === 0, 10_000, `B's held answers let go of (bytes ${leg.bytes}, counted ${leg.counted})`)
    expect(await held()).toBe(0)
    // No socket cut mid-answer went back to the pool: each call after the churn gets its own bytes, whole.
    const after = await Promise.all(Array.from({ length: 40 }, (_, i) => get(a.outboundPort, `/full?kib=${80 + i}&fill=${i + 3}`, cleanup)))
    expect(after.filter((got, i) => !(got.status === 200 && got.read === (80 + i) * KiB && got.intact))).toEqual([])
    expect({ bytes: leg.bytes, counted: leg.counted }).toEqual({ bytes: 0, counted: 0 })
  })
})
