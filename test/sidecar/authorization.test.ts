// The authorization policy at the inbound side, through real sidecars (issue 15): app <- B
// ("catalog", --authz-policy FILE) <- A (the caller's sidecar) <- the calling app. Until mutual TLS
// proves identities on the wire, B's accepted mesh connections get their peerIdentity from the test
// (SidecarOptions.onInboundMeshConnection, where the TLS acceptor will set it).
//   - allowed by identity, path and method: the app answers and sees the caller's verified identity;
//   - denied by method, by path (a dot segment through a prefix rule too), by identity, or without
//     an identity: 403 with `x-iip-mesh-error: inbound; reason=forbidden`, the app never sees it,
//     B counts it and logs both identities;
//   - a denial is final: not tried on another endpoint, no ejection;
//   - the policy file changes while B runs; a bad version keeps the last good one;
//   - `x-iip-mesh-client-id` cannot be spoofed: not by the calling app through A, not by a peer in
//     the envelope or in the plain `__http_hdr__` query; the app sees the verified value or nothing.
import { mkdtempSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { afterEach, beforeEach, describe, expect, it } from "vitest"
import type { SidecarConfig } from "../../src/config/sidecarConfig.ts"
import { compilePolicy } from "../../src/identity/policy.ts"
import type { MeshSession } from "../../src/mux/meshSession.ts"
import { InboundAuthorization } from "../../src/sidecar/authorization.ts"
import { makeMetrics } from "../../src/telemetry/metrics.ts"
import { Cleanup } from "../support/iipRaw.ts"
import { startClient } from "../support/meshTest.ts"
import { type App, call, echoed, echoRequest, progress, type RunningSidecar, sidecarConfig, startApp, startSidecar } from "../support/sidecarHarness.ts"

const td = "iip-mesh.local"
const storefront = `spiffe://${td}/ns/shop/sa/storefront`
const reports = `spiffe://${td}/ns/shop/sa/reports`
const CLIENT_ID = "x-iip-mesh-client-id"

const policyOf = (rules: ReadonlyArray<unknown>) => JSON.stringify({ services: { catalog: { default: "deny", rules } } })
const shopPolicy = policyOf([{ from: [storefront], paths: ["/products", "/products/*"], methods: ["GET"] }])

let cleanup: Cleanup
let dir: string
beforeEach(() => {
  cleanup = new Cleanup()
  dir = mkdtempSync(join(tmpdir(), "iip-mesh-authz-"))
})
afterEach(async () => {
  await cleanup.run()
  rmSync(dir, { recursive: true, force: true })
})

interface Callee {
  readonly app: App
  readonly b: RunningSidecar
  readonly logged: Array<Record<string, unknown>>
  /** Resolves once `done` holds of B's log (checked at each line), or fails after a bound. */
  readonly until: (done: () => boolean, what: string) => Promise<void>
  /** The identity B's next accepted mesh connection is given (undefined: none, as over plain TCP). */
  identity: string | undefined
}

/** The far app behind B ("catalog"), B with `config` (a policy file, or none); `onLine` sees each line of B's log as B writes it. */
const startCallee = async (config: Partial<SidecarConfig>, onLine: (event: string) => void = () => {}): Promise<Callee> => {
  const app = await startApp(cleanup, echoRequest)
  const logged: Array<Record<string, unknown>> = []
  const { record, until } = progress(logged)
  const callee = { app, logged, until, identity: undefined as string | undefined } as Callee & { b: RunningSidecar }
  const log = (event: string, fields?: Readonly<Record<string, unknown>>) => {
    record({ event, ...fields })
    onLine(event)
  }
  const b = await startSidecar(cleanup, sidecarConfig({ service: "catalog", app: app.address, ...config }), log, {
    onInboundMeshConnection: (session: MeshSession) => {
      session.connection.peerIdentity = callee.identity
    }
  })
  ;(callee as { b: RunningSidecar }).b = b
  return callee
}

/** A caller's sidecar (service "store") whose connections to `callees` carry `identity` (it dials on its first request). */
const startCaller = async (callees: ReadonlyArray<Callee>, identity: string | undefined, config: Partial<SidecarConfig> = {}) => {
  for (const callee of callees) callee.identity = identity
  return startSidecar(cleanup, sidecarConfig({ service: "store", endpoints: { catalog: callees.map((c) => ({ address: c.b.inboundAddress, weight: 1 })) }, ...config }))
}

const metric = async (sidecar: RunningSidecar, pattern: RegExp): Promise<number> => {
  const { body } = await sidecar.sidecar.telemetry.metrics.text()
  const line = body.split("\n").find((l) => pattern.test(l))
  return line === undefined ? 0 : Number(line.slice(line.lastIndexOf(" ") + 1))
}

const expectForbidden = (answer: { status: number; headers: Record<string, unknown>; body: Buffer }, what: string) => {
  expect(answer.status, what).toBe(403)
  expect(answer.headers["x-iip-mesh-error"], what).toBe("inbound; reason=forbidden")
  expect(JSON.parse(answer.body.toString()), what).toMatchObject({ error: "forbidden", hop: "inbound" })
}

describe("authorization policy at the inbound side", () => {
  it("allows by identity, path and method; the app sees the caller's verified identity", async () => {
    writeFileSync(join(dir, "policy.json"), shopPolicy)
    const callee = await startCallee({ authzPolicy: join(dir, "policy.json") })
    const a = await startCaller([callee], storefront)
    for (const path of ["/products", "/products/42?currency=EUR"]) {
      const answer = await call(a.outboundPort, { path })
      expect(answer.status, path).toBe(200)
      expect(echoed(answer).headers[CLIENT_ID], path).toBe(storefront)
    }
    expect(callee.app.seen).toHaveLength(2)
  })

  it("denies another method, another path, another identity and no identity: 403 forbidden, never at the app, counted, logged with both identities", async () => {
    writeFileSync(join(dir, "policy.json"), shopPolicy)
    const callee = await startCallee({ authzPolicy: join(dir, "policy.json") })
    const asStorefront = await startCaller([callee], storefront)
    expectForbidden(await call(asStorefront.outboundPort, { method: "POST", path: "/products", body: "{}" }), "POST")
    expectForbidden(await call(asStorefront.outboundPort, { path: "/admin" }), "GET /admin")
    expectForbidden(await call(asStorefront.outboundPort, { path: "/products/%2E%2E/admin" }), "a dot segment through the prefix")
    expectForbidden(await call(asStorefront.outboundPort, { path: "/products/..;/admin" }), "a dot segment with parameters (a servlet container's `..`) through the prefix")
    const asReports = await startCaller([callee], reports)
    expectForbidden(await call(asReports.outboundPort, { path: "/products" }), "another identity")
    const anonymous = await startCaller([callee], undefined)
    expectForbidden(await call(anonymous.outboundPort, { path: "/products" }), "no identity")
    expect(callee.app.seen).toStrictEqual([])

    expect(await metric(callee.b, /^iip_mesh_authz_denied_total\{service="catalog",reason="no-rule-matched"\}/)).toBe(5)
    expect(await metric(callee.b, /^iip_mesh_authz_denied_total\{service="catalog",reason="unauthenticated"\}/)).toBe(1)
    const denied = callee.logged.filter((l) => l.event === "authz-denied")
    expect(denied.map((l) => [l.caller, l.method, l.path, l.reason])).toStrictEqual([
      [storefront, "POST", "/products", "no-rule-matched"],
      [storefront, "GET", "/admin", "no-rule-matched"],
      [storefront, "GET", "/products/%2E%2E/admin", "no-rule-matched"],
      [storefront, "GET", "/products/..;/admin", "no-rule-matched"],
      [reports, "GET", "/products", "no-rule-matched"],
      ["none (no verified identity)", "GET", "/products", "unauthenticated"]
    ])
    for (const line of denied) {
      expect(line.callee).toBe(`spiffe://${td}/svc/catalog`)
      expect(line.service).toBe("catalog")
      expect(line.policy).toBe("services.catalog")
    }
    // The caller's sidecar counts it as the callee's verdict.
    expect(await metric(asStorefront, /^iip_mesh_request_errors_total\{direction="outbound",service="catalog",code="403",hop="inbound",reason="forbidden"\}/)).toBe(4)
  })

  it("a denial is final: no other endpoint is tried, and no endpoint is ejected for it", async () => {
    writeFileSync(join(dir, "policy.json"), shopPolicy)
    const one = await startCallee({ authzPolicy: join(dir, "policy.json") })
    const two = await startCallee({ authzPolicy: join(dir, "policy.json") })
    const a = await startCaller([one, two], storefront, { ejectConsecutiveFailures: 1, ejectErrorRatePercent: 1 })
    for (let i = 0; i < 10; i++) expectForbidden(await call(a.outboundPort, { path: `/admin/${i}` }), `GET /admin/${i}`)
    const deniedAt = async (callee: Callee) => metric(callee.b, /^iip_mesh_authz_denied_total\{service="catalog",reason="no-rule-matched"\}/)
    expect((await deniedAt(one)) + (await deniedAt(two))).toBe(10)
    expect(await metric(a, /^iip_mesh_retries_total\{direction="outbound",service="catalog"\}/)).toBe(0)
    const endpoints = a.sidecar.registry.view().find((v) => v.service === "catalog")!.endpoints
    expect(endpoints.map((e) => e.health)).toStrictEqual(["healthy", "healthy"])
    expect((await call(a.outboundPort, { path: "/products" })).status).toBe(200)
  })

  it("follows the policy file as it changes; a bad version keeps the last good policy", async () => {
    const path = join(dir, "policy.json")
    writeFileSync(path, shopPolicy)
    const callee = await startCallee({ authzPolicy: path })
    const a = await startCaller([callee], storefront)
    expectForbidden(await call(a.outboundPort, { method: "POST", path: "/products", body: "{}" }), "POST before the change")
    const loads = () => callee.logged.filter((l) => l.event === "authz-policy-loaded" || l.event === "authz-policy-invalid").length
    const reloaded = (count: number, what: string) => callee.until(() => loads() >= count, what)
    writeFileSync(path, policyOf([{ from: [storefront], paths: ["/products"], methods: ["GET", "POST"] }]))
    await reloaded(2, "B to load the new policy")
    expect((await call(a.outboundPort, { method: "POST", path: "/products", body: "{}" })).status).toBe(200)
    writeFileSync(path, "{ not json")
    await reloaded(3, "B to refuse the bad policy")
    expect(callee.logged.at(-1)).toMatchObject({ event: "authz-policy-invalid", keeping: "services.catalog" })
    expect((await call(a.outboundPort, { method: "POST", path: "/products", body: "{}" })).status).toBe(200)
    expect(await metric(callee.b, /^iip_mesh_authz_policy_reloads_total\{result="ok"\}/)).toBe(1)
    expect(await metric(callee.b, /^iip_mesh_authz_policy_reloads_total\{result="invalid"\}/)).toBe(1)
  })

  it("a YAML policy saved in place in two parts, the rest written as B notices the first: the version B saw is skipped, never applied half (its rule without paths and methods allows all); the whole is", async () => {
    const path = join(dir, "policy.yaml")
    const rule = `services:\n  catalog:\n    rules:\n      - from: ["${storefront}"]\n`
    writeFileSync(path, `${rule}        paths: ["/products"]\n        methods: [GET]\n`)
    // An editor or `cat > file` writing in place: the first part, a pause, the rest. The pause ends
    // as B notices the first part (its `changed` line, written before it waits out the settle
    // time), so on any machine's pace B has seen the part when the rest comes.
    const whole = `${rule}        paths: ["/products"]\n        methods: [GET, POST]\n`
    let rest = false
    const callee = await startCallee({ authzPolicy: path }, (event) => {
      if (event !== "authz-policy-changed" || rest) return
      rest = true
      writeFileSync(path, whole)
    })
    const a = await startCaller([callee], storefront)
    writeFileSync(path, rule)
    await callee.until(() => callee.logged.filter((l) => l.event === "authz-policy-loaded").length >= 2, "B to load a new policy")
    // The version B saw was skipped, not taken: what it applied is the whole.
    expect(callee.logged.filter((l) => l.event === "authz-policy-loaded").at(-1)).toMatchObject({ skipped: "1" })
    expectForbidden(await call(a.outboundPort, { method: "DELETE", path: "/products" }), "DELETE, which only the first part allowed")
    expectForbidden(await call(a.outboundPort, { path: "/orders" }), "another path, which only the first part allowed")
    expect((await call(a.outboundPort, { method: "POST", path: "/products", body: "{}" })).status).toBe(200)
    expect(await metric(callee.b, /^iip_mesh_authz_policy_reloads_total\{result="ok"\}/)).toBe(1)
  })

  it("a sidecar does not start with a policy file that is not a policy", async () => {
    writeFileSync(join(dir, "policy.json"), JSON.stringify({ services: { catalog: { default: "nobody" } } }))
    await expect(startCallee({ authzPolicy: join(dir, "policy.json") })).rejects.toThrow(/services\.catalog\.default: expected one of allow-all, mesh-authenticated, deny/)
  })
})

describe("x-iip-mesh-client-id cannot be spoofed", () => {
  const spoofed = `spiffe://${td}/ns/shop/sa/admin`

  it("by the calling app through its sidecar: the far app sees the verified identity, or nothing without one", async () => {
    const callee = await startCallee({})
    const verified = await startCaller([callee], storefront)
    const headers = { host: "catalog", [CLIENT_ID]: spoofed, "X-IIP-Mesh-Client-Id": spoofed }
    const withIdentity = echoed(await call(verified.outboundPort, { path: "/who", headers }))
    expect(withIdentity.headers[CLIENT_ID]).toBe(storefront)
    expect(withIdentity.rawHeaders.filter((_, i) => i % 2 === 0 && withIdentity.rawHeaders[i]!.toLowerCase() === CLIENT_ID)).toHaveLength(1)
    const anonymous = await startCaller([callee], undefined)
    expect(echoed(await call(anonymous.outboundPort, { path: "/who", headers })).headers[CLIENT_ID]).toBeUndefined()
  })

  it("by a peer, in the envelope's headers or in the plain __http_hdr__ query", async () => {
    const callee = await startCallee({})
    callee.identity = reports
    const mesh = startClient(cleanup, callee.b.sidecar.inbound.port)
    const meta = new Map([[":method", "GET"], [":authority", "catalog"], ["http-headers", JSON.stringify([[CLIENT_ID, spoofed], ["X-Iip-Mesh-Client-ID", spoofed]])]])
    const reply = await mesh.stream("/who", Buffer.alloc(0), { meta, timeoutMs: 5000 })
    const chunks: Array<Buffer> = [Buffer.from(reply.data)]
    for await (const chunk of reply.stream ?? []) chunks.push(Buffer.from(chunk))
    expect((JSON.parse(Buffer.concat(chunks).toString()) as { headers: Record<string, string> }).headers[CLIENT_ID]).toBe(reports)

    const plain = startClient(cleanup, callee.b.sidecar.inbound.port, { mesh: false })
    const arg = Buffer.from(JSON.stringify({ "X-Iip-Mesh-Client-Id": [spoofed] }), "utf8").toString("base64url")
    const answer = await plain.call(`/who?__http_hdr__=${arg}`, "{}", { timeoutMs: 5000 })
    expect((JSON.parse(Buffer.from(answer).toString()) as { headers: Record<string, string> }).headers[CLIENT_ID]).toBeUndefined()
    expect(callee.app.seen).toHaveLength(2)
  })
})

describe("the authz-denied log line", () => {
  it("at most 20 per 10 s, the rest counted in the next; every value sanitized; the query never logged", () => {
    const lines: Array<Record<string, unknown>> = []
    let now = 1_000_000
    const metrics = makeMetrics()
    const policy = compilePolicy({ services: { catalog: { rules: [{ from: [storefront], paths: ["/products"] }] } } }, "catalog", td)
    const gate = new InboundAuthorization({
      service: "catalog",
      localIdentity: `spiffe://${td}/svc/catalog`,
      policy: () => policy,
      metrics,
      log: (event, fields) => lines.push({ event, ...fields }),
      now: () => now
    })
    expect(gate.check(storefront, "GET", "/products?x=1", "127.0.0.1:1")).toBeUndefined()
    for (let i = 0; i < 25; i++) {
      const denied = gate.check(reports, "GET", `/admin/${i}?token=s3cret`, "127.0.0.1:1")
      expect(denied).toMatchObject({ _tag: "Failure", code: "forbidden", processed: true })
    }
    expect(lines).toHaveLength(20)
    expect(lines.some((l) => "suppressedBefore" in l)).toBe(false)
    now += 10_000
    gate.check(undefined, "GET\r\n", "/a\u001b[2J\u2028b?token=s3cret", "127.0.0.1:1\n")
    expect(lines).toHaveLength(21)
    const last = lines.at(-1)!
    expect(last).toMatchObject({ event: "authz-denied", caller: "none (no verified identity)", reason: "unauthenticated", suppressedBefore: 5 })
    expect(JSON.stringify(lines)).not.toContain("s3cret")
    expect(JSON.stringify(last)).not.toMatch(/[\u0000-\u001f\u2028]/)
    expect(last.method).toBe("GET\\r\\n")
  })
})
