// HTTPRoutes (Gateway API, GAMMA: parentRefs naming a Service) as routes: the translation
// (src/sidecar/httpRoutes.ts: matches, backendRefs over subsets and services, filters, timeouts,
// precedence, what is refused and why), then a real sidecar watching a fake API server
// (src/sidecar/kubernetesRoutes.ts): an HTTPRoute added, its weights changed (to another
// service), and deleted each take effect within 1 s; an object that cannot be taken is logged and
// the others still apply; one whose parts are not what the API defines is refused, not thrown.
import type { KubernetesObject } from "@kubernetes/client-node"
import * as Result from "effect/Result"
import { afterEach, beforeEach, describe, expect, it } from "vitest"
import { byPrecedence, gatewayDurationMs, type HttpRouteObject, translateHttpRoute } from "../../src/sidecar/httpRoutes.ts"
import { compileRoutes, parseRoutesDocument } from "../../src/sidecar/routes.ts"
import { chooseSubset } from "../../src/sidecar/routing.ts"
import { endpointSlice, FakeKubeApi } from "../discovery/fakeKubeApi.ts"
import { Cleanup, waitFor } from "../support/iipRaw.ts"
import { call, progress, type RunningSidecar, sidecarConfig, startApp, startSidecar } from "../support/sidecarHarness.ts"

const httpRoute = (name: string, spec: NonNullable<HttpRouteObject["spec"]>, created = "2026-01-01T00:00:00Z"): KubernetesObject & HttpRouteObject => ({
  apiVersion: "gateway.networking.k8s.io/v1",
  kind: "HTTPRoute",
  metadata: { name, namespace: "shop", creationTimestamp: created as unknown as Date },
  spec
})

const pricingParent = [{ group: "", kind: "Service", name: "pricing", port: 80 }]
const meshNameOf = (_namespace: string, name: string) => name

const translated = (object: HttpRouteObject) => {
  const translation = translateHttpRoute(object, { meshNameOf })
  if (translation._tag !== "Routes") throw new Error(`expected routes, got ${JSON.stringify(translation)}`)
  return translation.routes
}

