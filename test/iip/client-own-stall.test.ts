// A plain-mode request's timer (src/mux/clientSession.ts) when this process, not the peer,
// stalls. The peer is a plain IIP server in a child process (test/support/iipServerChild.ts) whose
// /slow answers after 200 ms; each request here gets 1 s. Once all are written, the test blocks
// this process's event loop for 1.5 s with a synchronous busy-wait (a long GC, a starved CPU).
// The answers arrive meanwhile and wait in the kernel's buffer; on waking, libuv runs the expired
// timers before it polls for I/O. A healthy peer must not be judged by our stall: every request
// gets its answer. A peer that never answers (/hang) is still judged, at most a timeout after we wake.
import { afterEach, describe, expect, it } from "vitest"
import { IipClient } from "../../src/iip/client.ts"
import { RequestTimeout } from "../../src/mux/errors.ts"
import { busyWait } from "../support/busyWait.ts"
import { Cleanup, waitFor } from "../support/iipRaw.ts"
import { settle } from "../support/meshTest.ts"
import { startServerChild } from "../support/serverChild.ts"

const stallMs = 1500
const timeoutMs = 1000
const requests = 8

/** A plain client with `requests` channels open on one connection to the child. */
const connected = async (cleanup: Cleanup): Promise<IipClient> => {
  const { port } = await startServerChild(cleanup, "iipServerChild.ts")
  const client = new IipClient({ host: "127.0.0.1", mesh: false, port, maxConnections: 1, maxChannelsPerConnection: requests, idleChannelsAhead: requests, log: () => {} })
  cleanup.add(() => client.close())
  expect((await client.call("/echo", "warm-up", { timeoutMs: 10_000 })).toString()).toBe("warm-up")
  await waitFor(() => client.stats.channels === requests, 5000, `${requests} channels open`)
  expect(await client.mode()).toBe("plain")
  return client
}

/** Sends `requests` calls to `path`; once all are written, stalls this process `stallMs` (at the end of the turn). */
const stalledCalls = (client: IipClient, path: string) => {
  const state = { answered: 0, stalledWith: -1, wokeAt: 0 }
  const calls = Array.from({ length: requests }, (_, i) =>
    settle(client.call(path, `r${i}`, { timeoutMs }).finally(() => state.answered++)).then((result) => ({ result, at: performance.now() }))
  )
  setImmediate(() => {
    state.stalledWith = requests - state.answered
    busyWait(stallMs)
    state.wokeAt = performance.now()
  })
  return { state, calls: Promise.all(calls) }
}

describe("plain-mode request timers when this process stalls", () => {
  let cleanup = new Cleanup()
  afterEach(async () => {
    await cleanup.run()
    cleanup = new Cleanup()
  })

  it(`requests the peer answered during our ${stallMs} ms stall get those answers`, async () => {
    const client = await connected(cleanup)
    const { state, calls } = stalledCalls(client, "/slow")
    const results = await calls
    expect(state.stalledWith).toBe(requests)
    expect(results.map(({ result }) => (result.ok ? result.value.toString() : String(result.error)))).toStrictEqual(Array.from({ length: requests }, (_, i) => `r${i}`))
    expect(client.stats).toMatchObject({ connections: 1, pending: 0 })
  }, 40_000)

  it(`requests the peer never answers still time out when we stall ${stallMs} ms too: at most one more timeout after we wake`, async () => {
    const client = await connected(cleanup)
    const { state, calls } = stalledCalls(client, "/hang")
    const results = await calls
    expect(state.stalledWith).toBe(requests)
    for (const { result, at } of results) {
      expect(result.ok ? "answered" : result.error).toBeInstanceOf(RequestTimeout)
      expect(at - state.wokeAt).toBeLessThan(timeoutMs + 500)
    }
  }, 40_000)
})
