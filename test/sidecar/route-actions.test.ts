// Route actions through real sidecars and real HTTP apps (src/sidecar/routeActions.ts, applied in
// outbound.ts, mirror.ts): a route's own timeout and retry settings over the sidecar's, its request
// header modifiers, fault injection (aborts counted exactly and in the metrics, delays timed
// loosely on a warmed path, a delay the app gives up on ends at once), and a mirror whose answers
// never reach the caller — the caller's sidecar routes `pricing` by its file.
import { mkdtempSync, rmSync, writeFileSync } from "node:fs"
import * as http from "node:http"
import * as net from "node:net"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { afterEach, beforeEach, describe, expect, it } from "vitest"
import type { SidecarConfig } from "../../src/config/sidecarConfig.ts"
import { Cleanup, waitFor } from "../support/iipRaw.ts"
import { call, type RunningSidecar, sidecarConfig, startApp, startSidecar } from "../support/sidecarHarness.ts"

let cleanup: Cleanup
let dir: string
beforeEach(() => {
  cleanup = new Cleanup()
  dir = mkdtempSync(join(tmpdir(), "iip-mesh-route-actions-"))
})
afterEach(async () => {
  await cleanup.run()
  rmSync(dir, { recursive: true, force: true })
})

/** An app of `pricing` (subset v1) and the sidecar in front of it. */
const pricing = async (handler: http.RequestListener) => {
  const app = await startApp(cleanup, handler)
  const sidecar = await startSidecar(cleanup, sidecarConfig({ service: "pricing", app: app.address, node: `pricing-${app.port}` }))
  return { app, endpoint: { address: sidecar.inboundAddress, weight: 1, version: "v1" } }
}

/** The caller's sidecar, with these routes in a file. */
const caller = async (routes: ReadonlyArray<unknown>, endpoints: ReadonlyArray<{ address: string; weight: number; version: string }>, config: Partial<SidecarConfig> = {}) => {
  const path = join(dir, "routes.json")
  writeFileSync(path, JSON.stringify({ routes }))
  return startSidecar(cleanup, sidecarConfig({ service: "store", routes: path, routesPollMs: 60_000, endpoints: { pricing: [...endpoints] }, ...config }))
}

const metric = async (sidecar: RunningSidecar, pattern: RegExp): Promise<number> => {
  const { body } = await sidecar.sidecar.telemetry.metrics.text()
  const line = body.split("\n").find((l) => pattern.test(l))
  return line === undefined ? 0 : Number(line.slice(line.lastIndexOf(" ") + 1))
}

/** An app that never answers /hang (cleanup closes its connections) and answers anything else. */
const hanging: http.RequestListener = (req, res) => {
  if (req.url !== "/hang") res.end("ok")
}

