// TunnelStalls (src/sidecar/tunnelStalls.ts), on a real IncomingStream under fake timers (its
// deadline heap's clock): a tunnel that holds bytes its reader takes none of for the stall timeout
// is ended, once; one that holds nothing, or whose reader keeps taking, never is; a watch removed
// leaves nothing behind.
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest"
import { IncomingStream } from "../../src/mux/streams.ts"
import { TunnelStalls } from "../../src/sidecar/tunnelStalls.ts"

const stallMs = 60_000

/** A TunnelStalls whose `tunnel-stalled` lines are kept in `lines`. */
const make = () => {
  const lines: Array<{ readonly event: string; readonly fields: Record<string, unknown> }> = []
  const stalls = new TunnelStalls(stallMs, (event, fields) => lines.push({ event, fields }))
  return { stalls, lines }
}

/** Takes one chunk from the stream, as a reader whose socket took it would. */
const takeOne = async (stream: IncomingStream) => {
  const reader = stream[Symbol.asyncIterator]()
  await reader.next()
}

describe("TunnelStalls", () => {
  beforeEach(() => {
    vi.useFakeTimers({ toFake: ["setTimeout", "clearTimeout", "Date", "performance"] })
  })
  afterEach(() => {
    vi.useRealTimers()
  })

  it("ends a tunnel whose bytes wait a whole timeout with none taken, between one and two timeouts after its reader stopped, once", () => {
    const { stalls, lines } = make()
    const stream = new IncomingStream(1024, () => {})
    let ended = 0
    stalls.watch(stream, { path: "/live" }, () => ended++)
    stream.push(Buffer.alloc(100))
    vi.advanceTimersByTime(stallMs)
    expect(ended).toBe(0)
    vi.advanceTimersByTime(stallMs)
    expect(ended).toBe(1)
    expect(lines.map((line) => [line.event, line.fields.path, line.fields.held])).toEqual([["tunnel-stalled", "/live", 100]])
    expect(stalls.watched).toBe(0)
    vi.advanceTimersByTime(10 * stallMs)
    expect(ended).toBe(1)
  })

  it("never ends a tunnel that holds nothing, however long it stays idle", () => {
    const { stalls } = make()
    const stream = new IncomingStream(1024, () => {})
    let ended = 0
    const stop = stalls.watch(stream, { path: "/live" }, () => ended++)
    vi.advanceTimersByTime(100 * stallMs)
    expect(ended).toBe(0)
    stop()
    expect(stalls.watched).toBe(0)
  })

  it("never ends one whose reader takes something within each timeout, though it always holds bytes", async () => {
    const { stalls } = make()
    const stream = new IncomingStream(1024, () => {})
    let ended = 0
    stalls.watch(stream, { path: "/live" }, () => ended++)
    stream.push(Buffer.alloc(100))
    for (let i = 0; i < 10; i++) {
      stream.push(Buffer.alloc(100))
      vi.advanceTimersByTime(stallMs - 1)
      await takeOne(stream)
    }
    expect(stream.unreadBytes).toBeGreaterThan(0)
    expect(ended).toBe(0)
  })

  it("bytes that came after a look wait a whole timeout more before the tunnel is ended", () => {
    const { stalls } = make()
    const stream = new IncomingStream(1024, () => {})
    let ended = 0
    stalls.watch(stream, { path: "/live" }, () => ended++)
    vi.advanceTimersByTime(stallMs)
    stream.push(Buffer.alloc(100))
    vi.advanceTimersByTime(stallMs)
    expect(ended).toBe(0)
    vi.advanceTimersByTime(stallMs)
    expect(ended).toBe(1)
  })

  it("a watch removed before its stall ends nothing", () => {
    const { stalls } = make()
    const stream = new IncomingStream(1024, () => {})
    let ended = 0
    const stop = stalls.watch(stream, { path: "/live" }, () => ended++)
    stream.push(Buffer.alloc(100))
    vi.advanceTimersByTime(stallMs)
    stop()
    // No timer left armed either: a stopping sidecar is not held until the old deadline.
    expect(vi.getTimerCount()).toBe(0)
    vi.advanceTimersByTime(10 * stallMs)
    expect(ended).toBe(0)
    expect(stalls.watched).toBe(0)
  })
})
