// Tunnels whose far end stops reading (PROTOCOL.md §8, §17.4), over real TCP: each holds up to a
// stream window of unread bytes at the server. Those bytes count in a pool of their own (as large
// as the server's byte budget, one connection's tunnels taking at most its own byte budget of it),
// never in the budget of the requests: stalled tunnels neither pause the connection they share with
// ordinary requests nor make the server refuse those `overloaded`, whatever their number. A tunnel
// whose bytes do not fit in the pool, or in its connection's share, is ended `overloaded` (its
// handler is cancelled, its caller's answer fails), so what the server holds stays bounded.
// A handler taking a new tunnel can ask whether the pool has room for one more stalled window
// (IncomingStream.tunnelPoolHasRoom), and refuse it when not, as the sidecar does (§17.4).
//
// Between this client and server nothing but the kernel's buffers lies, and the server reads its
// socket whatever its tunnels hold: every window sent reaches it, whatever the kernel takes on the
// way, so a stalled tunnel ends up holding exactly its window (or is ended).
import { afterEach, beforeEach, describe, expect, it } from "vitest"
import { failure, type IipServer, reply } from "../../src/iip/server.ts"
import type { IncomingRequest } from "../../src/mux/request.ts"
import { Cleanup, deferred, waitFor } from "../support/iipRaw.ts"
import { startClient, startServer } from "../support/meshTest.ts"

const MiB = 1024 * 1024

/** A body that sends `bytes`, then nothing until `stop` resolves. */
const stalling = (bytes: number, stop: Promise<void>) =>
  (async function*() {
    for (let sent = 0; sent < bytes; sent += 64 * 1024) yield Buffer.alloc(64 * 1024, 7)
    await stop
  })()

