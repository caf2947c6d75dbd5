// No caller holds the inbound side's app sockets for ever (issue 13, point 6): streamed bodies that
// never end, requests without a deadline to an app that never answers (or never ends an answer it
// began: the caller gets the deadline's typed error, saying the answer streamed), and pushes whose
// answer nobody reads. The pool is made small (app pool size 2) and the limits short (a few hundred ms)
// so the test is fast; each case first fills the pool, then shows that a legitimate request is
// answered, that the held requests end with a typed error and their app requests are destroyed,
// and that the in-flight gauge comes back to 0. And a burst's sockets do not stay open idle once the
// memory release closes them (closeIdleAppSockets).
import type * as http from "node:http"
import { afterEach, describe, expect, it } from "vitest"
import type { SidecarConfig } from "../../src/config/sidecarConfig.ts"
import type { IipClient } from "../../src/iip/client.ts"
import { RemoteError } from "../../src/mux/meshSession.ts"
import { Cleanup, deferred, waitFor, withTimeout } from "../support/iipRaw.ts"
import { settle, startClient, streamEndError } from "../support/meshTest.ts"
import { type App, type RunningSidecar, sidecarConfig, startApp, startSidecar } from "../support/sidecarHarness.ts"

const meta = (method: string) =>
  new Map([
    [":method", method],
    [":authority", "catalog"],
    ["http-headers", "[]"]
  ])

/** The app: `/hang` never answers, `/drip` begins a chunked answer and never ends it, `/stream` answers with a chunked body, anything else reads the body and answers "ok". */
const handler = (closedEarly: { count: number }): http.RequestListener => (req, res) => {
  res.once("close", () => {
    if (!res.writableFinished) closedEarly.count++
  })
  if (req.url === "/hang") return void req.resume()
  if (req.url === "/drip") {
    req.resume()
    res.writeHead(200, { "content-type": "text/plain" })
    return void res.write("x".repeat(1024))
  }
  req.resume()
  req.once("end", () => {
    if (req.url === "/stream") {
      res.writeHead(200, { "content-type": "text/plain" })
      res.end("x".repeat(1024))
    } else {
      res.writeHead(200, { "content-length": 2 })
      res.end("ok")
    }
  })
}

const inFlight = (b: RunningSidecar) => b.sidecar.telemetry.metrics.summary().inbound.find((s) => s.service === "catalog")?.inFlight ?? 0

