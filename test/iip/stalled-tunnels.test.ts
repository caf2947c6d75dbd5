// Tunnels whose far end stops reading (PROTOCOL.md §8, §17.4), over real TCP: each holds up to a
// stream window of unread bytes at the server. Those bytes count in a pool of their own (as large
// as the server's byte budget), not in the budget of the requests: stalled tunnels neither pause
// the connection they share with ordinary requests nor make the server refuse those `overloaded`.
// Past the pool they count as before (the connection's reading pauses), so memory stays bounded.
// A handler taking a new tunnel can ask whether the pool has room for one more stalled window
// (IncomingStream.tunnelPoolHasRoom), and refuse it when not, as the sidecar does (§17.4).
import { afterEach, beforeEach, describe, expect, it } from "vitest"
import { failure, type IipServer, reply } from "../../src/iip/server.ts"
import { Cleanup, deferred, waitFor } from "../support/iipRaw.ts"
import { startClient, startServer } from "../support/meshTest.ts"

const MiB = 1024 * 1024

/** A body that sends `bytes`, then nothing until `stop` resolves. */
const stalling = (bytes: number, stop: Promise<void>) =>
  (async function*() {
    for (let sent = 0; sent < bytes; sent += 64 * 1024) yield Buffer.alloc(64 * 1024, 7)
    await stop
  })()

const rssMiB = () => process.memoryUsage().rss / MiB

