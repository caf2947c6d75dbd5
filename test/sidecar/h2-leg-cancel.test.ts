// The h2c leg (src/sidecar/appH2.ts, appH2Exchange.ts) and a cancel that came before the leg took
// the request (the first call waits for node:http2 to load, and its caller may go away meanwhile):
// the request is not sent to the app (no stream opened, then reset) and fails as cancelled. And
// one waiting for a place among the app's streams when the leg closes: it ends `draining`, not
// processed, never sent (before, it was opened on a session made again after the close, and hung).
// And one waiting when the app raises its SETTINGS_MAX_CONCURRENT_STREAMS: it takes a place the
// raise made at once (before, only once a stream closed: behind a stream the app holds, it waited
// out its deadline with places free).
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

/**
 * An h2c app on loopback whose streams `onStream` gets (their paths are kept, in order), announcing
 * `settings`; `acked` counts the SETTINGS its client acknowledged (and so had read).
 */
const startH2App = async (cleanup: Cleanup, onStream: (stream: http2.ServerHttp2Stream) => void, settings: http2.Settings = {}) => {
  const paths: Array<string> = []
  const sessions: Array<http2.ServerHttp2Session> = []
  const acks = { acked: 0 }
  const server = http2.createServer({ settings })
  server.on("session", (session) => {
    sessions.push(session)
    session.on("localSettings", () => acks.acked++)
  })
  server.on("stream", (stream, headers) => {
    stream.on("error", () => {})
    paths.push(String(headers[":path"]))
    onStream(stream)
  })
  await new Promise<void>((resolve) => server.listen(0, LOOPBACK, resolve))
  cleanup.add(() => new Promise<void>((resolve) => server.close(() => resolve())))
  return { port: (server.address() as net.AddressInfo).port, paths, sessions, acks }
}

/** Sends requests through `leg` as the inbound side does: each with `timeLeftMs`, and no cancel but one that came first (`aborted`). */
const senderOn = (cleanup: Cleanup, leg: AppH2Leg, timeLeftMs: number) => {
  const tracing = makeTracing({ service: "catalog", store: new TraceStore(), env: {} })
  cleanup.add(() => tracing.shutdown())
  const telemetry = { tracing, metrics: makeMetrics(), traces: new TraceStore() }
  return (path: string, aborted = false): PendingOutcome => {
    const request: AppH2Request = { method: "GET", path, authority: "catalog", headers: [], body: Buffer.alloc(0), timeLeftMs, maxMetaBytes: 8192, plain: false, trailers: true }
    const pending = new PendingOutcome()
    leg.forward(request, new InboundObservation(telemetry, "catalog", "GET", path, [], "127.0.0.1:40000"), { aborted, addEventListener: () => {}, removeEventListener: () => {} }, pending)
    return pending
  }
}

describe("the h2c leg: a cancel that came first, and requests waiting for a stream", () => {
  let cleanup: Cleanup
  beforeEach(() => {
    cleanup = new Cleanup()
  })
  afterEach(() => cleanup.run())

  it("opens no stream at the app for a request already cancelled; the next request is the app's first stream", async () => {
    const app = await startH2App(cleanup, (stream) => {
      stream.respond({ ":status": 200 })
      stream.end("ok")
    })
    const leg = new AppH2Leg(LOOPBACK, app.port, undefined, 5000, 16)
    cleanup.add(() => leg.close())
    const send = senderOn(cleanup, leg, 5000)
    const cancelled = await withTimeout(Promise.resolve(send("/cancelled", true)), 5000, "the cancelled request's outcome")
    expect((cancelled as Failure).code).toBe(MeshErrorCode.cancelled)
    const answered = await withTimeout(Promise.resolve(send("/next")), 5000, "the next request's answer")
    expect(answered).toMatchObject({ _tag: "Reply" })
    expect(app.paths).toEqual(["/next"])
  })

  it("a request waiting for a stream (the leg's one place taken) ends draining, not processed, when the leg closes, and never reaches the app", async () => {
    // Holds every stream: the first request keeps the leg's one place.
    const app = await startH2App(cleanup, () => {})
    const leg = new AppH2Leg(LOOPBACK, app.port, undefined, 5000, 1)
    const send = senderOn(cleanup, leg, 30_000)
    const first = send("/held")
    const waiting = send("/waiting")
    expect(leg.waitingStreams).toBe(1)
    await waitFor(() => app.paths.length === 1, 5000, "the app to hold the first stream")
    const closed = leg.close()
    const outcome = (await withTimeout(Promise.resolve(waiting), 5000, "the waiting request's outcome")) as Failure
    expect(outcome.code).toBe(MeshErrorCode.draining)
    expect(outcome.processed).toBe(false)
    await withTimeout(closed, 5000, "the leg to close")
    await withTimeout(Promise.resolve(first), 5000, "the held request's outcome")
    expect(app.paths).toEqual(["/held"])
  })

  it("a request waiting behind the app's 1 concurrent stream reaches the app as soon as the app raises its limit, while the first is still held", async () => {
    // Holds every stream; announces 1 concurrent stream, until it raises it below.
    const app = await startH2App(cleanup, () => {}, { maxConcurrentStreams: 1 })
    const leg = new AppH2Leg(LOOPBACK, app.port, undefined, 5000, 16)
    cleanup.add(() => leg.close())
    const send = senderOn(cleanup, leg, 30_000)
    void send("/held")
    // The app holds the first stream, and the leg has read its SETTINGS (1 stream): acknowledged.
    await waitFor(() => app.paths.length === 1 && app.acks.acked === 1, 5000, "the app to hold the first stream, its SETTINGS read")
    void send("/waiting")
    expect(leg.waitingStreams).toBe(1)
    app.sessions[0]!.settings({ maxConcurrentStreams: 8 })
    await waitFor(() => app.paths.length === 2, 5000, "the waiting request to reach the app once its limit is raised")
    expect(app.paths).toEqual(["/held", "/waiting"])
    expect(leg.waitingStreams).toBe(0)
  })
})
