// Keep-alive when this process, not the peer, stalls (src/iip/keepAlive.ts). The peer is a mesh
// server in a child process (test/support/meshServerChild.ts) that answers pings at once; our
// client pings it after 300 ms of silence and gives an answer 500 ms. Right after a ping goes out
// (written at once, the wait armed), the test blocks this process's event loop for 1.5 s with a
// synchronous busy-wait: what a long GC, a noisy neighbour or a throttled cgroup does to a sidecar.
// The peer's answer arrives meanwhile and waits in the kernel's buffer; on waking, libuv runs the
// expired timers before it polls for I/O, so the ping's 500 ms is up before the answer is read. A
// healthy peer must not be judged by our stall: the connection lives and a call on it succeeds.
// A peer that really stops (SIGSTOP) is still judged, with or without our stall, in bounded time.
import type * as net from "node:net"
import { afterEach, describe, expect, it } from "vitest"
import type { IipClient } from "../../src/iip/client.ts"
import type { MeshSession } from "../../src/mux/meshSession.ts"
import { busyWait } from "../support/busyWait.ts"
import { Cleanup, deferred, waitFor, withTimeout } from "../support/iipRaw.ts"
import { startClient } from "../support/meshTest.ts"
import { startServerChild, stop } from "../support/serverChild.ts"

const keepAlive = { intervalMs: 300, timeoutMs: 500 }
const stallMs = 1500

/**
 * Watches `session`'s pings: counts the answered ones; once `stallAfterNextPing()` is called, a
 * ping sent at once whose answer has not been read by the check phase of its turn (the keep-alive's
 * wait is armed by then) is followed there by `stallMs` of busy-wait. A ping answered before that
 * (the peer beat us to it) is no test of a stall: the next one is tried instead.
 */
const watchPings = (session: MeshSession) => {
  const state = { sent: 0, answered: 0, armed: false, stalls: 0, wokeAt: 0 }
  const ping = session.ping.bind(session)
  session.ping = (callback) => {
    state.sent++
    let answered = false
    const socket = session.connection.socket as net.Socket
    const written = socket.bytesWritten
    ping((error, rtt) => {
      answered = true
      if (error === undefined) state.answered++
      callback(error, rtt)
    })
    if (!state.armed || socket.bytesWritten === written) return
    setImmediate(() => {
      if (answered || !state.armed) return
      state.armed = false
      state.stalls++
      busyWait(stallMs)
      state.wokeAt = performance.now()
    })
  }
  return {
    state,
    stallAfterNextPing: () => {
      state.armed = true
    }
  }
}

const connected = async (cleanup: Cleanup, port: number): Promise<{ client: IipClient; session: MeshSession }> => {
  const client = startClient(cleanup, port, { maxConnections: 1, keepAlive })
  expect((await client.call("/echo", "first", { timeoutMs: 10_000 })).toString()).toBe("first")
  expect(client.stats).toMatchObject({ connections: 1, mesh: 1 })
  return { client, session: client.meshSessions[0]! }
}

const closeOf = (session: MeshSession) => {
  const closed = deferred<{ message: string; at: number }>()
  session.onClosed((error) => closed.resolve({ message: error.message, at: performance.now() }))
  return closed.promise
}

describe("keep-alive when this process stalls", () => {
  let cleanup = new Cleanup()
  afterEach(async () => {
    await cleanup.run()
    cleanup = new Cleanup()
  })

  it(`a peer that answered during our ${stallMs} ms stall keeps its connection, and a call on it succeeds`, async () => {
    const child = await startServerChild(cleanup, "meshServerChild.ts")
    const { client, session } = await connected(cleanup, child.port)
    const pings = watchPings(session)
    // One ping answered before the stall: the peer answers them.
    await waitFor(() => pings.state.answered >= 1 || session.closed, 10_000, "a ping answered")
    pings.stallAfterNextPing()
    await waitFor(() => pings.state.stalls === 1 || session.closed, 20_000, "a stall with a ping unanswered")
    // The stalled ping and one after it answered (the keep-alive carries on), or the connection lost.
    const answeredBefore = pings.state.answered
    await waitFor(() => pings.state.answered >= answeredBefore + 2 || session.closed, 20_000, "two pings answered after the stall, or the close")
    expect(pings.state.stalls).toBe(1)
    expect(session.connection.closeError?.message).toBeUndefined()
    expect(session.closed).toBe(false)
    expect((await client.call("/echo", "after the stall", { timeoutMs: 10_000 })).toString()).toBe("after the stall")
    expect(client.meshSessions[0]).toBe(session)
    expect(client.stats).toMatchObject({ connections: 1, mesh: 1 })
  }, 40_000)

  it("a peer that stops (SIGSTOP) is still judged: the connection closes within the silence, the ping's timeout and a margin", async () => {
    const child = await startServerChild(cleanup, "meshServerChild.ts")
    const { session } = await connected(cleanup, child.port)
    const closed = closeOf(session)
    await stop(cleanup, child.pid)
    const stoppedAt = performance.now()
    const { message, at } = await withTimeout(closed, 10_000, "the connection to close")
    expect(message).toContain(`no answer to a ping within ${keepAlive.timeoutMs} ms`)
    // 300 ms of silence, 500 ms unanswered; the margin is for a loaded machine.
    expect(at - stoppedAt).toBeLessThan(keepAlive.intervalMs + keepAlive.timeoutMs + 700)
  }, 40_000)

  it(`a peer that stops (SIGSTOP) is still judged when we stall ${stallMs} ms too: at most one more timeout after we wake`, async () => {
    const child = await startServerChild(cleanup, "meshServerChild.ts")
    const { session } = await connected(cleanup, child.port)
    const pings = watchPings(session)
    const closed = closeOf(session)
    await stop(cleanup, child.pid)
    pings.stallAfterNextPing()
    const { message, at } = await withTimeout(closed, 10_000, "the connection to close")
    expect(pings.state.stalls).toBe(1)
    expect(message).toContain(`no answer to a ping within ${keepAlive.timeoutMs} ms`)
    expect(at - pings.state.wokeAt).toBeLessThan(keepAlive.timeoutMs + 500)
  }, 40_000)
})