describe("stalled tunnels and ordinary requests", () => {
  let cleanup: Cleanup
  let server: IipServer
  let stop = deferred()
  beforeEach(async () => {
    cleanup = new Cleanup()
    stop = deferred()
    cleanup.add(() => stop.resolve())
    // Per connection 8 MiB, in all 16 MiB: 24 tunnels holding a 1 MiB window each are over both.
    server = await startServer(cleanup, { maxQueuedBytesPerConnection: 8 * MiB, maxQueuedBytes: 16 * MiB })
    // A tunnel: answers at once and for as long as it lives, never reads what the caller sends.
    server.handle("/tunnel", (request) => {
      request.context.longLived()
      return reply((async function*() {
        yield Buffer.from("open")
        await stop.promise
      })())
    })
    server.handle("/echo", (request) => request.data)
  })
  afterEach(() => cleanup.run())

  /** Opens up to `n` tunnels on `client`, one after the other (each holds a channel once its answer began); how many opened within 3 s each. */
  const openTunnels = async (client: ReturnType<typeof startClient>, n: number): Promise<number> => {
    let opened = 0
    for (let i = 0; i < n; i++) {
      const tunnel = await client.stream("/tunnel", stalling(2 * MiB, stop.promise), { timeoutMs: 3000 }).catch(() => undefined)
      if (tunnel === undefined) break
      opened++
    }
    return opened
  }
  const echo = (client: ReturnType<typeof startClient>, text: string) => client.call("/echo", text, { timeoutMs: 3000 }).then(String, (e: unknown) => String(e))
  const held = () => {
    const budget = [...server.meshSessions][0]!.connection.budget.shared
    return `held ${((budget.bytes + budget.tunnelBytes) / MiB).toFixed(1)} MiB (tunnel pool ${(budget.tunnelBytes / MiB).toFixed(1)})`
  }

  it("12 stalled tunnels on one connection (over its 8 MiB): they all open, and its ordinary calls are answered; the connection is not paused", async () => {
    const before = rssMiB()
    const client = startClient(cleanup, server.address.port, { maxConnections: 1, streamChannelsPerConnection: 64 })
    const opened = await openTunnels(client, 12)
    const budget = [...server.meshSessions][0]!.connection.budget
    // Each tunnel sent its window (1 MiB) and waits for a grant that never comes.
    await waitFor(() => budget.shared.bytes + budget.shared.tunnelBytes >= opened * MiB, 10_000, "the windows to fill")
    const answer = await echo(client, "same connection")
    console.log(`[stalled-tunnels] one connection: ${opened} of 12 tunnels opened, each stalled with a 1 MiB window; ${held()}; process RSS (client and server) ${before.toFixed(1)} -> ${rssMiB().toFixed(1)} MiB; ordinary call: ${answer}`)
    expect(opened).toBe(12)
    expect(answer).toBe("same connection")
    expect(budget.pausedForBudget).toBe(false)
  })

  it("3 connections x 6 stalled tunnels (over the 16 MiB in all): a fourth connection's calls are answered, not refused overloaded", async () => {
    const before = rssMiB()
    const clients = [0, 1, 2].map(() => startClient(cleanup, server.address.port, { maxConnections: 1, streamChannelsPerConnection: 64 }))
    const opened = []
    for (const client of clients) opened.push(await openTunnels(client, 6))
    const budget = [...server.meshSessions][0]!.connection.budget.shared
    await waitFor(() => budget.bytes + budget.tunnelBytes >= 18 * MiB, 10_000, "the windows to fill")
    const answer = await echo(startClient(cleanup, server.address.port, { maxConnections: 1 }), "fourth connection")
    console.log(`[stalled-tunnels] 3 connections: ${opened.join("+")} tunnels stalled; ${held()}; process RSS (client and server) ${before.toFixed(1)} -> ${rssMiB().toFixed(1)} MiB; ordinary call: ${answer}`)
    expect(opened).toEqual([6, 6, 6])
    expect(answer).toBe("fourth connection")
  })

  it("a handler that admits a tunnel only while the pool has room for one more window: 4 stalled fill a 4 MiB pool, the 5th is refused, one cancelled makes room", async () => {
    const small = await startServer(cleanup, { maxQueuedBytes: 4 * MiB })
    small.handle("/tunnel", (request) => {
      if (request.context.stream?.tunnelPoolHasRoom() === false) return failure("overloaded", "no room in the tunnels' pool", false)
      request.context.longLived()
      const cancelled = request.context.signal
      return reply((async function*() {
        yield Buffer.from("open")
        await new Promise<void>((resolve) => {
          void stop.promise.then(resolve)
          cancelled.addEventListener("abort", () => resolve())
        })
      })())
    })
    const client = startClient(cleanup, small.address.port, { maxConnections: 1, streamChannelsPerConnection: 64 })
    const pool = () => [...small.meshSessions][0]?.connection.budget.shared.tunnelBytes ?? 0
    /** A tunnel that sends its window (the handler never reads it): the abort that cancels it, or the code it was refused with. */
    const tunnel = async () => {
      const cancel = new AbortController()
      return client.stream("/tunnel", stalling(2 * MiB, stop.promise), { timeoutMs: 3000, signal: cancel.signal }).then(() => cancel, (error: { readonly code?: string }) => error.code ?? String(error))
    }
    const open: Array<AbortController> = []
    for (let i = 0; i < 4; i++) {
      const opened = await tunnel()
      expect(opened).toBeInstanceOf(AbortController)
      open.push(opened as AbortController)
      // Nothing is read: each holds exactly its window.
      await waitFor(() => pool() === open.length * MiB, 5000, "the tunnel's window to fill")
    }
    expect(await tunnel()).toBe("overloaded")
    open[0]!.abort()
    await waitFor(() => pool() === 3 * MiB, 5000, "the cancelled tunnel's window to go")
    expect(await tunnel()).toBeInstanceOf(AbortController)
  })

  it("past the tunnels' pool, stalled tunnels count as before: the connection holding them pauses, and what the server holds stays bounded", async () => {
    const client = startClient(cleanup, server.address.port, { maxConnections: 1, streamChannelsPerConnection: 64 })
    const opened = await openTunnels(client, 40)
    const budget = [...server.meshSessions][0]!.connection.budget
    await waitFor(() => budget.pausedForBudget, 10_000, "the connection to pause")
    console.log(`[stalled-tunnels] one connection, past the pool: ${opened} of 40 tunnels opened; ${held()}`)
    expect(opened).toBeLessThan(40)
    expect(budget.shared.tunnelBytes).toBeLessThanOrEqual(16 * MiB)
    expect(budget.shared.bytes).toBeLessThanOrEqual(8 * MiB + MiB)
  })
})
