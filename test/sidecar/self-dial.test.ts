// A sidecar never dials its own listeners (src/iip/ownListeners.ts): an endpoint list naming this
// sidecar's admin listeners, by address or by a name that resolves to it (`localhost`), is refused
// at the dial, whatever the source (a static list here: an operator's typo, or a file any process
// on the machine can write), as a try the balancer ejects (within its cap) and the request does
// not pay for; every request reaches the real peer listed beside them. The listeners' accepted sockets are counted through node's own
// `net.server.socket` diagnostics channel, so "never dialled" is what the listener saw.
// The same over a non-loopback address of the host, from DNS SRV, with a second sidecar on that
// address still dialled: test/sidecar/self-dial-netns.test.ts.
import { Effect, Exit, Scope } from "effect"
import { afterEach, describe, expect, it } from "vitest"
import * as Admin from "../../src/admin/adminServer.ts"
import type { Sidecar } from "../../src/sidecar/sidecar.ts"
import { acceptedSockets } from "../support/acceptedSockets.ts"
import { Cleanup, waitFor } from "../support/iipRaw.ts"
import { parsePrometheusText, sum } from "../support/prometheusText.ts"
import { call, sidecarConfig, startApp, startSidecar } from "../support/sidecarHarness.ts"

describe("a sidecar's dials to its own listeners", () => {
  const cleanup = new Cleanup()
  afterEach(() => cleanup.run())

  it("a static endpoint naming its own admin listeners (address or localhost) is never dialled; the real peer takes every request", async () => {
    const accepted = acceptedSockets(cleanup)
    // The admin listeners come first, as `iip-mesh sidecar` starts them (src/cli/sidecar.ts).
    let current: Sidecar | undefined
    const adminScope = await Effect.runPromise(Scope.make())
    cleanup.add(() => Effect.runPromise(Scope.close(adminScope, Exit.void)))
    const admin = await Effect.runPromise(
      Admin.make({ admin: "127.0.0.1:0", control: "127.0.0.1:0", token: undefined }, () => current).pipe(Scope.provide(adminScope))
    )

    const app = await startApp(cleanup, (_req, res) => res.end("legit"))
    const peer = await startSidecar(cleanup, sidecarConfig({ service: "catalog", app: app.address }))
    const events: Array<{ event: string; fields: Record<string, unknown> }> = []
    const selfEndpoints = [`127.0.0.1:${admin.readOnly.port}`, `localhost:${admin.control.port}`]
    const store = await startSidecar(
      cleanup,
      sidecarConfig({ service: "store", endpoints: { catalog: [{ address: peer.inboundAddress, weight: 1 }, ...selfEndpoints.map((address) => ({ address, weight: 10 }))] } }),
      (event, fields) => events.push({ event, fields: { ...fields } }),
      { ownListeners: [admin.readOnly, admin.control] }
    )
    current = store.sidecar
    await waitFor(() => store.sidecar.registry.endpointsOf("catalog").length === 3, 5000, "the three static endpoints")

    const requests = 30
    for (let i = 0; i < requests; i++) {
      const answer = await call(store.outboundPort, { headers: { host: "catalog" }, timeoutMs: 5000 })
      expect(answer.body.toString()).toBe("legit")
    }
    expect(accepted(admin.readOnly.port)).toBe(0)
    expect(accepted(admin.control.port)).toBe(0)
    const metrics = parsePrometheusText((await store.sidecar.telemetry.metrics.text()).body)
    for (const endpoint of selfEndpoints) {
      const refused = sum(metrics, "iip_mesh_dials_refused_total", { service: "catalog", endpoint })
      expect(refused, endpoint).toBeGreaterThan(0)
      expect(events.some((e) => e.event === "endpoints.dial-refused" && e.fields.endpoint === endpoint && e.fields.reason === "own-listener"), endpoint).toBe(true)
    }
  })
})
