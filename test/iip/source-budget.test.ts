// A source's part of a server's shared inbound budget (src/mux/budget.ts SourceBudgets, PROTOCOL.md
// §8, §15). Two loopback sources: 127.0.0.2 (the hog, raw mesh dialers holding whole-body requests
// its handler never answers, as a sidecar whose app does not read) and 127.0.0.1 (an honest
// IipClient). Before, nothing divided the shared budget between peers: the hog's connections
// together filled it and the honest peer's request was refused `overloaded`. Now one source holds
// at most half: past it the hog's new requests are refused `overloaded` (not processed), the honest
// peer's are taken; the source's counters go back to 0 and its Budget is dropped with its last
// connection, however often it reconnects.
import { afterEach, beforeEach, describe, expect, it } from "vitest"
import type { IipServer } from "../../src/iip/server.ts"
import { decodeEnvelope, decodeErrorBody, EnvelopeKind, MeshDefaults } from "../../src/protocol/mesh.ts"
import { meshDialer, meshRequest, MiB } from "../support/budgetAttack.ts"
import { Cleanup, type RawClient, waitFor } from "../support/iipRaw.ts"
import { startClient, startServer } from "../support/meshTest.ts"

const HOG = "127.0.0.2"
const BODY = 256 * 1024

describe("one source holds at most half of a server's shared inbound budget", () => {
  let cleanup: Cleanup
  /** Hanging /hang handlers, answered at cleanup. */
  let parked: Array<() => void>

  const hangingServer = async (): Promise<IipServer> => {
    // Per connection 4 MiB, all 16: the hog's 6 connections x 4 MiB could hold 24 MiB.
    const server = await startServer(cleanup, { maxQueuedBytesPerConnection: 4 * MiB, maxQueuedBytes: 16 * MiB })
    server.handle("/echo", (request) => request.data)
    server.handle("/hang", () => new Promise<string>((resolve) => parked.push(() => resolve("late"))))
    cleanup.add(() => parked.splice(0).forEach((resolve) => resolve()))
    return server
  }

  /** A hog connection sending `count` whole 256 KiB requests to /hang, one channel each. */
  const hogConnection = async (port: number, count: number): Promise<RawClient> => {
    const hog = await meshDialer(port, cleanup, {}, HOG)
    const body = Buffer.alloc(BODY, 0x68)
    for (let id = 1; id <= count; id++) hog.socket.write(meshRequest(1, "/hang", id, id, body))
    return hog
  }

  /** The error codes the hog's connections were answered with (each answer here is a refusal). */
  const refusals = (hogs: ReadonlyArray<RawClient>): Array<string> =>
    hogs.flatMap((hog) =>
      hog.packets.map((packet) => {
        const envelope = decodeEnvelope(packet.data, MeshDefaults.maxMetaBytes)
        if (envelope.kind !== EnvelopeKind.error) return `kind ${envelope.kind}`
        const error = decodeErrorBody(packet.data.subarray(envelope.bodyOffset))
        return `${error.code}${error.processed ? " processed" : ""}`
      })
    )

  beforeEach(() => {
    cleanup = new Cleanup()
    parked = []
  })

  afterEach(() => cleanup.run())

  it("a source's 6 connections filling their budgets: its new work is refused overloaded at half the shared bytes, another source's request is taken and answered", async () => {
    const server = await hangingServer()
    const honest = startClient(cleanup, server.address.port, { maxConnections: 1 })
    expect((await honest.call("/echo", "before", { timeoutMs: 5000 })).toString()).toBe("before")
    const hogs: Array<RawClient> = []
    // 20 x 256 KiB offered per connection (5 MiB, past its 4 MiB: it pauses), 30 MiB in all.
    for (let c = 0; c < 6; c++) hogs.push(await hogConnection(server.address.port, 20))
    await waitFor(() => refusals(hogs).length > 0, 10_000, "the hog's first refusal")
    expect((await honest.call("/echo", "during", { timeoutMs: 5000 })).toString()).toBe("during")
    const hogBudget = server.sources.of(HOG)!
    console.log(`[source-budget] hog holds ${hogBudget.bytes} bytes in ${hogBudget.requests} requests; the server ${server.budget.bytes}; hog refusals ${refusals(hogs).length}`)
    expect(new Set(refusals(hogs))).toEqual(new Set(["overloaded"]))
    // At most half of the shared bytes, and the one request whose charge crossed it.
    expect(hogBudget.bytes).toBeLessThanOrEqual(8 * MiB + BODY + 1024)
    expect(server.budget.full).toBe(false)
  }, 60_000)

  it("every connection of a source closed: its counters are back to 0 and its Budget dropped; the shared budget holds nothing of it", async () => {
    const server = await hangingServer()
    const hogs: Array<RawClient> = []
    for (let c = 0; c < 3; c++) hogs.push(await hogConnection(server.address.port, 4))
    await waitFor(() => server.sources.of(HOG)?.requests === 12, 10_000, "the hog's 12 requests held")
    const hogBudget = server.sources.of(HOG)!
    expect(hogBudget.bytes).toBeGreaterThanOrEqual(12 * BODY)
    for (const hog of hogs) hog.destroy()
    await waitFor(() => server.sources.size === 0, 10_000, "the hog's source to be dropped")
    expect(hogBudget.requests).toBe(0)
    expect(hogBudget.bytes).toBe(0)
    expect(hogBudget.gathered).toBe(0)
    expect(server.budget.requests).toBe(0)
    expect(server.budget.bytes).toBe(0)
  }, 60_000)

  it("a source reconnecting 200 times keeps one Budget while connected and none after, its counters at 0", async () => {
    const server = await hangingServer()
    const seen = new Set<object>()
    for (let i = 0; i < 200; i++) {
      const hog = await hogConnection(server.address.port, 1)
      await waitFor(() => server.sources.of(HOG)?.requests === 1, 5000, `reconnect ${i}'s request held`)
      seen.add(server.sources.of(HOG)!)
      expect(server.sources.size).toBe(1)
      hog.destroy()
      await waitFor(() => server.sources.size === 0, 5000, `reconnect ${i}'s source dropped`)
    }
    // A Budget per connection of the source (none was kept and reused past its last connection).
    expect(seen.size).toBe(200)
    for (const budget of seen as Set<{ requests: number; bytes: number }>) expect([budget.requests, budget.bytes]).toEqual([0, 0])
    expect(server.budget.requests).toBe(0)
    expect(server.budget.bytes).toBe(0)
  }, 120_000)
})
