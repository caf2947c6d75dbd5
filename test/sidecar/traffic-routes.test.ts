// Routes through real sidecars and real HTTP apps (src/sidecar/routes.ts, routing.ts, routesFile.ts):
// the caller's sidecar (--routes FILE) sends `pricing` traffic to the v1 or v2 sidecar+app by its
// routes; the endpoints carry their version from the static list. A 90/10 split over 1000 requests,
// header/path/method matches, a file changed and broken while the sidecar runs (each step waits for
// the sidecar's own log event), a bad file at start, and a canary that follows the call chain by
// baggage across two sidecar hops: storefront -> catalog (v1|v2) -> pricing (v1|v2). WebSocket
// upgrades follow the same routes and rate limits.
import * as Cause from "effect/Cause"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Scope from "effect/Scope"
import { mkdtempSync, rmSync, writeFileSync } from "node:fs"
import * as http from "node:http"
import * as net from "node:net"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { afterEach, beforeEach, describe, expect, it } from "vitest"
import WebSocket, { WebSocketServer } from "ws"
import type { SidecarConfig } from "../../src/config/sidecarConfig.ts"
import * as SidecarLive from "../../src/sidecar/sidecar.ts"
import { TraceStore } from "../../src/telemetry/traceStore.ts"
import { RoutesFileInvalid } from "../../src/sidecar/routesFile.ts"
import { STICKY_MEMBER } from "../../src/sidecar/routing.ts"
import { MaxSubsetsPerService } from "../../src/balancer/subsets.ts"
import { Cleanup } from "../support/iipRaw.ts"
import { call, progress, quietLog, type RunningSidecar, sidecarConfig, startApp, startSidecar } from "../support/sidecarHarness.ts"

let cleanup: Cleanup
let dir: string
beforeEach(() => {
  cleanup = new Cleanup()
  dir = mkdtempSync(join(tmpdir(), "iip-mesh-routes-"))
})
afterEach(async () => {
  await cleanup.run()
  rmSync(dir, { recursive: true, force: true })
})

/** An app that answers with its name, and the sidecar in front of it (service `service`). */
const versioned = async (service: string, version: string, handler?: http.RequestListener) => {
  const app = await startApp(cleanup, handler ?? ((_req, res) => res.end(`${service}-${version}`)))
  const sidecar = await startSidecar(cleanup, sidecarConfig({ service, app: app.address, node: `${service}-${version}` }))
  return { app, sidecar, endpoint: { address: sidecar.inboundAddress, weight: 1, version } }
}

/** A sidecar with these routes (written to a file of that name) and endpoints; its log kept for waits. */
const router = async (file: string, routes: unknown, config: Partial<SidecarConfig> & Pick<SidecarConfig, "service">, options: SidecarLive.SidecarOptions = {}) => {
  const path = join(dir, file)
  writeFileSync(path, typeof routes === "string" ? routes : JSON.stringify({ routes }))
  const logged: Array<Record<string, unknown>> = []
  const { record, until } = progress(logged)
  const running = await startSidecar(cleanup, sidecarConfig({ routes: path, routesPollMs: 60_000, ...config }), (event, fields) => record({ event, ...fields }), options)
  return { running, path, logged, until }
}

const get = async (running: RunningSidecar, service: string, options: { path?: string; method?: string; headers?: Record<string, string>; agent?: http.Agent } = {}) => {
  const answer = await call(running.outboundPort, {
    path: options.path ?? "/",
    method: options.method ?? "GET",
    headers: { host: service, ...options.headers },
    ...(options.agent === undefined ? {} : { agent: options.agent })
  })
  expect(answer.status).toBe(200)
  return answer.body.toString("utf8")
}

