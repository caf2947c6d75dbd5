// The client's times as Node timers take them: past MAX_TIMER_MS (2^31-1 ms) Node fires after 1 ms.
// A connectTimeoutMs of Infinity (or any past the limit) failed every dial after 1 ms. (A Date.now()
// passed as RequestOptions.now is refused outright now: test/iip/caller-times.test.ts.)
// Real TCP on 127.0.0.1, port 0; the client's setTimeout is faked once it waits (Node's socket
// timers stay real), so the 1 ms is passed by hand, not by a sleep.
import * as net from "node:net"
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest"
import { Cleanup, untilTurn } from "../support/iipRaw.ts"
import { type Settled, settle, startClient } from "../support/meshTest.ts"

describe("client times longer than a Node timer holds", () => {
  let cleanup: Cleanup
  beforeEach(() => {
    cleanup = new Cleanup()
  })
  afterEach(async () => {
    vi.useRealTimers()
    await cleanup.run()
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
