// A head past the h2c app's SETTINGS_MAX_HEADER_LIST_SIZE (B answers 431 headers_too_large, not
// processed) is not retried on another endpoint (outboundRetry.ts): every instance would refuse it
// alike. An idempotent GET, two endpoints, each B in front of a node:http2 app announcing 2,000:
// one try, A's span says so. Real parts: an HTTP/1.1 caller -> A -> two Bs -> node:http2 apps.
import * as http2 from "node:http2"
import { afterAll, expect, it } from "vitest"
import { listenH2App } from "../support/h2AppListen.ts"
import { Cleanup, untilTurn } from "../support/iipRaw.ts"
import { call, sidecarConfig, startSidecar } from "../support/sidecarHarness.ts"

const LIMIT = 2000
const cleanup = new Cleanup()
afterAll(() => cleanup.run())

it("a GET past the app's header list limit: 431 after one try, not retried on the other endpoint", async () => {
  const read = [0, 0]
  const bs = await Promise.all(
    [0, 1].map(async (i) => {
      const server = http2.createServer({ settings: { maxHeaderListSize: LIMIT } })
      server.on("stream", (stream) => {
        stream.on("error", () => {})
        read[i]!++
        stream.respond({ ":status": 200 })
        stream.end("ok")
      })
      const app = await listenH2App(cleanup, server)
      return startSidecar(cleanup, sidecarConfig({ service: "catalog", app: `127.0.0.1:${app.port}`, appProtocol: "h2c" }))
    })
  )
  const a = await startSidecar(cleanup, sidecarConfig({ service: "store", endpoints: { catalog: bs.map((b) => ({ address: b.inboundAddress, weight: 1 })) } }))
  // Each B's session to its app has read the app's SETTINGS (the first stream goes before them, unlimited).
  for (let i = 0; i < 50 && (read[0] === 0 || read[1] === 0); i++) expect((await call(a.outboundPort)).status).toBe(200)
  expect(read.every((n) => n > 0)).toBe(true)
  const before = [...read]
  const traces = a.sidecar.telemetry.traces
  const spans = () => traces.recent(100).flatMap((trace) => traces.get(trace.traceId) ?? []).filter((span) => span.kind === "client" && span.attributes["http.response.status_code"] === 431)
  const answer = await call(a.outboundPort, { headers: { host: "catalog", "x-pad": "p".repeat(LIMIT) } })
  await untilTurn(() => spans().length === 1, "A's span of the 431")
  expect({ status: answer.status, attempts: spans()[0]!.attributes["iip_mesh.attempts"], read: read.map((n, i) => n - before[i]!) }).toStrictEqual({ status: 431, attempts: 1, read: [0, 0] })
})