describe("route timeout and retries", () => {
  it("a route's timeout overrides the sidecar's: 504 deadline well before the sidecar's 15 s; other paths keep the default", async () => {
    const p = await pricing(hanging)
    const running = await caller([
      { name: "quick", service: "pricing", matches: [{ path: { exact: "/hang" } }], split: [{ subset: "v1", weight: 1 }], timeoutMs: 200 }
    ], [p.endpoint])
    const started = performance.now()
    const answer = await call(running.outboundPort, { path: "/hang", headers: { host: "pricing" } })
    const elapsed = performance.now() - started
    expect(answer.status, String(answer.headers["x-iip-mesh-error"])).toBe(504)
    expect(answer.headers["x-iip-mesh-error"]).toMatch(/reason=deadline/)
    expect(elapsed).toBeGreaterThanOrEqual(190)
    expect(elapsed).toBeLessThan(5000)
    expect((await call(running.outboundPort, { path: "/", headers: { host: "pricing" } })).status).toBe(200)
  })

  it("a deadline that passes while the endpoint's connection is still being made answers 504 deadline, not 502", async () => {
    // An endpoint that takes the TCP connection and never says a word: the mesh connection is never
    // up. At load 15 a real sidecar's connection took longer than this route's 200 ms too.
    const silent = net.createServer((socket) => cleanup.add(() => socket.destroy()))
    await new Promise<void>((resolve) => silent.listen(0, "127.0.0.1", resolve))
    cleanup.add(() => new Promise<void>((resolve) => silent.close(() => resolve())))
    const { port } = silent.address() as net.AddressInfo
    const running = await caller([
      { name: "quick", service: "pricing", split: [{ subset: "v1", weight: 1 }], timeoutMs: 200 }
    ], [{ address: `127.0.0.1:${port}`, weight: 1, version: "v1" }])
    const answer = await call(running.outboundPort, { path: "/", headers: { host: "pricing" } })
    expect(answer.status, String(answer.headers["x-iip-mesh-error"])).toBe(504)
    expect(answer.headers["x-iip-mesh-error"]).toMatch(/reason=deadline/)
  })

  it("a route's retries: attempts 1 tries one endpoint where the default tries both; its per-try timeout moves on to the next", async () => {
    // Each app drops the connection of /drop: a transport failure an idempotent GET is retried after.
    const drop: http.RequestListener = (req, res) => {
      if (req.url === "/drop") req.socket.destroy()
      else hanging(req, res)
    }
    const a = await pricing(drop)
    const b = await pricing(drop)
    const running = await caller([
      { name: "once", service: "pricing", matches: [{ path: { exact: "/drop" }, headers: { "x-once": "1" } }], split: [{ subset: "v1", weight: 1 }], retries: { attempts: 1 } },
      { name: "per-try", service: "pricing", matches: [{ path: { exact: "/hang" } }], split: [{ subset: "v1", weight: 1 }], timeoutMs: 10_000, retries: { attempts: 2, perTryTimeoutMs: 150 } }
    ], [a.endpoint, b.endpoint])
    const seen = () => a.app.seen.length + b.app.seen.length

    expect((await call(running.outboundPort, { path: "/drop", headers: { host: "pricing" } })).status).toBe(502)
    expect(seen()).toBe(2)
    expect((await call(running.outboundPort, { path: "/drop", headers: { host: "pricing", "x-once": "1" } })).status).toBe(502)
    expect(seen()).toBe(3)

    const started = performance.now()
    const answer = await call(running.outboundPort, { path: "/hang", headers: { host: "pricing" } })
    expect(answer.status).toBe(504)
    expect(performance.now() - started).toBeLessThan(5000)
    expect(a.app.seen.filter((r) => r.url === "/hang")).toHaveLength(1)
    expect(b.app.seen.filter((r) => r.url === "/hang")).toHaveLength(1)
  })
})

describe("route header modifiers", () => {
  it("set replaces every value, add appends, remove drops; other routes' requests are untouched", async () => {
    const p = await pricing((_req, res) => res.end("ok"))
    const running = await caller([
      {
        name: "tagged",
        service: "pricing",
        matches: [{ path: { prefix: "/tagged" } }],
        split: [{ subset: "v1", weight: 1 }],
        requestHeaders: { set: { "X-Env": "canary" }, add: { "x-tag": "route" }, remove: ["x-debug"] }
      }
    ], [p.endpoint])
    const headers = { host: "pricing", "x-env": "prod", "x-tag": "app", "x-debug": "1" }
    expect((await call(running.outboundPort, { path: "/tagged", headers })).status).toBe(200)
    expect((await call(running.outboundPort, { path: "/plain", headers })).status).toBe(200)
    const [tagged, plain] = p.app.seen
    expect(tagged!.headers["x-env"]).toBe("canary")
    expect(tagged!.headers["x-tag"]).toBe("app, route")
    expect(tagged!.headers["x-debug"]).toBeUndefined()
    expect(plain!.headers["x-env"]).toBe("prod")
    expect(plain!.headers["x-tag"]).toBe("app")
    expect(plain!.headers["x-debug"]).toBe("1")
  })
})

