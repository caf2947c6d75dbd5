// B's budget for what its HTTP/1.1 app leg's streamed answers hold (src/sidecar/appExchange.ts over
// src/sidecar/heldAnswers.ts). An answer whose caller stops reading pauses its pool socket, and a
// paused socket's kernel receive buffer fills: measured ~0.5-2 MiB per socket (autotuned by the
// download's first burst; 256 stalled downloads held 128-180 MiB of kernel memory at B), beside the
// ~128 KiB its queue holds. And an answer the app ended that nobody reads leaves its socket but
// not its queue: 3,000 unread answers of 100 KiB over three mesh connections held +245 MiB of B's
// RSS, bounded by nothing. Now both count in --app-pool-max-held-bytes (a socket paused a second
// counted at PAUSED_SOCKET_BYTES for its kernel buffer), and past it the answers stalled longest
// are taken back (the socket destroyed, the caller told `overloaded`, naming the budget); a reader
// that keeps reading is not cut; the count is back to 0 once the calls end.
// Real peers: a node:http app, a node:http caller through A; the stalled callers are hand-played
// mesh dialers granting one byte of each stream (test/support/budgetAttack.ts).
import * as http from "node:http"
import { afterEach, beforeEach, describe, expect, it } from "vitest"
import { encodeEnvelope, EnvelopeKind } from "../../src/protocol/mesh.ts"
import { HttpMeta } from "../../src/sidecar/httpEnvelope.ts"
import { metric } from "../support/eventStreamApp.ts"
import { meshDialer } from "../support/budgetAttack.ts"
import { Cleanup, frame, type RawClient, waitFor } from "../support/iipRaw.ts"
import { LOOPBACK, type RunningSidecar, sidecarConfig, startApp, startSidecar } from "../support/sidecarHarness.ts"

const MiB = 1024 * 1024
const CHUNK = Buffer.alloc(64 * 1024, 0x61)
const GET = new Map<string, string>().set(HttpMeta.method, "GET").set(HttpMeta.authority, "catalog")

/** The app: /big?kib=N answers N KiB (content-length) as fast as its socket takes them. */
const startBigApp = async (cleanup: Cleanup) => {
  let closed = 0
  let finished = 0
  const app = await startApp(cleanup, (req, res) => {
    const kib = Number(new URL(req.url ?? "/", "http://app").searchParams.get("kib") ?? "0")
    res.on("close", () => closed++)
    res.on("finish", () => finished++)
    const total = kib * 1024
    res.writeHead(200, { "content-length": String(total) })
    let sent = 0
    const pump = () => {
      while (sent < total) {
        const part = CHUNK.subarray(0, Math.min(CHUNK.length, total - sent))
        sent += part.length
        if (!res.write(part)) return void res.once("drain", pump)
      }
      res.end()
    }
    pump()
  })
  return { app, closed: () => closed, finished: () => finished }
}

/** A GET of `kib` KiB on `channel` of a dialer that grants each stream one byte and never more. */
const stalledGet = (dialer: RawClient, channel: number, kib: number): void =>
  dialer.write(frame(1, `/big?kib=${kib}`, channel, encodeEnvelope(EnvelopeKind.request, 0, channel, GET, Buffer.alloc(0), 8192)))

/** The channels whose answer B ended taken back, naming the budget. */
const takenBackOn = (dialer: RawClient): Array<number> =>
  dialer.packets.filter((packet) => packet.data.toString("latin1").includes("past --app-pool-max-held-bytes")).map((packet) => packet.channelId)

const held = (b: RunningSidecar) => metric(b, /^iip_mesh_app_pool_held_bytes /)
const takenBack = (b: RunningSidecar) => metric(b, /^iip_mesh_app_pool_held_taken_back_total /)

/** Polls `read` until `done` holds, at most `limitMs`. */
const until = async (read: () => Promise<number>, done: (value: number) => boolean, limitMs: number, what: string): Promise<number> => {
  const deadline = performance.now() + limitMs
  for (;;) {
    const value = await read()
    if (done(value)) return value
    if (performance.now() > deadline) throw new Error(`${what}: still ${value} after ${limitMs} ms`)
    await new Promise<void>((resolve) => setTimeout(resolve, 20))
  }
}

