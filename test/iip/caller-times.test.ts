// Times a library caller hands the client that are out of range (src/iip/client.ts):
// - `now` in RequestOptions must be monotonicMs() (src/mux/clock.ts). A Date.now() there made the
//   call's deadline ~56 years away: it waited MaxDeadlineMs (a day) instead of its timeoutMs, quietly.
//   Now it is refused at once with PacketEncodeError rule "now-not-monotonic": nothing is sent.
// - probe(timeoutMs) armed a Node timer with the value as given: past 2^31-1 ms (or NaN, or <= 0)
//   Node fires it after 1 ms, so a health check reported a timeout before the peer had a chance.
// Real TCP on 127.0.0.1, port 0: a mesh server whose handler never answers, and a silent listener.
import { afterEach, beforeEach, describe, expect, it } from "vitest"
import { monotonicMs } from "../../src/mux/clock.ts"
import { PacketEncodeError } from "../../src/protocol/errors.ts"
import { Cleanup, startRawServer, withTimeout } from "../support/iipRaw.ts"
import { rejection, settle, type Settled, startClient, startServer } from "../support/meshTest.ts"

describe("caller times out of range", () => {
  let cleanup: Cleanup
  beforeEach(() => {
    cleanup = new Cleanup()
  })
  afterEach(() => cleanup.run())

  /** A mesh client connected to a server whose /never handler counts its calls and never answers. */
  const neverAnswering = async () => {
    const server = await startServer(cleanup)
    const counts = { reached: 0 }
    server.handle("/never", () => {
      counts.reached++
      return new Promise<string>(() => {})
    })
    const client = startClient(cleanup, server.address.port)
    expect(await client.mode()).toBe("mesh")
    return { client, counts }
  }

  it("a Date.now() as `now` is refused at once with PacketEncodeError now-not-monotonic, and nothing reaches the server", async () => {
    const { client, counts } = await neverAnswering()
    const error = await rejection(client.stream("/never", Buffer.from("x"), { timeoutMs: 200, now: Date.now() }), "a call with a wall-clock now")
    expect(error).toBeInstanceOf(PacketEncodeError)
    expect((error as PacketEncodeError).rule).toBe("now-not-monotonic")
    expect(client.stats.pending).toBe(0)
    // A monotonic now is taken: the call reaches the handler and ends by its own deadline.
    const honest = await rejection(client.stream("/never", Buffer.from("y"), { timeoutMs: 200, now: monotonicMs() }), "a call with a monotonic now")
    expect(honest).not.toBeInstanceOf(PacketEncodeError)
    expect(["RequestTimeout", "RemoteError"]).toContain((honest as { _tag: string })._tag)
    expect(counts.reached).toBe(1)
  })

  it("a Date.now() read after the wall clock was stepped back past this process's start (below performance.timeOrigin) is refused too", async () => {
    // A host that booted with its clock ahead and had NTP step it back: Date.now() stays below the
    // process's timeOrigin for as long as the step exceeds the process's age. Still a wall time: its
    // deadline would be decades away (a day, clamped), not the caller's 200 ms.
    const { client, counts } = await neverAnswering()
    const steppedBack = Math.floor(performance.timeOrigin) - 6 * 3600_000
    const error = await withTimeout(rejection(client.stream("/never", Buffer.from("x"), { timeoutMs: 200, now: steppedBack }), "a call with a stepped-back wall-clock now"), 3000, "the call to end")
    expect(error).toBeInstanceOf(PacketEncodeError)
    expect((error as PacketEncodeError).rule).toBe("now-not-monotonic")
    expect(counts.reached).toBe(0)
  })

  it("probe(timeoutMs) past what a Node timer holds waits: it is still pending when a 100 ms probe has timed out", async () => {
    // Accepts and never says a word: neither probe can get a hello answered.
    const silent = await startRawServer(cleanup, () => {})
    const client = startClient(cleanup, silent.port, { connectTimeoutMs: 60_000 })
    const outcomes: Array<Settled<number> | undefined> = [undefined, undefined]
    void settle(client.probe(2 ** 32)).then((outcome) => void (outcomes[0] = outcome))
    const short = await settle(client.probe(100))
    expect(short.ok ? "answered" : (short.error as { _tag: string })._tag).toBe("RequestTimeout")
    await new Promise((resolve) => setImmediate(resolve))
    // Before, the 2^32 ms timer fired after 1 ms: a RequestTimeout ahead of the 100 ms one.
    expect(outcomes[0]).toBeUndefined()
  })

  it("probe(NaN), probe(0) and probe(-1) wait for the connect timeout, not 1 ms", async () => {
    const silent = await startRawServer(cleanup, () => {})
    const client = startClient(cleanup, silent.port, { connectTimeoutMs: 60_000 })
    const outcomes: Array<Settled<number> | undefined> = [undefined, undefined, undefined]
    for (const [i, timeoutMs] of [Number.NaN, 0, -1].entries()) void settle(client.probe(timeoutMs)).then((outcome) => void (outcomes[i] = outcome))
    const short = await settle(client.probe(100))
    expect(short.ok).toBe(false)
    await new Promise((resolve) => setImmediate(resolve))
    expect(outcomes).toStrictEqual([undefined, undefined, undefined])
  })
})
