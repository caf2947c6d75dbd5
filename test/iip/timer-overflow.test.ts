// The client's times as Node timers take them: past MAX_TIMER_MS (2^31-1 ms) Node fires after 1 ms.
// - A library caller still passing Date.now() as the `now` option (monotonicMs() is meant,
//   PROTOCOL.md §14) gives a deadline ~56 years away: a plain IIP call that waited in the client's
//   queue was sent with that much left, and the client's timer failed it 1 ms later.
// - A connectTimeoutMs of Infinity (or any past the limit) failed every dial after 1 ms.
// Real TCP on 127.0.0.1, port 0; the client's setTimeout is faked once it waits (Node's socket
// timers stay real), so the 1 ms is passed by hand, not by a sleep.
import * as net from "node:net"
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest"
import type { IncomingRequest } from "../../src/iip/server.ts"
import { Cleanup, untilTurn } from "../support/iipRaw.ts"
import { type Settled, settle, startClient, startServer } from "../support/meshTest.ts"

describe("client times longer than a Node timer holds", () => {
  let cleanup: Cleanup
  beforeEach(() => {
    cleanup = new Cleanup()
  })
  afterEach(async () => {
    vi.useRealTimers()
    await cleanup.run()
  })

  it("sent from the client's queue with a Date.now() as `now`, it waits for its answer: no 1 ms timeout", async () => {
    /** The /hold handler's requests, by body, each answered by its release. */
    const held = new Map<string, () => void>()
    const server = await startServer(cleanup, { mesh: false })
    server.handle("/hold", (request: IncomingRequest) => {
      const body = request.data.toString()
      return new Promise<string>((resolve) => held.set(body, () => resolve(`answer to ${body}`)))
    })
    // One connection of one channel, no pipelining: a second call waits in the client's queue.
    const client = startClient(cleanup, server.address.port, { mesh: false, maxConnections: 1, maxChannelsPerConnection: 1, pipelineAtLimit: false })
    const occupier = settle(client.call("/hold", "occupier", { timeoutMs: 30_000 }))
    await untilTurn(() => held.has("occupier"), "the occupier at the handler")
    vi.useFakeTimers({ toFake: ["setTimeout", "clearTimeout"] })
    let outcome: Settled<Buffer> | undefined
    void settle(client.stream("/hold", Buffer.from("queued"), { timeoutMs: 30_000, now: Date.now() })).then((result) => {
      outcome = result.ok ? { ok: true, value: result.value.data } : result
    })
    expect(client.stats.queued).toBe(1)
    held.get("occupier")!()
    expect(await occupier).toStrictEqual({ ok: true, value: Buffer.from("answer to occupier") })
    await untilTurn(() => held.has("queued"), "the queued call at the handler")
    // Before, the client's timer for it was armed with ~56 years and fired after 1 ms: RequestTimeout.
    vi.advanceTimersByTime(1000)
    await new Promise((resolve) => setImmediate(resolve))
    expect(outcome).toBeUndefined()
    vi.useRealTimers()
    held.get("queued")!()
    await untilTurn(() => outcome !== undefined, "the queued call's answer")
    expect(outcome).toStrictEqual({ ok: true, value: Buffer.from("answer to queued") })
  })

  it("a connectTimeoutMs of Infinity waits for a server that does not answer the hello: no 1 ms dial failure", async () => {
    // Accepts and never says a word: the client waits for the hello's answer within its connect timeout.
    const sockets = new Set<net.Socket>()
    const silent = net.createServer((socket) => void sockets.add(socket))
    await new Promise<void>((resolve) => silent.listen(0, "127.0.0.1", resolve))
    cleanup.add(() => new Promise<void>((resolve) => {
      for (const socket of sockets) socket.destroy()
      silent.close(() => resolve())
    }))
    const client = startClient(cleanup, (silent.address() as net.AddressInfo).port, { connectTimeoutMs: Infinity })
    vi.useFakeTimers({ toFake: ["setTimeout", "clearTimeout"] })
    let outcome: Settled<string> | undefined
    void settle(client.mode()).then((result) => (outcome = result))
    await untilTurn(() => sockets.size === 1, "the client's connection")
    // Before, the dial's timer and mode()'s were armed with Infinity and fired after 1 ms: ConnectFailed.
    vi.advanceTimersByTime(1000)
    await new Promise((resolve) => setImmediate(resolve))
    expect(outcome).toBeUndefined()
    vi.useRealTimers()
  })
})
