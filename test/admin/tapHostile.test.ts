// The live tap against readers and requests an adversary controls: a reader that opens /tap and
// never reads (its socket's buffers full, its answer waiting on a drain that never comes), and
// requests with the longest paths node's parser takes (16 KiB heads). Before, such a reader held its
// place among the tapListeners for as long as its TCP connection lived (a zero window is kept alive
// by the kernel's probes indefinitely: tapListeners of them shut the tap for good), and every queued
// record held its request's whole path (1,000 records of 16 KiB: 16 MB a queue).
import * as net from "node:net"
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest"
import { TAP_STALLED_BEATS } from "../../src/admin/observability.ts"
import { Tap, TAP_MAX_PATH, type TapRecord } from "../../src/telemetry/tap.ts"
import { Cleanup, withTimeout } from "../support/iipRaw.ts"
import { startAdmin, startMesh } from "../support/sidecarHarness.ts"

let cleanup: Cleanup
beforeEach(() => {
  cleanup = new Cleanup()
})
afterEach(() => cleanup.run())

const record = (path: string): TapRecord => ({
  time: Date.now(), direction: "outbound", service: "catalog", caller: "store", method: "GET", path, status: 200, latencyMs: 1, endpoint: "-", traceId: null, errorHop: null, errorReason: null
})

const HEARTBEAT_MS = 10_000

describe("the tap under hostile readers and requests", () => {
  it(`a record keeps at most ${TAP_MAX_PATH} characters of its path, the rest counted`, () => {
    const tap = new Tap({ ratePerSecond: 10, maxQueued: 10 })
    const listener = tap.listen({})!
    const long = `/${"a".repeat(TAP_MAX_PATH)}${"b".repeat(16 * 1024)}`
    tap.publish(record(long))
    tap.publish(record("/short"))
    const [kept, short] = listener.take()
    expect(kept!.path.startsWith(long.slice(0, TAP_MAX_PATH))).toBe(true)
    expect(kept!.path).toBe(`${long.slice(0, TAP_MAX_PATH)}...(${long.length - TAP_MAX_PATH} more)`)
    expect(short!.path).toBe("/short")
  })

  it("a listener's per-second window runs on the monotonic clock: a wall clock stepped back does not shut the tap for the step", () => {
    // Fakes Date and performance: setSystemTime steps the wall clock alone, advanceTimersByTime both.
    vi.useFakeTimers()
    cleanup.add(() => vi.useRealTimers())
    const tap = new Tap({ ratePerSecond: 2, maxQueued: 10 })
    const listener = tap.listen({})!
    for (const path of ["/1", "/2", "/3"]) tap.publish(record(path))
    expect(listener.sampledOut).toBe(1)
    vi.setSystemTime(Date.now() - 3_600_000)
    // A second later the window is new; before, its start was an hour ahead of Date.now(): shut for the hour.
    vi.advanceTimersByTime(1000)
    tap.publish(record("/4"))
    expect(listener.take().map((r) => r.path)).toStrictEqual(["/1", "/2", "/4"])
    expect(listener.sampledOut).toBe(1)
  })

  it(`a reader that reads nothing is closed after ${TAP_STALLED_BEATS} heartbeats without a drain, and its place is free again`, async () => {
    // The heartbeats run on a faked setInterval, by hand: no sleep decides when the reader counts as stalled.
    vi.useFakeTimers({ toFake: ["setInterval", "clearInterval"] })
    cleanup.add(() => vi.useRealTimers())
    const mesh = await startMesh(cleanup, (_req, res) => res.end("ok"), { a: { tapListeners: 1, tapQueue: 100_000, tapRate: 100_000 } })
    const admin = Number(new URL(await startAdmin(cleanup, mesh.a)).port)
    const hub = mesh.a.sidecar.telemetry.metrics.tap
    const reader = net.connect(admin, "127.0.0.1")
    reader.on("error", () => {})
    cleanup.add(() => reader.destroy())
    const closed = new Promise<void>((done) => reader.once("close", () => done()))
    reader.write("GET /tap HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    reader.pause()
    await withTimeout((async () => {
      while (hub.listening === 0) await new Promise((r) => setImmediate(r))
    })(), 5_000, "the tap reader to be listening")
    const listener = (hub as unknown as { listeners: Set<{ queued: number }> }).listeners.values().next().value!
    // Records until the socket's buffers are full: then they stay queued, the answer waits for a drain.
    const path = `/${"p".repeat(TAP_MAX_PATH)}`
    for (let i = 0; i < 20_000 && listener.queued < 1_000; i++) {
      hub.publish(record(path))
      if (i % 100 === 0) await new Promise((r) => setImmediate(r))
    }
    expect(listener.queued).toBeGreaterThanOrEqual(1_000)
    vi.advanceTimersByTime(HEARTBEAT_MS * (TAP_STALLED_BEATS - 1))
    expect(hub.listening, "still listening before the last beat").toBe(1)
    vi.advanceTimersByTime(HEARTBEAT_MS)
    await withTimeout((async () => {
      while (hub.listening > 0) await new Promise((r) => setImmediate(r))
    })(), 5_000, "the stalled reader's listener to be closed")
    // Paused, the reader sees the server's close only once it reads what is buffered.
    reader.resume()
    await withTimeout(closed, 5_000, "the stalled reader to be closed")
    const open = net.connect(admin, "127.0.0.1")
    cleanup.add(() => open.destroy())
    const head = withTimeout(new Promise<string>((resolve) => open.once("data", (chunk: Buffer) => resolve(chunk.toString("latin1")))), 5_000, "a new reader's answer")
    open.write("GET /tap HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    expect(await head).toMatch(/^HTTP\/1\.1 200 /)
  })
})