describe("HTTPRoute translation", () => {
  it("matches, backendRefs (version Services as subsets, other Services, scaled weights), filters and timeouts", () => {
    const routes = translated(httpRoute("pricing", {
      parentRefs: pricingParent,
      rules: [{
        matches: [{ path: { type: "PathPrefix", value: "/quote" }, method: "GET", headers: [{ name: "X-Canary", value: "yes" }], queryParams: [{ name: "beta", value: "1" }] }],
        backendRefs: [{ name: "pricing-v1", port: 80, weight: 900_000 }, { name: "pricing-v2", port: 80, weight: 100_000 }, { name: "quotes", port: 80, weight: 0 }],
        filters: [
          { type: "RequestHeaderModifier", requestHeaderModifier: { set: [{ name: "X-Env", value: "canary" }], add: [{ name: "x-tag", value: "a" }], remove: ["X-Debug"] } },
          { type: "RequestMirror", requestMirror: { backendRef: { name: "pricing-v3", port: 80 }, fraction: { numerator: 1, denominator: 4 } } }
        ],
        timeouts: { request: "2s", backendRequest: "500ms" }
      }]
    }))
    expect(routes).toHaveLength(1)
    expect(routes[0]!.spec).toEqual({
      name: "shop.pricing.0.0",
      service: "pricing",
      matches: [{ path: { regex: "^/quote(?:/|$)" }, method: "GET", headers: { "x-canary": "yes" }, query: { beta: "1" } }],
      split: [{ subset: "v1", weight: 900 }, { subset: "v2", weight: 100 }, { service: "quotes", weight: 0 }],
      requestHeaders: { set: { "x-env": "canary" }, add: { "x-tag": "a" }, remove: ["x-debug"] },
      mirror: { subset: "v3", percent: 25 },
      timeoutMs: 2000,
      retries: { attempts: 3, perTryTimeoutMs: 500 }
    })
    // What it gives is a valid routes document; PathPrefix matches whole segments.
    const document = parseRoutesDocument({ routes: routes.map((r) => r.spec) })
    expect(Result.isSuccess(document)).toBe(true)
    const compiled = compileRoutes(Result.getOrThrow(document), { sourceOf: () => "HTTPRoute shop/pricing" })
    const directory = { hasSubset: () => false }
    const headers = { "x-canary": "yes" }
    expect(chooseSubset(compiled, directory, "pricing", "GET", "/quote/7?beta=1", headers)?.route).toBe("shop.pricing.0.0")
    expect(chooseSubset(compiled, directory, "pricing", "GET", "/quote?beta=1", headers)?.route).toBe("shop.pricing.0.0")
    expect(chooseSubset(compiled, directory, "pricing", "GET", "/quotes?beta=1", headers)).toBeUndefined()
    expect(compiled.byService.get("pricing")![0]!.source).toBe("HTTPRoute shop/pricing")
  })

  it("a rule without backendRefs answers 500; no rules is one rule for every request; the parent itself is the whole service", () => {
    const [empty] = translated(httpRoute("a", { parentRefs: pricingParent, rules: [{ matches: [{ path: { type: "Exact", value: "/x" } }] }] }))
    expect(empty!.spec).toMatchObject({ matches: [{ path: { exact: "/x" } }], split: [{ service: "pricing", weight: 1 }], fault: { abort: { status: 500, percent: 100 } } })
    const [whole] = translated(httpRoute("b", { parentRefs: pricingParent, rules: [{ backendRefs: [{ name: "pricing", port: 80 }] }] }))
    expect(whole!.spec).toEqual({ name: "shop.b.0.0", service: "pricing", split: [{ service: "pricing", weight: 1 }] })
  })

  it("refuses what it cannot do as written (naming it); a route of a Gateway is not the mesh's; durations", () => {
    const refused = (spec: NonNullable<HttpRouteObject["spec"]>) => translateHttpRoute(httpRoute("r", spec), { meshNameOf })
    expect(refused({ parentRefs: pricingParent, rules: [{ matches: [{ headers: [{ type: "RegularExpression", name: "x", value: ".*" }] }] }] })).toMatchObject({ _tag: "Refused", reason: expect.stringMatching(/header match type "RegularExpression" is not supported/) })
    expect(refused({ parentRefs: pricingParent, rules: [{ filters: [{ type: "URLRewrite" }] }] })).toMatchObject({ _tag: "Refused", reason: expect.stringMatching(/filter "URLRewrite" is not supported/) })
    expect(refused({ parentRefs: pricingParent, rules: [{ filters: [{ type: "RequestMirror", requestMirror: { backendRef: { name: "quotes" } } }] }] })).toMatchObject({ _tag: "Refused", reason: expect.stringMatching(/mirror to another service/) })
    expect(refused({ parentRefs: pricingParent, rules: [{ timeouts: { request: "2 seconds" } }] })).toMatchObject({ _tag: "Refused", reason: expect.stringMatching(/not a Gateway API duration/) })
    expect(refused({ parentRefs: [{ name: "shop-gateway" }], rules: [] })).toEqual({ _tag: "NotMesh" })
    expect(gatewayDurationMs("1h2m3s500ms")).toBe(3_723_500)
    expect(gatewayDurationMs("0s")).toBe(0)
  })

  it("parts that are not what the API defines (null, not a list, not a string) make the object refused with the reason, never a throw", () => {
    // What a server sends is not checked against the types: each of these threw out of the watch's change handler.
    const bent: Array<unknown> = [
      { parentRefs: pricingParent, rules: { 0: {} } },
      { parentRefs: pricingParent, rules: [null] },
      { parentRefs: pricingParent, rules: [{ matches: [null] }] },
      { parentRefs: pricingParent, rules: [{ matches: [{ path: { type: "PathPrefix", value: 5 } }] }] },
      { parentRefs: pricingParent, rules: [{ matches: [{ headers: [null] }] }] },
      { parentRefs: pricingParent, rules: [{ backendRefs: [null] }] },
      { parentRefs: pricingParent, rules: [{ filters: [null] }] },
      { parentRefs: pricingParent, rules: [{ filters: [{ type: "RequestHeaderModifier", requestHeaderModifier: { set: [null] } }] }] },
      { parentRefs: [null] },
      { parentRefs: "pricing" }
    ]
    for (const spec of bent) {
      const translation = translateHttpRoute(httpRoute("r", spec as NonNullable<HttpRouteObject["spec"]>), { meshNameOf })
      expect(translation, JSON.stringify(spec)).toMatchObject({ _tag: "Refused", reason: expect.stringMatching(/^not an HTTPRoute as the API defines it \(/) })
    }
  })

  it("header and query matches named like Object.prototype's members (constructor, toString, __proto__) are kept, not dropped", () => {
    // Dropped, the match would take every request: a canary route for `constructor: canary` sent all traffic to v2.
    const [route] = translated(httpRoute("r", {
      parentRefs: pricingParent,
      rules: [{
        matches: [{ headers: [{ name: "Constructor", value: "canary" }, { name: "__proto__", value: "p" }], queryParams: [{ name: "toString", value: "1" }, { name: "__proto__", value: "2" }, { name: "toString", value: "later" }] }],
        backendRefs: [{ name: "pricing-v2", port: 80 }]
      }]
    }))
    const match = (route!.spec["matches"] as ReadonlyArray<{ readonly headers: object; readonly query: object }>)[0]!
    expect(Object.entries(match.headers)).toEqual([["constructor", "canary"], ["__proto__", "p"]])
    // The API takes the first of a repeated name.
    expect(Object.entries(match.query)).toEqual([["toString", "1"], ["__proto__", "2"]])
    expect(route!.order.slice(3, 5)).toEqual([-2, -2])
    const compiled = compileRoutes(Result.getOrThrow(parseRoutesDocument({ routes: [route!.spec] })), { sourceOf: () => "HTTPRoute shop/r" })
    const directory = { hasSubset: () => true }
    expect(chooseSubset(compiled, directory, "pricing", "GET", "/", {})).toBeUndefined()
    expect(chooseSubset(compiled, directory, "pricing", "GET", "/?toString=1&__proto__=2", { constructor: "canary" })).toBeUndefined()
    expect(chooseSubset(compiled, directory, "pricing", "GET", "/?toString=1&__proto__=2", { constructor: "canary", ["__proto__"]: "p" })?.route).toBe("shop.r.0.0")
  })

  it("precedence: exact path, then the longest prefix, then method, headers, query; then the oldest object", () => {
    const routes = [
      ...translated(httpRoute("old", { parentRefs: pricingParent, rules: [{ matches: [{ path: { value: "/a" } }] }] }, "2025-01-01T00:00:00Z")),
      ...translated(httpRoute("new", {
        parentRefs: pricingParent,
        rules: [{ matches: [{ path: { value: "/a" } }, { path: { value: "/a/b" } }, { path: { type: "Exact", value: "/a" } }, { path: { value: "/a" }, method: "GET" }, { path: { value: "/a" }, headers: [{ name: "x", value: "1" }] }] }]
      }))
    ].sort(byPrecedence)
    expect(routes.map((r) => r.spec["name"])).toEqual(["shop.new.0.2", "shop.new.0.1", "shop.new.0.3", "shop.new.0.4", "shop.old.0.0", "shop.new.0.0"])
  })
})

let cleanup: Cleanup
beforeEach(() => {
  cleanup = new Cleanup()
})
afterEach(async () => {
  await cleanup.run()
})

/** Asks until `done` holds for an answer's body, at most `limitMs`; the time it took. */
const untilAnswer = async (running: RunningSidecar, headers: Record<string, string>, done: (body: string) => boolean, limitMs: number): Promise<number> => {
  const started = performance.now()
  for (;;) {
    const answer = await call(running.outboundPort, { headers: { host: "pricing", ...headers } })
    if (done(answer.body.toString("utf8"))) return performance.now() - started
    if (performance.now() - started > limitMs) throw new Error(`not within ${limitMs} ms; last answer ${answer.status} ${answer.body.toString("utf8")}`)
  }
}

describe("HTTPRoutes watched from a fake API server", () => {
  it("added, weights changed (to another service), deleted: each takes effect within 1 s; an object that cannot be taken is logged, the others apply", async () => {
    const api = await FakeKubeApi.start("shop")
    cleanup.add(() => api.close())
    const backend = async (service: string, version: string) => {
      const app = await startApp(cleanup, (_req, res) => res.end(`${service}-${version}`))
      const sidecar = await startSidecar(cleanup, sidecarConfig({ service, app: app.address, node: `${service}-${version}` }))
      return { address: sidecar.inboundAddress, weight: 1, version }
    }
    const endpoints = { pricing: [await backend("pricing", "v1"), await backend("pricing", "v2")], quotes: [await backend("quotes", "v1")] }
    const logged: Array<Record<string, unknown>> = []
    const { record, until } = progress(logged)
    const caller = await startSidecar(
      cleanup,
      sidecarConfig({ service: "store", kubernetesRoutes: ["shop"], endpoints }),
      (event, fields) => record({ event, ...fields }),
      { kubeConfig: api.kubeConfig() }
    )
    await until(() => logged.some((e) => e["event"] === "httproutes-loaded"), "the first list", 5000)
    // The watch is open (the informer opens it after the list): from here a change travels as an event.
    await waitFor(() => api.openWatches === 1, 5000, "the HTTPRoute watch")

    const canary = httpRoute("pricing-canary", {
      parentRefs: pricingParent,
      rules: [
        { matches: [{ headers: [{ name: "x-canary", value: "yes" }] }], backendRefs: [{ name: "pricing-v2", port: 80 }] },
        { backendRefs: [{ name: "pricing-v1", port: 80, weight: 1 }, { name: "quotes", port: 80, weight: 0 }] }
      ]
    })
    api.apply("ADDED", httpRoute("broken", { parentRefs: pricingParent, rules: [{ filters: [{ type: "URLRewrite" }] }] }))
    api.apply("ADDED", canary)
    const added = await untilAnswer(caller, { "x-canary": "yes" }, (body) => body === "pricing-v2", 1000)
    expect(added).toBeLessThan(1000)
    for (let i = 0; i < 10; i++) expect((await call(caller.outboundPort, { headers: { host: "pricing" } })).body.toString()).toBe("pricing-v1")
    expect(logged.find((e) => e["event"] === "httproute-invalid")).toMatchObject({ httproute: "shop/broken", message: expect.stringMatching(/URLRewrite/) })

    api.apply("MODIFIED", httpRoute("pricing-canary", {
      parentRefs: pricingParent,
      rules: [
        { matches: [{ headers: [{ name: "x-canary", value: "yes" }] }], backendRefs: [{ name: "pricing-v2", port: 80 }] },
        { backendRefs: [{ name: "pricing-v1", port: 80, weight: 0 }, { name: "quotes", port: 80, weight: 1 }] }
      ]
    }))
    const changed = await untilAnswer(caller, {}, (body) => body === "quotes-v1", 1000)
    expect(changed).toBeLessThan(1000)

    api.apply("DELETED", canary)
    const deleted = await untilAnswer(caller, {}, (body) => body.startsWith("pricing-"), 1000)
    expect(deleted).toBeLessThan(1000)
    // With no route, the canary header means nothing: both versions take traffic again.
    const seen = new Set<string>()
    await untilAnswer(caller, { "x-canary": "yes" }, (body) => seen.add(body).has("pricing-v1") && seen.has("pricing-v2"), 5000)
  }, 30_000)

  it("in-cluster as the manifests have it: version Services (iip-mesh/version) make one service's subsets, and the HTTPRoute's canary rule reaches v2", async () => {
    const api = await FakeKubeApi.start("shop")
    cleanup.add(() => api.close())
    const pricing = async (version: string) => {
      const app = await startApp(cleanup, (_req, res) => res.end(`pricing-${version}`))
      const sidecar = await startSidecar(cleanup, sidecarConfig({ service: "pricing", app: app.address, node: `pricing-${version}` }))
      const slice = endpointSlice(`pricing-${version}-abc`, [{ ip: "127.0.0.1" }], { service: `pricing-${version}`, port: sidecar.sidecar.inbound.port })
      api.apply("ADDED", { ...slice, metadata: { ...slice.metadata, labels: { ...slice.metadata!.labels, "iip-mesh/version": version } } })
    }
    await pricing("v1")
    await pricing("v2")
    api.apply("ADDED", httpRoute("pricing-canary", {
      parentRefs: pricingParent,
      rules: [
        { matches: [{ headers: [{ name: "x-canary", value: "yes" }] }], backendRefs: [{ name: "pricing-v2", port: 4143 }] },
        { backendRefs: [{ name: "pricing-v1", port: 4143 }] }
      ]
    }))
    const caller = await startSidecar(
      cleanup,
      sidecarConfig({ service: "store", kubernetes: { pricing: "shop/pricing-v1+pricing-v2" }, kubernetesRoutes: ["shop"] }),
      undefined,
      { kubeConfig: api.kubeConfig() }
    )
    await untilAnswer(caller, { "x-canary": "yes" }, (body) => body === "pricing-v2", 5000)
    for (let i = 0; i < 10; i++) {
      expect((await call(caller.outboundPort, { headers: { host: "pricing", "x-canary": "yes" } })).body.toString()).toBe("pricing-v2")
      expect((await call(caller.outboundPort, { headers: { host: "pricing" } })).body.toString()).toBe("pricing-v1")
    }
  }, 30_000)
})
