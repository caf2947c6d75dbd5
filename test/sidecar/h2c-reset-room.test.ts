// B's h2c leg (appH2.ts) asks whether its current session has a reset to spare (resetRoom: a clock
// read and its bucket's refill) once per call, not once for the refusal, once for the place and once
// for the session its stream opens on: nothing can change the answer between the three (measured
// before: 14 for these 5 calls, 3 a call once a session is up). Real calls: an HTTP/1.1 client ->
// sidecar A -> sidecar B -> a node:http2 app.
import * as http2 from "node:http2"
import { afterEach, beforeEach, expect, it, vi } from "vitest"
import { AppH2Leg } from "../../src/sidecar/appH2.ts"
import { listenH2App } from "../support/h2AppListen.ts"
import { Cleanup } from "../support/iipRaw.ts"
import { call, LOOPBACK, type RunningSidecar, sidecarConfig, startSidecar } from "../support/sidecarHarness.ts"

let cleanup: Cleanup
let a: RunningSidecar
beforeEach(async () => {
  cleanup = new Cleanup()
  const server = http2.createServer()
  server.on("stream", (stream) => {
    stream.on("error", () => {})
    stream.respond({ ":status": 200 })
    stream.end("ok")
  })
  const { port } = await listenH2App(cleanup, server)
  const b = await startSidecar(cleanup, sidecarConfig({ service: "catalog", app: `${LOOPBACK}:${port}`, appProtocol: "h2c", tracing: false }))
  a = await startSidecar(cleanup, sidecarConfig({ service: "store", tracing: false, endpoints: { catalog: [{ address: b.inboundAddress, weight: 1 }] } }))
})
afterEach(async () => {
  vi.restoreAllMocks()
  await cleanup.run()
})

it("resetRoom is asked once per call to an h2c app (the first, which makes the session, and those after it)", async () => {
  const asked = vi.spyOn(AppH2Leg.prototype, "resetRoom")
  for (let i = 0; i < 5; i++) {
    const answer = await call(a.outboundPort, { path: `/r${i}`, headers: { host: "catalog" } })
    expect(answer.status).toBe(200)
    expect(answer.body.toString()).toBe("ok")
  }
  expect(asked).toHaveBeenCalledTimes(5)
})
