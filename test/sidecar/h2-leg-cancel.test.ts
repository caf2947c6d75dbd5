// The h2c leg (src/sidecar/appH2.ts, appH2Exchange.ts) and a cancel that came before the leg took
// the request (the first call waits for node:http2 to load, and its caller may go away meanwhile):
// the request is not sent to the app (no stream opened, then reset) and fails as cancelled. And
// one waiting for a place among the app's streams when the leg closes: it ends `draining`, not
// processed, never sent (before, it was opened on a session made again after the close, and hung).
import * as http2 from "node:http2"
import type * as net from "node:net"
import { afterEach, beforeEach, describe, expect, it } from "vitest"
import { type Failure, PendingOutcome } from "../../src/mux/request.ts"
import { MeshErrorCode } from "../../src/protocol/mesh.ts"
import { AppH2Leg } from "../../src/sidecar/appH2.ts"
import type { AppH2Request } from "../../src/sidecar/appH2RequestHead.ts"
import { InboundObservation } from "../../src/sidecar/observe.ts"
import { makeMetrics } from "../../src/telemetry/metrics.ts"
import { TraceStore } from "../../src/telemetry/traceStore.ts"
import { makeTracing } from "../../src/telemetry/tracing.ts"
import { Cleanup, waitFor, withTimeout } from "../support/iipRaw.ts"
import { LOOPBACK } from "../support/sidecarHarness.ts"

describe("the h2c leg and a cancel that came first", () => {
  let cleanup: Cleanup
  beforeEach(() => {
    cleanup = new Cleanup()
  })
  afterEach(() => cleanup.run())

  it("opens no stream at the app for a request already cancelled; the next request is the app's first stream", async () => {
    const paths: Array<string> = []
    const app = http2.createServer()
    app.on("stream", (stream, headers) => {
      stream.on("error", () => {})
      paths.push(String(headers[":path"]))
      stream.respond({ ":status": 200 })
      stream.end("ok")
    })
    await new Promise<void>((resolve) => app.listen(0, LOOPBACK, resolve))
    cleanup.add(() => new Promise<void>((resolve) => app.close(() => resolve())))
    const leg = new AppH2Leg(LOOPBACK, (app.address() as net.AddressInfo).port, undefined, 5000, 16)
    cleanup.add(() => leg.close())
    const tracing = makeTracing({ service: "catalog", store: new TraceStore(), env: {} })
    cleanup.add(() => tracing.shutdown())
    const telemetry = { tracing, metrics: makeMetrics(), traces: new TraceStore() }
    const send = (path: string, aborted: boolean): PendingOutcome => {
      const request: AppH2Request = { method: "GET", path, authority: "catalog", headers: [], body: Buffer.alloc(0), timeLeftMs: 5000, maxMetaBytes: 8192, plain: false, trailers: true }
      const pending = new PendingOutcome()
      leg.forward(request, new InboundObservation(telemetry, "catalog", "GET", path, [], "127.0.0.1:40000"), { aborted, addEventListener: () => {} }, pending)
      return pending
    }
    const cancelled = await withTimeout(Promise.resolve(send("/cancelled", true)), 5000, "the cancelled request's outcome")
    expect((cancelled as Failure).code).toBe(MeshErrorCode.cancelled)
    const answered = await withTimeout(Promise.resolve(send("/next", false)), 5000, "the next request's answer")
    expect(answered).toMatchObject({ _tag: "Reply" })
    expect(paths).toEqual(["/next"])
  })

  it("a request waiting for a stream (the leg's one place taken) ends draining, not processed, when the leg closes, and never reaches the app", async () => {
    const paths: Array<string> = []
    const app = http2.createServer()
    // Holds every stream: the first request keeps the leg's one place.
    app.on("stream", (stream, headers) => {
      stream.on("error", () => {})
      paths.push(String(headers[":path"]))
    })
    await new Promise<void>((resolve) => app.listen(0, LOOPBACK, resolve))
    cleanup.add(() => new Promise<void>((resolve) => {
      app.close(() => resolve())
    }))
    const leg = new AppH2Leg(LOOPBACK, (app.address() as net.AddressInfo).port, undefined, 5000, 1)
    const tracing = makeTracing({ service: "catalog", store: new TraceStore(), env: {} })
    cleanup.add(() => tracing.shutdown())
    const telemetry = { tracing, metrics: makeMetrics(), traces: new TraceStore() }
    const send = (path: string): PendingOutcome => {
      const request: AppH2Request = { method: "GET", path, authority: "catalog", headers: [], body: Buffer.alloc(0), timeLeftMs: 30_000, maxMetaBytes: 8192, plain: false, trailers: true }
      const pending = new PendingOutcome()
      leg.forward(request, new InboundObservation(telemetry, "catalog", "GET", path, [], "127.0.0.1:40000"), { aborted: false, addEventListener: () => {} }, pending)
      return pending
    }
    const first = send("/held")
    const waiting = send("/waiting")
    expect(leg.waitingStreams).toBe(1)
    await waitFor(() => paths.length === 1, 5000, "the app to hold the first stream")
    const closed = leg.close()
    const outcome = (await withTimeout(Promise.resolve(waiting), 5000, "the waiting request's outcome")) as Failure
    expect(outcome.code).toBe(MeshErrorCode.draining)
    expect(outcome.processed).toBe(false)
    await withTimeout(closed, 5000, "the leg to close")
    await withTimeout(Promise.resolve(first), 5000, "the held request's outcome")
    expect(paths).toEqual(["/held"])
  })
})
