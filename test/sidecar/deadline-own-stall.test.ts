// Request deadlines (src/mux/deadlines.ts) when this process, not the peer, stalls. Both instances
// of "catalog" (app and sidecar) run in child processes (test/support/meshInstanceChild.ts) and
// answer after 200 ms; A, here, gives each request 1 s. Once A has handed out all twelve GETs, the
// test blocks this process's event loop for 1.5 s with a synchronous busy-wait (a long GC, a
// starved CPU). The answers arrive meanwhile and wait in the kernel's buffer; on waking, libuv runs
// the expired deadlines before it polls for I/O. Healthy instances must not be judged by our stall:
// the GETs get their answers, and no failure counts against either (five in a row ejected one).
import { afterEach, describe, expect, it } from "vitest"
import type { IipClient } from "../../src/iip/client.ts"
import { busyWait } from "../support/busyWait.ts"
import { holdsStarts } from "../support/childStart.ts"
import { Cleanup, waitFor } from "../support/iipRaw.ts"
import { spawnInstance } from "../support/meshInstance.ts"
import { call, sidecarConfig, startSidecar } from "../support/sidecarHarness.ts"

const stallMs = 1500
const requests = 12

describe("request deadlines when this process stalls", () => {
  let cleanup = new Cleanup()
  afterEach(async () => {
    await cleanup.run()
    cleanup = new Cleanup()
  })

  it(`GETs their instances answered during our ${stallMs} ms stall get those answers, with no failure against them`, async () => {
    const instances = [await spawnInstance(cleanup, "b1", 200), await spawnInstance(cleanup, "b2", 200)]
    const a = await startSidecar(
      cleanup,
      sidecarConfig({
        service: "store",
        loadBalancer: "MethodRoundrobin",
        slowTryFloorMs: null,
        requestTimeoutMs: 1000,
        endpoints: { catalog: instances.map((b) => ({ address: b.inbound, weight: 1 })) }
      })
    )
    for (let i = 0; i < 4; i++) expect((await call(a.outboundPort, { path: `/warm/${i}` })).status).toBe(200)
    // Stalls in the check phase of the turn that handed out the last GET (all written by then).
    const registry = a.sidecar.registry
    const state = { handed: 0, answered: 0, stalledWith: -1 }
    for (const endpoint of registry.endpointsOf("catalog")) {
      const client: IipClient = registry.clientOf(endpoint)
      const streamWith = client.streamWith.bind(client)
      client.streamWith = (path, body, options, onReply) => {
        streamWith(path, body, options, (error, reply) => {
          state.answered++
          onReply(error, reply)
        })
        if (++state.handed < requests) return
        setImmediate(() => {
          state.stalledWith = state.handed - state.answered
          busyWait(stallMs)
        })
      }
    }
    const answers = await Promise.all(Array.from({ length: requests }, (_, i) => call(a.outboundPort, { path: `/stalled/${i}` })))
    // A 200 ms answer: most GETs were still waiting when the stall began.
    expect(state.stalledWith).toBeGreaterThan(requests / 2)
    expect(answers.map((x) => x.status)).toStrictEqual(Array.from({ length: requests }, () => 200))
    await waitFor(() => registry.view()[0]!.endpoints.every((e) => e.pending === 0), 5000, "no try in flight")
    expect(registry.view()[0]!.endpoints.map((e) => [e.failures, e.health])).toStrictEqual([[0, "healthy"], [0, "healthy"]])
    // Two instance starts (30 s each at most: meshInstance.ts) and the test's own bounds.
  }, holdsStarts(2, 30_000))
})
