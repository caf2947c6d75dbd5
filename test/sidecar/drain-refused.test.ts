// A peer that drains: B1 stops gracefully (listener closed, go-away said) while a slow request keeps
// its connection from A open (draining). Requests A sends to B1 in that moment find no live
// connection, and a new one is refused: each must go to B2 at once, not wait for the 3 s connect
// timeout. (From a chaos soak: two GETs just after SIGTERM waited 3 s, while the caller had
// already logged ECONNREFUSED twice.)
import type * as http from "node:http"
import { afterEach, describe, expect, it } from "vitest"
import type { Endpoint } from "../../src/sidecar/endpoints.ts"
import { Cleanup, deferred, waitFor, withTimeout } from "../support/iipRaw.ts"
import { call, LOOPBACK, sidecarConfig, startApp, startSidecar } from "../support/sidecarHarness.ts"

/** An app that names its instance; `/slow` waits until the test releases it. */
const instanceApp = (name: string, slow?: { got: () => void; release: Promise<void> }): http.RequestListener => (req, res) => {
  req.resume()
  if (req.url === "/slow" && slow !== undefined) {
    slow.got()
    void slow.release.then(() => res.end(name))
    return
  }
  res.end(name)
}

const endpoint = (port: number): Endpoint => ({ service: "catalog", host: LOOPBACK, port, weight: 1, source: "static" })

describe("requests to a draining peer whose listener is closed", () => {
  let cleanup = new Cleanup()
  afterEach(async () => {
    await cleanup.run()
    cleanup = new Cleanup()
  })

  it("each goes to another instance at once (well below the 3 s connect timeout)", async () => {
    const got = deferred()
    const release = deferred()
    cleanup.add(() => release.resolve())
    const app1 = await startApp(cleanup, instanceApp("b1", { got: () => got.resolve(), release: release.promise }))
    const app2 = await startApp(cleanup, instanceApp("b2"))
    const b1 = await startSidecar(cleanup, sidecarConfig({ service: "catalog", node: "b1", app: app1.address, drainTimeoutMs: 10_000 }))
    const b2 = await startSidecar(cleanup, sidecarConfig({ service: "catalog", node: "b2", app: app2.address }))
    // Round robin: every other request is for B1, so some certainly are.
    const a = await startSidecar(
      cleanup,
      sidecarConfig({ service: "store", loadBalancer: "MethodRoundrobin", endpoints: { catalog: [{ address: b1.inboundAddress, weight: 1 }] } })
    )
    const slow = call(a.outboundPort, { path: "/slow", timeoutMs: 20_000 })
    await withTimeout(got.promise, 5000, "the slow request to reach B1's app")
    a.sidecar.registry.set("catalog", [endpoint(b1.sidecar.inbound.port), endpoint(b2.sidecar.inbound.port)])

    // B1 drains: its listener closes and it says go-away; the slow request holds the connection open.
    const stopped = b1.stop()
    const toB1 = a.sidecar.registry.clientOf(endpoint(b1.sidecar.inbound.port))
    await waitFor(() => toB1.stats.connections === 1 && toB1.currentMode === undefined, 5000, "A to hear B1's go-away")

    const timings: Array<{ readonly ms: number; readonly status: number; readonly body: string }> = []
    for (let i = 0; i < 6; i++) {
      const started = performance.now()
      const answer = await call(a.outboundPort, { path: `/get/${i}`, timeoutMs: 10_000 })
      timings.push({ ms: performance.now() - started, status: answer.status, body: answer.body.toString() })
    }
    console.log(`requests while B1 drains: ${timings.map((t) => `${t.ms.toFixed(1)} ms ${t.status} ${t.body}`).join(", ")}`)
    expect(timings.map((t) => [t.status, t.body])).toStrictEqual(timings.map(() => [200, "b2"]))
    // Bounded well below the connect timeout (3 s): a refusal moves the request on at once.
    expect(Math.max(...timings.map((t) => t.ms))).toBeLessThan(1000)
    // B1 still drains (the slow request holds it): the refusals came from its closed listener.
    expect(toB1.stats.connections).toBe(1)

    release.resolve()
    expect((await slow).body.toString()).toBe("b1")
    await stopped
  }, 30_000)
})