describe("routes over real sidecars", () => {
  it("a 90/10 split over v1/v2 holds over 1000 requests (within a binomial bound; the picker is counted, so exactly)", async () => {
    const v1 = await versioned("pricing", "v1")
    const v2 = await versioned("pricing", "v2")
    const { running } = await router("split.json", [{ name: "canary", service: "pricing", split: [{ subset: "v1", weight: 90 }, { subset: "v2", weight: 10 }] }], {
      service: "store",
      endpoints: { pricing: [v1.endpoint, v2.endpoint] }
    })
    const agent = new http.Agent({ keepAlive: true, maxSockets: 8 })
    cleanup.add(() => agent.destroy())
    const n = 1000
    const counts = new Map<string, number>()
    let next = 0
    await Promise.all(Array.from({ length: 8 }, async () => {
      while (next < n) {
        next++
        const body = await get(running, "pricing", { agent })
        counts.set(body, (counts.get(body) ?? 0) + 1)
      }
    }))
    const canary = counts.get("pricing-v2") ?? 0
    expect((counts.get("pricing-v1") ?? 0) + canary).toBe(n)
    // 4 standard deviations of Binomial(1000, 0.1) is 38; the smooth round-robin gives exactly 100.
    expect(Math.abs(canary - n * 0.1)).toBeLessThanOrEqual(4 * Math.sqrt(n * 0.1 * 0.9))
    expect(canary).toBe(100)
    expect(v2.app.seen.length).toBe(100)
  })

  it("a route's subset is served when the service has more versions than MaxSubsetsPerService: 16 other versions listed first (any mDNS host can announce them) made every request to v2 a 503", async () => {
    const v2 = await versioned("pricing", "v2")
    // Listed before v2; never picked (the route sends everything to v2), so their address is never dialled.
    const others = Array.from({ length: MaxSubsetsPerService }, (_, i) => ({ address: v2.endpoint.address.replace(/:\d+$/, `:${1 + i}`), weight: 1, version: `x${i}` }))
    const { running, logged } = await router("many-versions.json", [{ name: "to-v2", service: "pricing", split: [{ subset: "v2", weight: 1 }] }], {
      service: "store",
      endpoints: { pricing: [...others, v2.endpoint] }
    })
    expect(await get(running, "pricing")).toBe("pricing-v2")
    expect(logged.filter((line) => line["event"] === "endpoints.subsets-capped")).toMatchObject([{ service: "pricing", limit: MaxSubsetsPerService }])
  })

  it("header, path (prefix, regex), query and method matches pick their subset; the first match wins; other traffic takes the last route", async () => {
    const v1 = await versioned("pricing", "v1")
    const v2 = await versioned("pricing", "v2")
    const { running } = await router("match.yaml", [
      "routes:",
      "  - name: testers",
      "    service: pricing",
      "    matches:",
      "      - headers: { x-tester: \"yes\" }",
      "      - path: { prefix: /beta/ }",
      "      - query: { beta: \"on\" }",
      "      - { method: POST, path: { regex: \"^/orders/[0-9]+$\" } }",
      "    split: [{ subset: v2, weight: 1 }]",
      "  - name: stable",
      "    service: pricing",
      "    split: [{ subset: v1, weight: 1 }]",
      ""
    ].join("\n"), { service: "store", endpoints: { pricing: [v1.endpoint, v2.endpoint] } })
    for (let i = 0; i < 5; i++) {
      expect(await get(running, "pricing", { headers: { "x-tester": "yes" } })).toBe("pricing-v2")
      expect(await get(running, "pricing", { path: "/beta/list?page=2" })).toBe("pricing-v2")
      expect(await get(running, "pricing", { path: "/orders/12", method: "POST" })).toBe("pricing-v2")
      expect(await get(running, "pricing", { path: "/list?beta=on" })).toBe("pricing-v2")
      expect(await get(running, "pricing", { path: "/list?beta=off" })).toBe("pricing-v1")
      expect(await get(running, "pricing", { path: "/orders/12" })).toBe("pricing-v1")
      expect(await get(running, "pricing", { headers: { "x-tester": "no" } })).toBe("pricing-v1")
      expect(await get(running, "pricing", { path: "/" })).toBe("pricing-v1")
    }
    expect(v2.app.seen.map((r) => r.url)).toStrictEqual(Array.from({ length: 5 }, () => ["/", "/beta/list?page=2", "/orders/12", "/list?beta=on"]).flat())
  })

  it("a changed file takes effect without a restart; a bad one is reported (route and field) and the last good one stays", async () => {
    const v1 = await versioned("pricing", "v1")
    const v2 = await versioned("pricing", "v2")
    const only = (subset: string) => JSON.stringify({ routes: [{ name: "all", service: "pricing", split: [{ subset, weight: 1 }] }] })
    const { running, path, logged, until } = await router("live.json", only("v1"), { service: "store", endpoints: { pricing: [v1.endpoint, v2.endpoint] } })
    expect(logged.filter((l) => l.event === "routes-loaded")).toHaveLength(1)
    expect(await get(running, "pricing")).toBe("pricing-v1")

    writeFileSync(path, JSON.stringify({ routes: [{ name: "all", service: "pricing", split: [{ subset: "v2", weight: -5 }] }] }))
    await until(() => logged.some((l) => l.event === "routes-invalid"), "routes-invalid", 5000)
    const invalid = logged.find((l) => l.event === "routes-invalid")!
    // The log escapes the quotes; the file and the route and field are named.
    expect(invalid.message).toMatch(/live\.json: not a valid routes file:.*routes\[0\]\.split\[0\]\.weight \(route \\?"all\\?"\): Expected a value between 0 and 1000/)
    expect(invalid.keeping).toBe("1 route for 1 service")
    for (let i = 0; i < 5; i++) expect(await get(running, "pricing")).toBe("pricing-v1")

    writeFileSync(path, only("v2"))
    await until(() => logged.filter((l) => l.event === "routes-loaded").length === 2, "the second routes-loaded", 5000)
    for (let i = 0; i < 5; i++) expect(await get(running, "pricing")).toBe("pricing-v2")
  })

  it("a YAML file saved in place in two parts, a pause between, is never applied half (its first route alone is valid); the whole is", async () => {
    const v1 = await versioned("pricing", "v1")
    const v2 = await versioned("pricing", "v2")
    const route = (name: string, service: string, subset: string, match = "") => `  - name: ${name}\n    service: ${service}\n${match}    split: [{ subset: ${subset}, weight: 1 }]\n`
    const testers = route("testers", "pricing", "v2", `    matches: [{ headers: { x-tester: "yes" } }]\n`)
    const { running, path, logged, until } = await router("parts.yaml", `routes:\n${testers}${route("stable", "pricing", "v1")}${route("search", "search", "v1")}`, {
      service: "store",
      endpoints: { pricing: [v1.endpoint, v2.endpoint] }
    })
    // An editor or `cat > file` writing in place: the first part, a pause shorter than the settle
    // time (250 ms), the rest. The pause is the writer's, not a wait for the sidecar.
    writeFileSync(path, `routes:\n${testers}`)
    await new Promise((resolve) => setTimeout(resolve, 150))
    writeFileSync(path, `routes:\n${testers}${route("stable", "pricing", "v1")}`)
    await until(() => logged.filter((l) => l.event === "routes-loaded").length === 2, "the whole file's routes-loaded", 5000)
    expect(logged.filter((l) => l.event === "routes-loaded").map((l) => l.applies)).toStrictEqual(["3 routes for 2 services", "2 routes for 1 service"])
    for (let i = 0; i < 5; i++) {
      expect(await get(running, "pricing")).toBe("pricing-v1")
      expect(await get(running, "pricing", { headers: { "x-tester": "yes" } })).toBe("pricing-v2")
    }
  })

  it("a retry stays within the subset: an unreachable v2 endpoint's requests go to the other v2, never to v1", async () => {
    const v1 = await versioned("pricing", "v1")
    const v2 = await versioned("pricing", "v2")
    const closed = net.createServer()
    await new Promise<void>((resolve) => closed.listen(0, "127.0.0.1", resolve))
    const deadPort = (closed.address() as net.AddressInfo).port
    await new Promise<void>((resolve) => closed.close(() => resolve()))
    const { running } = await router("retry.json", [{ name: "all", service: "pricing", split: [{ subset: "v2", weight: 1 }] }], {
      service: "store",
      endpoints: { pricing: [v1.endpoint, v2.endpoint, { address: `127.0.0.1:${deadPort}`, weight: 1, version: "v2" }] }
    })
    for (let i = 0; i < 20; i++) expect(await get(running, "pricing")).toBe("pricing-v2")
    expect(v1.app.seen).toHaveLength(0)
  })

  it("a subset with no endpoint answers 503 no_endpoint naming it; a bad file at start stops the start", async () => {
    const v1 = await versioned("pricing", "v1")
    const { running } = await router("gone.json", [{ name: "all", service: "pricing", split: [{ subset: "v3", weight: 1 }] }], { service: "store", endpoints: { pricing: [v1.endpoint] } })
    const answer = await call(running.outboundPort, { headers: { host: "pricing" } })
    expect(answer.status).toBe(503)
    expect(answer.headers["x-iip-mesh-error"]).toBe("outbound; reason=no_endpoint")
    expect(answer.body.toString("utf8")).toContain("in subset v3")

    const bad = join(dir, "bad.json")
    writeFileSync(bad, JSON.stringify({ routes: [{ name: "x", service: "pricing" }] }))
    const scope = await Effect.runPromise(Scope.make())
    cleanup.add(() => Effect.runPromise(Scope.close(scope, Exit.void)))
    const exit = await Effect.runPromiseExit(SidecarLive.make(sidecarConfig({ service: "store", routes: bad }), quietLog).pipe(Scope.provide(scope)))
    const failure = Exit.isFailure(exit) ? Cause.squash(exit.cause) : undefined
    expect(failure).toBeInstanceOf(RoutesFileInvalid)
    expect((failure as RoutesFileInvalid).message).toBe(`${bad}: not a valid routes file:\n  routes[0].split (route "x"): Missing key`)
  })
})