describe("the inbound side's app pool cannot be starved", () => {
  let cleanup = new Cleanup()
  afterEach(async () => {
    await cleanup.run()
    cleanup = new Cleanup()
  })

  const setUp = async (settings: Partial<SidecarConfig>) => {
    const closedEarly = { count: 0 }
    const app: App = await startApp(cleanup, handler(closedEarly))
    const b = await startSidecar(cleanup, sidecarConfig({ service: "catalog", app: app.address, tracing: false, ...settings }))
    const client: IipClient = startClient(cleanup, b.sidecar.inbound.port, { idleChannelsAhead: 4 })
    return { app, b, client, closedEarly }
  }

  it("streamed bodies that never end are given up after the body idle timeout; the pool serves again", async () => {
    const { app, b, client, closedEarly } = await setUp({ appPoolSize: 2, bodyIdleTimeoutMs: 300, inboundDefaultTimeoutMs: 600_000 })
    const never = deferred()
    cleanup.add(() => never.resolve())
    async function* stuck() {
      yield Buffer.from("first bytes, then nothing")
      await never.promise
    }
    // No deadline (timeoutMs 0): only the inbound side's own limits can end these.
    const held = Array.from({ length: 4 }, () => settle(client.stream("/upload", stuck(), { meta: meta("POST") })))
    await waitFor(() => app.seen.length >= 2, 5000, "the app pool filled by bodies that never end")
    const legit = await withTimeout(client.call("/legit", "", { meta: meta("GET"), timeoutMs: 5000 }), 6000, "the legitimate request")
    expect(legit.toString()).toBe("ok")
    const outcomes = await withTimeout(Promise.all(held), 5000, "the held requests to end")
    for (const outcome of outcomes) {
      expect(outcome.ok).toBe(false)
      expect((outcome as { error: unknown }).error).toBeInstanceOf(RemoteError)
      expect(((outcome as { error: RemoteError }).error).code).toBe("body_idle_timeout")
    }
    // Every upload that reached the app was cut off there (those still queued for a socket never did).
    const uploads = app.seen.filter((s) => s.url === "/upload").length
    expect(uploads).toBeGreaterThanOrEqual(2)
    await waitFor(() => closedEarly.count === uploads, 5000, "the app requests destroyed")
    await waitFor(() => inFlight(b) === 0, 5000, "the in-flight gauge back to 0")
  })

  it("requests without a deadline to an app that never answers end at the default deadline", async () => {
    const { app, b, client, closedEarly } = await setUp({ appPoolSize: 2, inboundDefaultTimeoutMs: 300 })
    const plain = startClient(cleanup, b.sidecar.inbound.port, { mesh: false })
    const held = [
      // timeoutMs 0: no deadline on the wire (and none at all in plain mode).
      settle(client.call("/hang", "", { meta: meta("GET"), timeoutMs: 0 })),
      settle(client.call("/hang", "", { meta: meta("GET"), timeoutMs: 0 })),
      settle(plain.call("/hang", "{}", { timeoutMs: 0 }))
    ]
    await waitFor(() => app.seen.length >= 2, 5000, "the app pool filled by requests nobody answers")
    const legit = await withTimeout(client.call("/legit", "", { meta: meta("GET"), timeoutMs: 5000 }), 6000, "the legitimate request")
    expect(legit.toString()).toBe("ok")
    const [first, second] = await withTimeout(Promise.all(held), 5000, "the held requests to end")
    for (const outcome of [first!, second!]) {
      expect(outcome.ok).toBe(false)
      expect(((outcome as { error: RemoteError }).error).code).toBe("deadline_exceeded")
    }
    await waitFor(() => closedEarly.count === app.seen.filter((s) => s.url === "/hang").length, 5000, "the app requests destroyed")
    await waitFor(() => inFlight(b) === 0, 5000, "the in-flight gauge back to 0")
  })

  it("a request without a deadline whose answer streams and never ends gets deadline_exceeded at the default deadline, saying the answer streamed", async () => {
    const { app, b, client, closedEarly } = await setUp({ appPoolSize: 2, inboundDefaultTimeoutMs: 500 })
    // No deadline on the wire (timeoutMs 0): B's default bounds it. The reply comes as the answer
    // starts streaming, so B had the head (the stream) before its deadline passed.
    const reply = await withTimeout(client.stream("/drip", new Uint8Array(0), { meta: meta("GET"), timeoutMs: 0 }), 5000, "the streamed answer's start")
    const error = await streamEndError(reply.stream!, 5000)
    expect(error).toBeInstanceOf(RemoteError)
    expect((error as RemoteError).code).toBe("deadline_exceeded")
    expect((error as RemoteError).message).toBe("the call's deadline of 500 ms passed while the app's answer streamed")
    await waitFor(() => closedEarly.count === app.seen.filter((s) => s.url === "/drip").length, 5000, "the app request destroyed")
    await waitFor(() => inFlight(b) === 0, 5000, "the in-flight gauge back to 0")
  })

  it("requests whose own deadline passes (the session aborts them) free their app socket; their spans and the in-flight gauge end", async () => {
    const { app, b, client, closedEarly } = await setUp({ appPoolSize: 2, inboundDefaultTimeoutMs: 600_000, tracing: true })
    // Connections warm first, so the held requests' deadline is spent at the app, not on set-up
    // (under a loaded suite a cold first request could miss a short deadline before the app saw it).
    expect((await client.call("/legit", "", { meta: meta("GET"), timeoutMs: 5000 })).toString()).toBe("ok")
    const tracesBefore = b.sidecar.telemetry.traces.recent(10).length
    const held = [
      settle(client.call("/hang", "", { meta: meta("GET"), timeoutMs: 1500 })),
      settle(client.call("/hang", "", { meta: meta("GET"), timeoutMs: 1500 }))
    ]
    await waitFor(() => app.seen.length >= 2, 5000, "the app pool filled by requests nobody answers")
    // The caller gives up at the same deadline (its own timer or the session's answer, whichever is first).
    for (const outcome of await withTimeout(Promise.all(held), 5000, "the held requests to end")) expect(outcome.ok).toBe(false)
    await waitFor(() => closedEarly.count === 2, 5000, "the app requests destroyed")
    await waitFor(() => inFlight(b) === 0, 5000, "the in-flight gauge back to 0")
    // Both spans of each request ended, marked as cancelled at the inbound hop.
    // Newest first: the two held requests, after the warm-up's trace.
    expect(b.sidecar.telemetry.traces.recent(10).length).toBe(tracesBefore + 2)
    const traces = b.sidecar.telemetry.traces.recent(2)
    for (const trace of traces) {
      const spans = b.sidecar.telemetry.traces.get(trace.traceId)!
      expect(spans.map((span) => [span.kind, span.attributes["error.type"], span.attributes["iip_mesh.error.hop"]])).toStrictEqual([
        ["server", "cancelled", "inbound"],
        ["client", "cancelled", "inbound"]
      ])
    }
    expect((await client.call("/legit", "", { meta: meta("GET"), timeoutMs: 5000 })).toString()).toBe("ok")
  })

  it("pushes whose streamed answer nobody reads give their socket back; the in-flight gauge returns to 0", async () => {
    const { app, b, client } = await setUp({ appPoolSize: 2 })
    expect((await client.call("/legit", "", { meta: meta("GET"), timeoutMs: 5000 })).toString()).toBe("ok")
    for (let i = 0; i < 6; i++) client.push("/stream", new Uint8Array(0), meta("GET"))
    await waitFor(() => app.seen.filter((s) => s.url === "/stream").length === 6, 5000, "every push to reach the app")
    await waitFor(() => inFlight(b) === 0, 5000, "the in-flight gauge back to 0")
    expect((await client.call("/legit", "", { meta: meta("GET"), timeoutMs: 5000 })).toString()).toBe("ok")
  })

  it("closeIdleAppSockets (the memory release's, once quiet) leaves the app one socket, which the next request takes", async () => {
    // Six requests held at the app until all six are there: six sockets, idle after (node's app announces 5 s).
    const gate = deferred()
    const app: App = await startApp(cleanup, (req, res) => {
      req.resume()
      const answer = () => res.writeHead(200, { "content-length": 2 }).end("ok")
      if (req.url === "/burst") void gate.promise.then(answer)
      else answer()
    })
    let opened = 0
    let live = 0
    app.server.on("connection", (socket) => {
      opened++
      live++
      socket.on("close", () => live--)
    })
    const b = await startSidecar(cleanup, sidecarConfig({ service: "catalog", app: app.address, tracing: false, appPoolSize: 8 }))
    const client: IipClient = startClient(cleanup, b.sidecar.inbound.port, { idleChannelsAhead: 8 })
    const burst = Array.from({ length: 6 }, () => client.call("/burst", "", { meta: meta("GET"), timeoutMs: 5000 }))
    await waitFor(() => app.seen.length === 6, 5000, "the burst at the app")
    gate.resolve()
    for (const answer of await withTimeout(Promise.all(burst), 5000, "the burst's answers")) expect(answer.toString()).toBe("ok")
    expect(live).toBe(6)
    expect(b.sidecar.closeIdleAppSockets()).toBe(5)
    await waitFor(() => live === 1, 5000, "the app's connections down to one")
    expect((await withTimeout(client.call("/after", "", { meta: meta("GET"), timeoutMs: 5000 }), 6000, "a request after")).toString()).toBe("ok")
    expect(opened).toBe(6)
  })
})