describe("route fault injection", () => {
  it("abort 10 %: exactly 10 of 100 requests answer 503 fault_injected (counted in the metrics), 90 reach the app", async () => {
    const p = await pricing((_req, res) => res.end("ok"))
    const running = await caller([
      { name: "chaos", service: "pricing", split: [{ subset: "v1", weight: 1 }], fault: { abort: { status: 503, percent: 10 } } }
    ], [p.endpoint])
    const agent = new http.Agent({ keepAlive: true, maxSockets: 4 })
    cleanup.add(() => agent.destroy())
    const statuses = new Map<number, number>()
    let errorHeader: unknown
    await Promise.all(Array.from({ length: 4 }, async (_, worker) => {
      for (let i = worker; i < 100; i += 4) {
        const answer = await call(running.outboundPort, { headers: { host: "pricing" }, agent })
        statuses.set(answer.status, (statuses.get(answer.status) ?? 0) + 1)
        if (answer.status === 503) errorHeader = answer.headers["x-iip-mesh-error"]
      }
    }))
    expect(statuses.get(503)).toBe(10)
    expect(statuses.get(200)).toBe(90)
    expect(p.app.seen).toHaveLength(90)
    expect(errorHeader).toBe("outbound; reason=fault_injected")
    expect(await metric(running, /^iip_mesh_request_errors_total\{direction="outbound",service="pricing",code="503",hop="outbound",reason="fault_injected"\}/)).toBe(10)
  })

  it("delay 1 s for 50 %: exactly half the requests take at least the delay (and less than twice it), the others do not wait", async () => {
    const p = await pricing((_req, res) => res.end("ok"))
    const delayMs = 1000
    const running = await caller([
      { name: "warm", service: "pricing", matches: [{ path: { exact: "/warm" } }], split: [{ subset: "v1", weight: 1 }] },
      { name: "slow", service: "pricing", split: [{ subset: "v1", weight: 1 }], fault: { delay: { ms: delayMs, percent: 50 } } }
    ], [p.endpoint])
    const tenAtOnce = (path: string) =>
      Promise.all(Array.from({ length: 10 }, async () => {
        const started = performance.now()
        expect((await call(running.outboundPort, { path, headers: { host: "pricing" } })).status).toBe(200)
        return performance.now() - started
      }))
    // The path warmed first (connections open, code compiled) by a route with no fault: cold, on a
    // loaded machine, calls that were not delayed took 700-1200 ms and were counted as delayed.
    await tenAtOnce("/warm")
    // Ten at once: the split is counted, not drawn, so half of them are delayed in any order, and
    // the delayed ones wait out their timers together instead of 5 x 1 s in turn.
    const elapsed = await tenAtOnce("/")
    // A timer may fire up to a millisecond before its time by performance.now(): a small margin, far from the others.
    const delayed = elapsed.filter((ms) => ms >= delayMs - 5)
    expect(delayed).toHaveLength(5)
    // Once, not twice (say, again for its try); a timer, not a busy wait. The rest of a delay is
    // slack for a shared, loaded machine.
    for (const ms of delayed) expect(ms).toBeLessThan(2 * delayMs)
  })

  it("a delay longer than the route's deadline answers 504 deadline at the deadline; the request never reaches the app", async () => {
    const p = await pricing((_req, res) => res.end("ok"))
    const running = await caller([
      { name: "late", service: "pricing", split: [{ subset: "v1", weight: 1 }], timeoutMs: 200, fault: { delay: { ms: 60_000, percent: 100 } } }
    ], [p.endpoint])
    const started = performance.now()
    const answer = await call(running.outboundPort, { headers: { host: "pricing" } })
    const elapsed = performance.now() - started
    expect(answer.status).toBe(504)
    expect(answer.headers["x-iip-mesh-error"]).toBe("outbound; reason=deadline")
    expect(elapsed).toBeGreaterThanOrEqual(190)
    expect(elapsed).toBeLessThan(5000)
    expect(p.app.seen).toHaveLength(0)
  })

  it("a delay the app gives up on ends at once: its timer is cleared, the request never reaches the app", async () => {
    const p = await pricing((_req, res) => res.end("ok"))
    const running = await caller([
      { name: "stall", service: "pricing", split: [{ subset: "v1", weight: 1 }], fault: { delay: { ms: 60_000, percent: 100 } } }
    ], [p.endpoint])
    const req = http.request({ port: running.outboundPort, host: "127.0.0.1", path: "/", headers: { host: "pricing" } })
    req.on("error", () => {})
    req.end()
    await waitFor(() => running.sidecar.inFlight() === 1, 5000, "the request held by the delay")
    req.destroy()
    await waitFor(() => running.sidecar.inFlight() === 0, 5000, "the held request to end when its app went away")
    expect(p.app.seen).toHaveLength(0)
    expect(await metric(running, /^iip_mesh_request_errors_total\{direction="outbound",service="pricing",code="502",hop="outbound",reason="cancelled"\}/)).toBe(1)
  })
})