describe("routes for upgrades", () => {
  /** A versioned app whose WebSocket server says its version on connect, and the sidecar in front of it. */
  const versionedWs = async (version: string) => {
    const ws = await versioned("pricing", version)
    const wss = new WebSocketServer({ noServer: true })
    ws.app.server.on("upgrade", (req: http.IncomingMessage, socket: net.Socket, head: Buffer) =>
      wss.handleUpgrade(req, socket, head, (client) => client.send(version)))
    cleanup.add(() => {
      for (const client of wss.clients) client.terminate()
      wss.close()
    })
    return ws
  }

  /** The first message of a WebSocket opened through `running`'s outbound port to `pricing`, or its refusal's status. */
  const firstMessage = (running: RunningSidecar, headers: Record<string, string> = {}) =>
    new Promise<string>((done, failed) => {
      const socket = new WebSocket(`ws://127.0.0.1:${running.outboundPort}/live`, { headers: { host: "pricing", ...headers } })
      socket.once("message", (data: Buffer) => {
        done(data.toString())
        socket.close()
      })
      socket.once("unexpected-response", (_req, res) => {
        done(`refused ${res.statusCode} ${String(res.headers["x-iip-mesh-error"])}`)
        socket.terminate()
      })
      socket.once("error", failed)
    })

  it("a WebSocket follows the routes as a request does: the stable route's subset, a header match's, and the rate limit's 429", async () => {
    const v1 = await versionedWs("v1")
    const v2 = await versionedWs("v2")
    const routes = `routes:
  - name: canary
    service: pricing
    matches: [{ headers: { x-canary: "yes" } }]
    split: [{ subset: v2, weight: 1 }]
  - name: stable
    service: pricing
    split: [{ subset: v1, weight: 1 }]
rateLimits:
  - name: few
    service: pricing
    direction: outbound
    perSecond: 0.001
    burst: 12
`
    // 12 upgrades in the bucket and no token back within the test (one each 1,000 s): at 1/s, 12
    // upgrades through two sidecars on a loaded machine outlasted a second and the 13th was let through.
    const { running } = await router("ws-routes.yaml", routes, { service: "store", endpoints: { pricing: [v1.endpoint, v2.endpoint] } })
    const stable = []
    for (let i = 0; i < 10; i++) stable.push(await firstMessage(running))
    expect(stable).toStrictEqual(Array(10).fill("v1"))
    expect(await firstMessage(running, { "x-canary": "yes" })).toBe("v2")
    expect(await firstMessage(running, { "x-canary": "yes" })).toBe("v2")
    expect(await firstMessage(running)).toBe("refused 429 outbound; reason=rate_limited")
  })
})