describe("stalled tunnels and ordinary requests", () => {
  let cleanup: Cleanup
  let server: IipServer
  let stop = deferred()
  beforeEach(async () => {
    cleanup = new Cleanup()
    stop = deferred()
    cleanup.add(() => stop.resolve())
    // Per connection 8 MiB, in all 16 MiB: one connection's tunnels hold at most 8 windows of 1 MiB.
    server = await startServer(cleanup, { maxQueuedBytesPerConnection: 8 * MiB, maxQueuedBytes: 16 * MiB })
    server.handle("/tunnel", openTunnel)
    server.handle("/echo", (request) => request.data)
  })
  afterEach(() => cleanup.run())

  /**
   * A tunnel: answers at once and for as long as it lives (its caller's cancel or being ended ends
   * it, as the sidecar's relay closes its app's socket), never reads what the caller sends.
   */
  const openTunnel = (request: IncomingRequest) => {
      request.context.longLived()
      const cancelled = request.context.signal
      return reply((async function*() {
        yield Buffer.from("open")
        await new Promise<void>((resolve) => {
          void stop.promise.then(resolve)
          cancelled.addEventListener("abort", () => resolve())
        })
      })())
  }

  /**
   * Opens `n` tunnels on `client`, one after the other, and watches their answers: for each, once
   * its answer ends, the code it failed with ("end" when it ended as it should), undefined before.
   */
  const openWatched = async (client: ReturnType<typeof startClient>, n: number): Promise<Array<string | undefined>> => {
    const ends: Array<string | undefined> = []
    for (let i = 0; i < n; i++) {
      const answer = (await client.stream("/tunnel", stalling(2 * MiB, stop.promise), { timeoutMs: 3000 })).stream!
      const at = ends.push(undefined) - 1
      void (async () => {
        try {
          for await (const _ of answer);
          ends[at] = "end"
        } catch (error) {
          ends[at] = (error as { readonly code?: string }).code ?? String(error)
        }
      })()
    }
    return ends
  }
  const endedIn = (ends: ReadonlyArray<string | undefined>) => ends.filter((end) => end !== undefined).length
  const echo = (client: ReturnType<typeof startClient>, text: string) => client.call("/echo", text, { timeoutMs: 3000 }).then(String, (e: unknown) => String(e))
  const held = () => {
    const budget = [...server.meshSessions][0]!.connection.budget.shared
    return `held ${((budget.bytes + budget.tunnelBytes) / MiB).toFixed(1)} MiB (tunnel pool ${(budget.tunnelBytes / MiB).toFixed(1)})`
  }

  it("3 connections x 6 stalled tunnels (past the 16 MiB pool in all): the tunnels whose bytes do not fit are ended overloaded, the rest hold their windows, and a fourth connection's calls are answered", async () => {
    const clients = [0, 1, 2].map(() => startClient(cleanup, server.address.port, { maxConnections: 1, streamChannelsPerConnection: 64 }))
    const ends: Array<Array<string | undefined>> = []
    for (const client of clients) ends.push(await openWatched(client, 6))
    const all = () => ends.flat()
    const budget = [...server.meshSessions][0]!.connection.budget.shared
    await waitFor(() => endedIn(all()) >= 2 && budget.tunnelBytes === (18 - endedIn(all())) * MiB, 5000, "every tunnel to hold its window or be ended")
    const answer = await echo(startClient(cleanup, server.address.port, { maxConnections: 1 }), "fourth connection")
    console.log(`[stalled-tunnels] 3 connections x 6 tunnels: ${endedIn(all())} ended overloaded; ${held()}; ordinary call: ${answer}`)
    expect(all().filter((end) => end !== undefined)).toEqual(Array(endedIn(all())).fill("overloaded"))
    expect(budget.tunnelBytes).toBeLessThanOrEqual(16 * MiB)
    expect(answer).toBe("fourth connection")
  })

  it("16 stalled tunnels on one connection cannot take the whole 16 MiB pool: another connection's tunnel that stalls holds its window, not ended", async () => {
    const hostile = await openWatched(startClient(cleanup, server.address.port, { maxConnections: 1, streamChannelsPerConnection: 64 }), 16)
    const budget = [...server.meshSessions][0]!.connection.budget.shared
    await waitFor(() => budget.tunnelBytes === (16 - endedIn(hostile)) * MiB, 5000, "every tunnel of the first connection to hold its window or be ended")
    const other = await openWatched(startClient(cleanup, server.address.port, { maxConnections: 1, streamChannelsPerConnection: 64 }), 1)
    await waitFor(() => endedIn(other) === 1 || budget.tunnelBytes === (17 - endedIn(hostile)) * MiB, 5000, "the other connection's tunnel to hold its window or be ended")
    console.log(`[stalled-tunnels] one connection's 16 stalled tunnels: ${endedIn(hostile)} ended; another connection's: ${other[0] ?? "holds its window"}; ${held()}`)
    expect(other).toEqual([undefined])
    expect(endedIn(hostile)).toBeGreaterThanOrEqual(8)
    expect(hostile.filter((end) => end !== undefined)).toEqual(Array(endedIn(hostile)).fill("overloaded"))
  })

  /** A server whose tunnels are admitted only while the pool (and the connection's share) has room for one more window. */
  const admitting = async (limits: { readonly maxQueuedBytes: number; readonly maxQueuedBytesPerConnection?: number }) => {
    const small = await startServer(cleanup, limits)
    small.handle("/tunnel", (request) => request.context.stream?.tunnelPoolHasRoom() === false ? failure("overloaded", "no room in the tunnels' pool", false) : openTunnel(request))
    const pool = () => [...small.meshSessions][0]?.connection.budget.shared.tunnelBytes ?? 0
    return { small, pool }
  }
  /** A tunnel on `client` that sends its window (the handler never reads it): the abort that cancels it, or the code it was refused with. */
  const tunnel = async (client: ReturnType<typeof startClient>) => {
    const cancel = new AbortController()
    return client.stream("/tunnel", stalling(2 * MiB, stop.promise), { timeoutMs: 3000, signal: cancel.signal }).then(() => cancel, (error: { readonly code?: string }) => error.code ?? String(error))
  }

  it("a handler that admits a tunnel only while the pool has room for one more window: 4 stalled fill a 4 MiB pool, the 5th is refused, one cancelled makes room", async () => {
    const { small, pool } = await admitting({ maxQueuedBytes: 4 * MiB })
    const client = startClient(cleanup, small.address.port, { maxConnections: 1, streamChannelsPerConnection: 64 })
    const open: Array<AbortController> = []
    for (let i = 0; i < 4; i++) {
      const opened = await tunnel(client)
      expect(opened).toBeInstanceOf(AbortController)
      open.push(opened as AbortController)
      // Nothing is read: each holds exactly its window.
      await waitFor(() => pool() === open.length * MiB, 5000, "the tunnel's window to fill")
    }
    expect(await tunnel(client)).toBe("overloaded")
    open[0]!.abort()
    await waitFor(() => pool() === 3 * MiB, 5000, "the cancelled tunnel's window to go")
    expect(await tunnel(client)).toBeInstanceOf(AbortController)
  })

  it("the same handler, 2 MiB per connection of a 4 MiB pool: a connection whose 2 stalled tunnels fill its share has its 3rd refused, another connection's is admitted", async () => {
    const { small, pool } = await admitting({ maxQueuedBytes: 4 * MiB, maxQueuedBytesPerConnection: 2 * MiB })
    const first = startClient(cleanup, small.address.port, { maxConnections: 1, streamChannelsPerConnection: 64 })
    for (let i = 1; i <= 2; i++) {
      expect(await tunnel(first)).toBeInstanceOf(AbortController)
      await waitFor(() => pool() === i * MiB, 5000, "the tunnel's window to fill")
    }
    expect(await tunnel(first)).toBe("overloaded")
    const other = startClient(cleanup, small.address.port, { maxConnections: 1, streamChannelsPerConnection: 64 })
    expect(await tunnel(other)).toBeInstanceOf(AbortController)
  })

  it("20 stalled tunnels on one connection, past its 8 MiB share of the 16 MiB pool: the tunnels whose bytes do not fit are ended overloaded, the connection is not paused, ordinary calls on it and on another connection are answered, and everything goes back once they end", async () => {
    const client = startClient(cleanup, server.address.port, { maxConnections: 1, streamChannelsPerConnection: 64 })
    const ends = await openWatched(client, 20)
    const budget = [...server.meshSessions][0]!.connection.budget
    // 8 windows fit in the connection's share: at least 12 tunnels are ended, each other one holds its whole window.
    await waitFor(() => endedIn(ends) >= 12 && budget.shared.tunnelBytes === (20 - endedIn(ends)) * MiB, 5000, "every tunnel to hold its window or be ended")
    const same = await echo(client, "same connection")
    const other = await echo(startClient(cleanup, server.address.port, { maxConnections: 1 }), "another connection")
    console.log(`[stalled-tunnels] one connection, past its share: ${endedIn(ends)} of 20 tunnels ended overloaded; ${held()}; ordinary calls: ${same}, ${other}`)
    expect(ends.filter((end) => end !== undefined)).toEqual(Array(endedIn(ends)).fill("overloaded"))
    expect(budget.pausedForBudget).toBe(false)
    expect(budget.shared.bytes).toBe(0)
    expect([same, other]).toEqual(["same connection", "another connection"])
    // The rest end: nothing stays counted anywhere.
    stop.resolve()
    await waitFor(() => ends.every((end) => end !== undefined), 5000, "every tunnel to end")
    await waitFor(() => budget.shared.requests === 0 && budget.shared.bytes === 0 && budget.shared.tunnelBytes === 0, 5000, "the budget to go back to 0")
  })
})
