// The slow-try watch (src/sidecar/slowTry.ts) when this process, not the peer, stalls. Both
// instances of "catalog" (app and sidecar) run in child processes (test/support/meshInstanceChild.ts)
// and answer at once; A, here, gives a GET up as slow after 500 ms. Right after A hands a GET to
// an instance, the test blocks this process's event loop for 1.5 s with a synchronous busy-wait (a
// long GC, a starved CPU). The answer arrives meanwhile and waits in the kernel's buffer; on
// waking, libuv runs the expired watch before it polls for I/O. A healthy instance must not be
// judged by our stall: the GET gets its answer, not a retry on the other instance, and no failure
// counts against it.
import { afterEach, describe, expect, it } from "vitest"
import type { IipClient } from "../../src/iip/client.ts"
import { busyWait } from "../support/busyWait.ts"
import { holdsStarts } from "../support/childStart.ts"
import { Cleanup, waitFor } from "../support/iipRaw.ts"
import { spawnInstance } from "../support/meshInstance.ts"
import { call, sidecarConfig, startSidecar } from "../support/sidecarHarness.ts"

const stallMs = 1500

/**
 * Spies on a client's tries: once `armed`, a try handed to it that has no answer by the check
 * phase of its turn (written, the watch armed) is followed there by `stallMs` of busy-wait. A try
 * answered before that is no test of a stall: the next one is tried instead.
 */
const stallAfterTry = (client: IipClient, name: string, state: { armed: boolean; stalledOn: string | undefined }) => {
  const streamWith = client.streamWith.bind(client)
  client.streamWith = (path, body, options, onReply) => {
    let answered = false
    streamWith(path, body, options, (error, reply) => {
      answered = true
      onReply(error, reply)
    })
    if (!state.armed) return
    setImmediate(() => {
      if (answered || !state.armed) return
      state.armed = false
      state.stalledOn = name
      busyWait(stallMs)
    })
  }
}

describe("slow tries when this process stalls", () => {
  let cleanup = new Cleanup()
  afterEach(async () => {
    await cleanup.run()
    cleanup = new Cleanup()
  })

  it(`a GET an instance answered during our ${stallMs} ms stall is its answer, with no failure against it`, async () => {
    const instances = [await spawnInstance(cleanup, "b1"), await spawnInstance(cleanup, "b2")]
    const a = await startSidecar(
      cleanup,
      sidecarConfig({
        service: "store",
        loadBalancer: "MethodRoundrobin",
        slowTryFloorMs: 500,
        requestTimeoutMs: 8000,
        endpoints: { catalog: instances.map((b) => ({ address: b.inbound, weight: 1 })) }
      })
    )
    // Connections up and latency estimates warm (a few ms: the watch is the 500 ms floor).
    for (let i = 0; i < 4; i++) expect((await call(a.outboundPort, { path: `/warm/${i}` })).status).toBe(200)
    const state = { armed: false, stalledOn: undefined as string | undefined }
    const registry = a.sidecar.registry
    for (const endpoint of registry.endpointsOf("catalog")) {
      stallAfterTry(registry.clientOf(endpoint), endpoint.port === Number(instances[0]!.inbound.split(":")[1]) ? "b1" : "b2", state)
    }
    let answer: Awaited<ReturnType<typeof call>> | undefined
    for (let i = 0; i < 10 && state.stalledOn === undefined; i++) {
      state.armed = true
      answer = await call(a.outboundPort, { path: `/stalled/${i}` })
    }
    state.armed = false
    expect(state.stalledOn).toBeDefined()
    expect(`${answer!.status} ${answer!.body.toString()}`).toBe(`200 ${state.stalledOn}`)
    await waitFor(() => registry.view()[0]!.endpoints.every((e) => e.pending === 0), 5000, "no try in flight")
    expect(registry.view()[0]!.endpoints.map((e) => e.failures)).toStrictEqual([0, 0])
    // Two instance starts (30 s each at most: meshInstance.ts) and the test's own bounds.
  }, holdsStarts(2, 30_000))
})
