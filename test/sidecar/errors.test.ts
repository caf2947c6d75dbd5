// Why a proxied request failed, as the calling app sees it (PROTOCOL.md §17.3 as proxyError.ts
// implements it): the callee's app down is 502 app_unavailable from the app hop; no endpoint for
// the service is 503 with retry-after; a passed deadline is 504 within the deadline (never a hang)
// and the callee app's request is aborted; a peer sidecar that is down is 502 connect_failed at
// once (and, when the service has a healthy endpoint too, the request goes there instead). Each
// error carries its hop and reason in a JSON body and in `x-iip-mesh-error`.
import type * as http from "node:http"
import * as net from "node:net"
import { afterEach, describe, expect, it } from "vitest"
import { Cleanup, deferred, withTimeout } from "../support/iipRaw.ts"
import { call, echoRequest, sidecarConfig, startApp, startMesh, startSidecar } from "../support/sidecarHarness.ts"

/** A port on 127.0.0.1 that was free a moment ago and has nothing listening now. */
const closedPort = async (): Promise<number> => {
  const server = net.createServer()
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve))
  const port = (server.address() as net.AddressInfo).port
  await new Promise<void>((resolve) => server.close(() => resolve()))
  return port
}

interface ErrorBody {
  readonly error: string
  readonly hop: string
  readonly message: string
}

const errorBody = (body: Buffer): ErrorBody => JSON.parse(body.toString()) as ErrorBody

describe("sidecar error answers", () => {
  let cleanup = new Cleanup()
  afterEach(async () => {
    await cleanup.run()
    cleanup = new Cleanup()
  })

  it("the callee's app down: 502 app_unavailable from hop app, with x-iip-mesh-error", async () => {
    const appPort = await closedPort()
    const b = await startSidecar(cleanup, sidecarConfig({ service: "catalog", app: `127.0.0.1:${appPort}` }))
    const a = await startSidecar(cleanup, sidecarConfig({ service: "store", endpoints: { catalog: [{ address: b.inboundAddress, weight: 1 }] } }))
    const answer = await call(a.outboundPort, { path: "/items" })
    expect(answer.status).toBe(502)
    expect(answer.headers["content-type"]).toBe("application/json")
    expect(answer.headers["x-iip-mesh-error"]).toBe("app; reason=app_unavailable")
    const body = errorBody(answer.body)
    expect(body).toMatchObject({ error: "app_unavailable", hop: "app" })
    expect(body.message).toContain(`127.0.0.1:${appPort}`)
  })

  it("an app that went away after working: 502 app_unavailable, and 200 again once it is back", async () => {
    const app = await startApp(cleanup, echoRequest)
    const b = await startSidecar(cleanup, sidecarConfig({ service: "catalog", app: app.address }))
    const a = await startSidecar(cleanup, sidecarConfig({ service: "store", endpoints: { catalog: [{ address: b.inboundAddress, weight: 1 }] } }))
    expect((await call(a.outboundPort, { path: "/up" })).status).toBe(200)
    await app.close()
    const down = await call(a.outboundPort, { path: "/down" })
    expect(down.status).toBe(502)
    expect(errorBody(down.body)).toMatchObject({ error: "app_unavailable", hop: "app" })
    await startApp(cleanup, echoRequest, app.port)
    expect((await call(a.outboundPort, { path: "/again" })).status).toBe(200)
  })

  it("no endpoint for the service: 503 with retry-after, from hop outbound", async () => {
    const a = await startSidecar(cleanup, sidecarConfig({ service: "store" }))
    const answer = await call(a.outboundPort, { path: "/x", headers: { host: "unknown-service" } })
    expect(answer.status).toBe(503)
    expect(answer.headers["retry-after"]).toBe("1")
    expect(answer.headers["x-iip-mesh-error"]).toBe("outbound; reason=no_endpoint")
    const body = errorBody(answer.body)
    expect(body).toMatchObject({ error: "no_endpoint", hop: "outbound" })
    expect(body.message).toContain("unknown-service")
  })

  it("deadline passed (requestTimeoutMs 200, app never answers): 504 within ~1 s, and the app's request is aborted", async () => {
    const appClosed = deferred<number>()
    const appGot = deferred()
    const { a } = await startMesh(
      cleanup,
      (req: http.IncomingMessage, res: http.ServerResponse) => {
        appGot.resolve()
        // Never answers; reports when its request goes away.
        res.once("close", () => appClosed.resolve(performance.now()))
        req.resume()
      },
      { a: { requestTimeoutMs: 200 } }
    )
    const started = performance.now()
    const answer = await call(a.outboundPort, { path: "/slow", timeoutMs: 5000 })
    const elapsed = performance.now() - started
    expect(answer.status).toBe(504)
    expect(answer.headers["x-iip-mesh-error"]).toMatch(/^(outbound|inbound); reason=deadline$/)
    expect(errorBody(answer.body).error).toBe("deadline")
    expect(elapsed).toBeGreaterThanOrEqual(190)
    expect(elapsed).toBeLessThan(1000)
    await withTimeout(appGot.promise, 1000, "the app to have received the request")
    const closedAt = await withTimeout(appClosed.promise, 2000, "the app's request to be aborted ('close')")
    expect(closedAt - started).toBeLessThan(2000)
  })

  it("the peer sidecar down (endpoint on a closed port): 502 connect_failed at once, not a hang, every time", async () => {
    const port = await closedPort()
    const a = await startSidecar(
      cleanup,
      sidecarConfig({ service: "store", requestTimeoutMs: 10_000, endpoints: { catalog: [{ address: `127.0.0.1:${port}`, weight: 1 }] } })
    )
    for (let i = 0; i < 3; i++) {
      const started = performance.now()
      const answer = await call(a.outboundPort, { path: "/x", timeoutMs: 5000 })
      const elapsed = performance.now() - started
      expect(answer.status).toBe(502)
      expect(answer.headers["x-iip-mesh-error"]).toBe("outbound; reason=connect_failed")
      const body = errorBody(answer.body)
      expect(body).toMatchObject({ error: "connect_failed", hop: "outbound" })
      expect(body.message).toContain(`127.0.0.1:${port}`)
      // Far below the 10 s request timeout: a refused connection fails the request at once.
      expect(elapsed).toBeLessThan(1000)
    }
  })

  it("a refused endpoint next to a healthy one costs no failed request: each goes to the healthy one at once", async () => {
    const port = await closedPort()
    const app = await startApp(cleanup, echoRequest)
    const b = await startSidecar(cleanup, sidecarConfig({ service: "catalog", app: app.address }))
    const a = await startSidecar(
      cleanup,
      sidecarConfig({
        service: "store",
        requestTimeoutMs: 10_000,
        endpoints: { catalog: [{ address: `127.0.0.1:${port}`, weight: 1 }, { address: b.inboundAddress, weight: 1 }] }
      })
    )
    const started = performance.now()
    const statuses = []
    for (let i = 0; i < 20; i++) statuses.push((await call(a.outboundPort, { path: `/r${i}`, timeoutMs: 5000 })).status)
    expect(statuses).toStrictEqual(Array.from({ length: 20 }, () => 200))
    expect(app.seen).toHaveLength(20)
    expect(performance.now() - started).toBeLessThan(2000)
  })
})
