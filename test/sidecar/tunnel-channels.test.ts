// WebSockets and the channels of A's connections to one endpoint (src/iip/connectionPool.ts
// streamPlaces): streams get channels past the requests' own, up to half what the far side takes
// per connection, and never the requests' (REQUEST_CHANNELS_PER_CONNECTION). Before, streams filled
// every channel A would open (2 x 512 with the shipped caps): the next upgrade and every ordinary
// request to that endpoint waited for a channel and ended 504 at their deadline. Now an upgrade
// with no stream place left is refused at once, 503 overloaded at the outbound hop, counted with
// the other upgrade refusals, and the endpoint stays healthy. Small channel limits at B so that
// tens of WebSockets reach the bound. Real peers: `ws` as the app's server and as the callers.
import { afterEach, beforeEach, expect, it } from "vitest"
import WebSocket from "ws"
import { REQUEST_CHANNELS_PER_CONNECTION } from "../../src/sidecar/endpoints.ts"
import { Cleanup } from "../support/iipRaw.ts"
import { parsePrometheusText, value } from "../support/prometheusText.ts"
import { call, sidecarConfig, startSidecar } from "../support/sidecarHarness.ts"
import { startHoldingWsApp, upgradeAnswer } from "../support/upgradeAnswer.ts"

/** B's channels per connection: A may open half, 70, of which 64 are the requests': 6 stream places a connection, 12 on A's two. */
const B_CHANNELS = 2 * (REQUEST_CHANNELS_PER_CONNECTION + 6)
const STREAM_PLACES = 2 * 6

let cleanup: Cleanup
beforeEach(() => {
  cleanup = new Cleanup()
})
afterEach(() => cleanup.run())

it("past its stream places to an endpoint, A refuses an upgrade at once (503 overloaded, counted) and an ordinary request to it still gets its answer", async () => {
  const app = await startHoldingWsApp(cleanup)
  const b = await startSidecar(cleanup, sidecarConfig({ service: "catalog", app: app.address, maxChannelsPerConnection: B_CHANNELS }))
  // A short deadline: before the fix the extra upgrade waited for it (504), and the test should not wait 10 s for that.
  const a = await startSidecar(cleanup, sidecarConfig({ service: "store", requestTimeoutMs: 3000, endpoints: { catalog: [{ address: b.inboundAddress, weight: 1 }] } }))
  const upgrade = () => {
    const ws = new WebSocket(`ws://127.0.0.1:${a.outboundPort}/live`, { headers: { host: "catalog" } })
    ws.on("error", () => {})
    cleanup.add(() => ws.terminate())
    return upgradeAnswer(ws)
  }
  // Opened one after another until the first refusal (the old bound was 2 x B_CHANNELS / 2 streams: one more than that is tried).
  let opened = 0
  let refused: Awaited<ReturnType<typeof upgradeAnswer>> | undefined
  let tookMs = 0
  while (refused === undefined && opened <= B_CHANNELS) {
    const started = performance.now()
    const answer = await upgrade()
    tookMs = performance.now() - started
    if ("ws" in answer) opened++
    else refused = answer
  }
  expect(opened).toBe(STREAM_PLACES)
  if (refused === undefined || "ws" in refused) throw new Error("no upgrade was refused")
  expect(refused.status).toBe(503)
  expect(refused.headers["x-iip-mesh-error"]).toBe("outbound; reason=overloaded")
  expect(JSON.parse(refused.body).message).toMatch(/stream/)
  expect(tookMs).toBeLessThan(1000)
  // The requests' channels are theirs: a plain GET to the same service is answered.
  const plain = await call(a.outboundPort, { path: "/items", headers: { host: "catalog" }, timeoutMs: 10_000 })
  expect(plain.status).toBe(200)
  expect(plain.body.toString()).toBe("plain")
  const metrics = parsePrometheusText((await a.sidecar.telemetry.metrics.text()).body)
  expect(value(metrics, "iip_mesh_tunnels_refused_total", { direction: "outbound", limit: "channels" })).toBe(1)
  // No failure counted against B: it is not ejected, and the next upgrade is refused the same way, not 503 no_endpoint.
  const again = await upgrade()
  expect("ws" in again ? 101 : again.headers["x-iip-mesh-error"]).toBe("outbound; reason=overloaded")
}, 60_000)