describe("route mirror", () => {
  it("a mirror gets a copy (method, path, body, headers) while the caller's answer is the primary's; bounded in flight, skipped past the bound; a subset with no endpoint changes nothing", async () => {
    const v1 = await pricing((req, res) => {
      req.resume()
      req.on("end", () => res.end("primary"))
    })
    // The mirror's app answers 500 to /fail and never answers /hang: neither reaches the caller.
    const mirrored: Array<{ url: string; body: string }> = []
    const mirrorApp = await startApp(cleanup, (req, res) => {
      const parts: Array<Buffer> = []
      req.on("data", (chunk: Buffer) => parts.push(chunk))
      req.on("end", () => {
        mirrored.push({ url: req.url ?? "", body: Buffer.concat(parts).toString("utf8") })
        if (req.url === "/direct") res.end("direct")
        else if (req.url !== "/hang") {
          res.statusCode = 500
          res.end("mirror failed")
        }
      })
    })
    const v2Sidecar = await startSidecar(cleanup, sidecarConfig({ service: "pricing", app: mirrorApp.address, node: "pricing-v2" }))
    const running = await caller([
      { name: "direct", service: "pricing", matches: [{ path: { exact: "/direct" } }], split: [{ subset: "v2", weight: 1 }] },
      { name: "bounded", service: "pricing", matches: [{ path: { exact: "/hang" } }], split: [{ subset: "v1", weight: 1 }], mirror: { subset: "v2", maxInFlight: 2 } },
      { name: "nowhere", service: "pricing", matches: [{ path: { exact: "/nowhere" } }], split: [{ subset: "v1", weight: 1 }], mirror: { subset: "v3" } },
      { name: "shadow", service: "pricing", split: [{ subset: "v1", weight: 1 }], mirror: { subset: "v2" } }
    ], [v1.endpoint, { address: v2Sidecar.inboundAddress, weight: 1, version: "v2" }])

    // Mirrors the mirror never answers: two stay in flight, the next three are skipped.
    for (let i = 0; i < 5; i++) expect((await call(running.outboundPort, { path: "/hang", headers: { host: "pricing" } })).status).toBe(200)
    await waitFor(() => mirrored.length === 2, 5000, "the two mirrors within the bound")
    // A request of its own to the mirror's app, after them on the same connection: nothing more came before it.
    expect((await call(running.outboundPort, { path: "/direct", headers: { host: "pricing" } })).body.toString("utf8")).toBe("direct")
    expect(mirrored.filter((m) => m.url === "/hang")).toHaveLength(2)

    for (let i = 0; i < 5; i++) {
      const answer = await call(running.outboundPort, { path: "/fail", method: "POST", headers: { host: "pricing", "x-n": String(i), "content-type": "text/plain" }, body: `order ${i}` })
      expect(answer.status).toBe(200)
      expect(answer.body.toString("utf8")).toBe("primary")
    }
    await waitFor(() => mirrored.length === 8, 5000, "the five mirrors")
    expect(mirrored.filter((m) => m.url === "/fail").map((m) => m.body).sort()).toStrictEqual([0, 1, 2, 3, 4].map((i) => `order ${i}`))
    const copies = mirrorApp.seen.filter((r) => r.url === "/fail")
    expect(copies.every((r) => r.method === "POST" && r.headers["content-type"] === "text/plain")).toBe(true)
    expect(copies.map((r) => r.headers["x-n"]).sort()).toStrictEqual(["0", "1", "2", "3", "4"])

    expect((await call(running.outboundPort, { path: "/nowhere", headers: { host: "pricing" } })).body.toString("utf8")).toBe("primary")
    expect(v1.app.seen.map((r) => r.url)).toStrictEqual([...Array.from({ length: 5 }, () => "/hang"), ...Array.from({ length: 5 }, () => "/fail"), "/nowhere"])
  })
})