describe("B's budget for what its HTTP/1.1 app leg's answers hold", () => {
  let cleanup: Cleanup
  beforeEach(() => {
    cleanup = new Cleanup()
  })
  afterEach(() => cleanup.run())

  it("stalled downloads past the budget are taken back, the longest stalled first; a paced reader that keeps reading is never cut; the gauge back to 0", { timeout: 60_000 }, async () => {
    const { app, closed } = await startBigApp(cleanup)
    const lines: Array<Record<string, unknown>> = []
    const b = await startSidecar(cleanup, sidecarConfig({ service: "catalog", app: app.address, appPoolMaxHeldBytes: 4 * MiB, requestTimeoutMs: 60_000 }), (event, fields) => {
      if (event === "app-pool-held-taken-back") lines.push(fields)
    })
    const a = await startSidecar(cleanup, sidecarConfig({ service: "store", endpoints: { catalog: [{ address: b.inboundAddress, weight: 1 }] }, requestTimeoutMs: 60_000 }))
    // The honest reader, first (the oldest answer): 96 MiB read at ~8 MiB/s for the whole test, its B socket pausing as its reader lags the app.
    let honestRead = 0
    let honestDone = false
    const honest = new Promise<{ status: number; read: number; error?: string }>((resolve) => {
      const req = http.get({ host: LOOPBACK, port: a.outboundPort, path: `/big?kib=${96 * 1024}`, headers: { host: "catalog" }, agent: false }, (res) => {
        const pace = setInterval(() => res.resume(), 50)
        res.on("data", (chunk: Buffer) => {
          honestRead += chunk.length
          // 400 KiB each 50 ms at most.
          if (honestRead % (400 * 1024) < chunk.length) res.pause()
        })
        res.on("end", () => {
          clearInterval(pace)
          honestDone = true
          resolve({ status: res.statusCode ?? 0, read: honestRead })
        })
        res.on("error", (error) => {
          clearInterval(pace)
          resolve({ status: res.statusCode ?? 0, read: honestRead, error: error.message })
        })
      })
      req.on("error", (error) => resolve({ status: 0, read: honestRead, error: error.message }))
      cleanup.add(() => req.destroy())
    })
    await waitFor(() => honestRead > 2 * MiB, 10_000, "the honest reader to read")
    // Six stalled downloads, one at a time: each waits on its reader until B counts its paused socket (past a second paused), then the next.
    const dialer = await meshDialer(Number(b.inboundAddress.split(":").pop()), cleanup, { streamWindow: 1 })
    for (let channel = 1; channel <= 6; channel++) {
      const before = await held(b)
      stalledGet(dialer, channel, 32 * 1024)
      // Up to the third, B's count grows by the socket's MiB; from the fourth, each takes one back.
      await until(() => held(b), (now) => (channel <= 3 ? now >= before + MiB : takenBackOn(dialer).length >= channel - 3), 10_000, `B to count stalled answer ${channel}`)
    }
    // 4 MiB: three stalled answers fit (1 MiB for the socket, its queue's ~128 KiB), the 4th, 5th and 6th took the three oldest back.
    await waitFor(() => takenBackOn(dialer).length >= 3, 10_000, "three answers taken back")
    expect(takenBackOn(dialer)).toEqual([1, 2, 3])
    expect(await takenBack(b)).toBe(3)
    expect(await held(b)).toBeLessThanOrEqual(4 * MiB)
    expect(lines.length).toBeGreaterThan(0)
    expect(lines[0]).toMatchObject({ app: app.address, takenBack: 1, max: 4 * MiB })
    // Their sockets were destroyed, not reused: the app saw the three answers closed before their end.
    await waitFor(() => closed() >= 3, 5_000, "the app to see three answers closed")
    expect(honestDone).toBe(false)
    // The stalled caller goes away: its answers end, the count is back to 0; the honest reader reads its whole answer.
    dialer.destroy()
    expect(await honest).toEqual({ status: 200, read: 96 * MiB })
    expect(await until(() => held(b), (now) => now === 0, 10_000, "B's held bytes back to 0")).toBe(0)
    expect(await takenBack(b)).toBe(3)
  })

  it("a stalled reader's answer is taken back as one that took none of it since it began to wait (ranked first, ahead of slow readers)", { timeout: 30_000 }, async () => {
    const { app } = await startBigApp(cleanup)
    const b = await startSidecar(cleanup, sidecarConfig({ service: "catalog", app: app.address, appPoolMaxHeldBytes: MiB, requestTimeoutMs: 60_000 }))
    const dialer = await meshDialer(Number(b.inboundAddress.split(":").pop()), cleanup, { streamWindow: 1 })
    // Its mesh sender takes a first chunk and waits on the one-byte window: from the next chunk on, nothing more is taken.
    stalledGet(dialer, 1, 32 * 1024)
    await waitFor(() => takenBackOn(dialer).length === 1, 10_000, "the stalled answer taken back")
    const told = dialer.packets.find((packet) => packet.channelId === 1 && packet.data.toString("latin1").includes("past --app-pool-max-held-bytes"))!
    expect(told.data.toString("latin1")).toMatch(/it waited \d+ ms on its reader, which took none of it, the longest of those held/)
  })

  it("the chunk the mesh's sender holds for a shut window counts too: each unread answer counts all B holds of it", { timeout: 30_000 }, async () => {
    const { app, finished } = await startBigApp(cleanup)
    const b = await startSidecar(cleanup, sidecarConfig({ service: "catalog", app: app.address, requestTimeoutMs: 60_000 }))
    const dialer = await meshDialer(Number(b.inboundAddress.split(":").pop()), cleanup, { streamWindow: 1 })
    // 10 answers of 100 KiB the app ends, each sent up to its window's one byte: B holds the rest of each, the
    // chunk its sender took out of the queue (a socket read, up to 64 KiB) and what is queued behind it.
    for (let channel = 1; channel <= 10; channel++) stalledGet(dialer, channel, 100)
    await waitFor(() => finished() === 10, 10_000, "the 10 answers sent by the app")
    // All 100 KiB of each (the byte the window let go counts with its chunk until the sender asks for the next one).
    // Before: ~36 KiB each (the queue only), the sender's chunk in hand counted nowhere.
    expect(await until(() => held(b), (now) => now === 10 * 100 * 1024, 5_000, "B's held bytes to count each answer whole")).toBe(10 * 100 * 1024)
    expect(await takenBack(b)).toBe(0)
    dialer.destroy()
    expect(await until(() => held(b), (now) => now === 0, 10_000, "B's held bytes back to 0")).toBe(0)
  })

  it("answers the app ended that nobody reads count too: B holds no more than the budget, the rest taken back; 0 once their caller is gone", { timeout: 60_000 }, async () => {
    const { app, finished } = await startBigApp(cleanup)
    const b = await startSidecar(cleanup, sidecarConfig({ service: "catalog", app: app.address, appPoolMaxHeldBytes: 4 * MiB, requestTimeoutMs: 60_000 }))
    const dialer = await meshDialer(Number(b.inboundAddress.split(":").pop()), cleanup, { streamWindow: 1 })
    // 200 answers of 100 KiB (streamed: past the 64 KiB whole-answer limit), each ended by the app, none read: B holds
    // all of each (its queue, and the chunk its mesh sender holds waiting for the window), ~20 MiB in all.
    let most = 0
    for (let channel = 1; channel <= 200; channel++) stalledGet(dialer, channel, 100)
    const settled = performance.now() + 20_000
    while (finished() < 200) {
      most = Math.max(most, await held(b))
      if (performance.now() > settled) throw new Error(`the app finished ${finished()} answers; B holds ${await held(b)} bytes, took back ${await takenBack(b)}`)
      await new Promise<void>((resolve) => setTimeout(resolve, 20))
    }
    most = Math.max(most, await held(b))
    expect(most).toBeGreaterThan(2 * MiB)
    expect(most).toBeLessThanOrEqual(4 * MiB)
    expect(await takenBack(b)).toBeGreaterThan(0)
    // Each one counted was told its caller (the packet may still be on its way when the counter is read).
    expect(await until(async () => (await takenBack(b)) - takenBackOn(dialer).length, (missing) => missing === 0, 5_000, "callers of answers taken back still untold")).toBe(0)
    dialer.destroy()
    expect(await until(() => held(b), (now) => now === 0, 10_000, "B's held bytes back to 0")).toBe(0)
  })
})