describe("a canary that follows the call chain by baggage", () => {
  it("storefront -> catalog -> pricing: a header at the first hop sends both hops to v2; other traffic stays on v1; a request carrying the member is routed by it; spans name the route and subset", async () => {
    const pricing = [await versioned("pricing", "v1"), await versioned("pricing", "v2")]
    // Catalog v1 and v2: each calls pricing through its own sidecar, passing the baggage header on
    // (as OpenTelemetry-instrumented apps do), and answers with both names.
    const catalog = await Promise.all(["v1", "v2"].map(async (version) => {
      let outboundPort = 0
      const app = await startApp(cleanup, (req, res) => {
        const baggage = req.headers.baggage
        call(outboundPort, { headers: { host: "pricing", ...(baggage === undefined ? {} : { baggage }) } }).then(
          (answer) => res.end(`catalog-${version} ${answer.body.toString("utf8")}`),
          () => {
            res.statusCode = 502
            res.end()
          }
        )
      })
      // Catalog's own routes send pricing to v1: the member must win over them.
      const { running } = await router(`catalog-${version}.json`, [{ name: "stable", service: "pricing", split: [{ subset: "v1", weight: 1 }] }], {
        service: "catalog",
        node: `catalog-${version}`,
        app: app.address,
        endpoints: { pricing: pricing.map((p) => p.endpoint) }
      })
      outboundPort = running.outboundPort
      return { app, endpoint: { address: running.inboundAddress, weight: 1, version } }
    }))
    const traces = new TraceStore()
    const { running: storefront } = await router("storefront.json", [
      { name: "canary", service: "catalog", matches: [{ headers: { "x-canary": "on" } }], split: [{ subset: "v2", weight: 1 }], sticky: "baggage" },
      { name: "stable", service: "catalog", split: [{ subset: "v1", weight: 1 }] }
    ], { service: "storefront", endpoints: { catalog: catalog.map((c) => c.endpoint) } }, { traces })

    for (let i = 0; i < 10; i++) {
      expect(await get(storefront, "catalog", { headers: { "x-canary": "on", baggage: "user=alice" } })).toBe("catalog-v2 pricing-v2")
      expect(await get(storefront, "catalog")).toBe("catalog-v1 pricing-v1")
      expect(await get(storefront, "catalog", { headers: { baggage: `${STICKY_MEMBER}=v2` } })).toBe("catalog-v2 pricing-v2")
    }
    // The member rode the baggage the app passed on, beside the app's own members.
    const atPricing = pricing[1]!.app.seen.map((r) => String(r.headers.baggage))
    expect(atPricing).toHaveLength(20)
    expect(atPricing.filter((b) => b.includes("user=alice") && b.includes(`${STICKY_MEMBER}=v2`))).toHaveLength(10)
    expect(pricing[0]!.app.seen.every((r) => r.headers.baggage === undefined)).toBe(true)
    // The storefront's client spans carry the route and the subset.
    const routed = traces.recent(100).flatMap((summary) => traces.get(summary.traceId) ?? []).map((span) => `${span.attributes["iip_mesh.route"]} ${span.attributes["iip_mesh.subset"]}`)
    expect(routed.filter((r) => r === "canary v2")).toHaveLength(10)
    expect(routed.filter((r) => r === "stable v1")).toHaveLength(10)
    expect(routed.filter((r) => r === "baggage v2")).toHaveLength(10)
  })
})
