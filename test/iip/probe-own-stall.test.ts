// The health-check probe's timer (IipClient.probe, src/iip/client.ts) when this process, not the
// peer, stalls. The peer is a mesh server in a child process (test/support/meshServerChild.ts)
// that answers pings at once; the probe gives its ping 500 ms. Right after the ping goes out, the
// test blocks this process's event loop for 1.5 s with a synchronous busy-wait (a long GC, a
// starved CPU). The answer arrives meanwhile and waits in the kernel's buffer; on waking, libuv
// runs the expired timer before it polls for I/O. A healthy peer must not be judged by our stall:
// the probe succeeds (a failed one marks the endpoint, src/sidecar/endpoints.ts). A peer that
// really stops (SIGSTOP) still fails the probe, at most one more wait after we wake.
import { afterEach, describe, expect, it } from "vitest"
import type { IipClient } from "../../src/iip/client.ts"
import { RequestTimeout } from "../../src/mux/errors.ts"
import type { MeshSession } from "../../src/mux/meshSession.ts"
import { busyWait } from "../support/busyWait.ts"
import { Cleanup } from "../support/iipRaw.ts"
import { settle, startClient } from "../support/meshTest.ts"
import { startServerChild, stop } from "../support/serverChild.ts"

const stallMs = 1500
const probeMs = 500

describe("health-check probes when this process stalls", () => {
  let cleanup = new Cleanup()
  afterEach(async () => {
    await cleanup.run()
    cleanup = new Cleanup()
  })

  /** A client with one mesh connection to a child server. */
  const connected = async (): Promise<{ client: IipClient; session: MeshSession; pid: number }> => {
    const { port, pid } = await startServerChild(cleanup, "meshServerChild.ts")
    const client = startClient(cleanup, port, { maxConnections: 1 })
    expect((await client.call("/echo", "first", { timeoutMs: 10_000 })).toString()).toBe("first")
    expect(client.stats).toMatchObject({ connections: 1, mesh: 1 })
    return { client, session: client.meshSessions[0]!, pid }
  }

  /** Probes with `stallMs` of busy-wait right after the ping goes out (in a microtask, once the connection's mode is known). */
  const stalledProbe = async (client: IipClient, session: MeshSession) => {
    const state = { pinged: false, answeredBeforeStall: true, wokeAt: 0 }
    let answered = false
    const ping = session.ping.bind(session)
    session.ping = (callback) => {
      state.pinged = true
      ping((error, rtt) => {
        answered = true
        callback(error, rtt)
      })
    }
    const probed = settle(client.probe(probeMs))
    setImmediate(() => {
      state.answeredBeforeStall = answered
      busyWait(stallMs)
      state.wokeAt = performance.now()
    })
    const result = await probed
    return { result, at: performance.now(), state }
  }

  it(`a probe the peer answered during our ${stallMs} ms stall succeeds`, async () => {
    const { client, session } = await connected()
    const { result, state } = await stalledProbe(client, session)
    expect(state).toMatchObject({ pinged: true, answeredBeforeStall: false })
    expect(result.ok ? "ok" : String(result.error)).toBe("ok")
    expect(session.closed).toBe(false)
  }, 40_000)

  it(`a peer that stops (SIGSTOP) still fails a probe when we stall ${stallMs} ms too: at most one more wait after we wake`, async () => {
    const { client, session, pid } = await connected()
    await stop(cleanup, pid)
    const { result, at, state } = await stalledProbe(client, session)
    expect(state).toMatchObject({ pinged: true, answeredBeforeStall: false })
    expect(result.ok ? "answered" : result.error).toBeInstanceOf(RequestTimeout)
    expect(at - state.wokeAt).toBeLessThan(probeMs + 500)
  }, 40_000)
})
