// `npm start` is `iip-mesh demo`: the demo services come up behind their sidecars, the storefront
// page is served with data from catalog and pricing through the mesh, catalog being an Effect RPC
// service the storefront calls (streamed) in the request's trace (its typed errors reach a caller
// over the mesh, its GET /products still answers curl), pricing calls go to both v1 instances, the
// balancer holding them at their weights 3 and 1 (0 by override takes none), a page asked for with `x-canary: yes` is served by v2 at
// every hop (storefront -> catalog -> pricing) as one trace, the sidecars speak mutual TLS with the certificates the demo's issuer gave them, and
// SIGINT stops everything with exit 0, leaving no service process behind.
import * as NodeHttpClient from "@effect/platform-node/NodeHttpClient"
import * as Effect from "effect/Effect"
import * as HttpClient from "effect/http/HttpClient"
import * as HttpClientRequest from "effect/http/HttpClientRequest"
import * as Layer from "effect/Layer"
import * as RpcClient from "effect/rpc/RpcClient"
import * as RpcSerialization from "effect/rpc/RpcSerialization"
import { type ChildProcess, spawn } from "node:child_process"
import * as http from "node:http"
import * as https from "node:https"
import { readFileSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join, resolve } from "node:path"
import { randomBytes } from "node:crypto"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { WebSocket } from "ws"
import { CatalogRpcs, catalogRpcPath } from "../../services/catalogRpcs.ts"
import { CHILD_START_MS, holdsStarts } from "../support/childStart.ts"
import { readUntil, withTimeout } from "../support/iipRaw.ts"

const main = resolve(import.meta.dirname, "../../src/cli/main.ts")
const readyFile = join(tmpdir(), `iip-mesh-demo-${process.pid}.json`)

interface Ready {
  readonly entry: string
  readonly outbound: string
  readonly admins: ReadonlyArray<string>
  readonly controls: ReadonlyArray<string>
  readonly dashboard: string
  readonly pids: ReadonlyArray<number>
  readonly issuer: string
}

interface TraceSpan {
  readonly spanId: string
  readonly parentSpanId: string | null
  readonly service: string
  readonly kind: string
  readonly name: string
  readonly attributes: Record<string, unknown>
}

/** GET `path` of `service` through the store's sidecar, as curl with a Host header would. */
const viaOutbound = (outbound: string, service: string, path: string, headers: Record<string, string> = {}) =>
  new Promise<{ status: number; body: string }>((done, failed) => {
    const at = new URL(outbound)
    http.get({ host: at.hostname, port: at.port, path, headers: { ...headers, host: service } }, (response) => {
      let body = ""
      response.setEncoding("utf8")
      response.on("data", (chunk: string) => (body += chunk))
      response.on("end", () => done({ status: response.statusCode ?? 0, body }))
    }).on("error", failed)
  })

const alive = (pid: number) => {
  try {
    process.kill(pid, 0)
    return true
  } catch {
    return false
  }
}

describe("iip-mesh demo", () => {
  let demo: ChildProcess
  let ready: Ready
  let exited: Promise<number | null>

  beforeAll(async () => {
    demo = spawn(process.execPath, [main, "demo", "--ready-file", readyFile], { stdio: ["ignore", "pipe", "inherit"] })
    exited = new Promise((done) => demo.once("exit", (code) => done(code)))
    const up = new Promise<void>((done, failed) => {
      let out = ""
      demo.stdout!.on("data", (chunk: Buffer) => {
        out += chunk.toString()
        if (out.includes("stop      Ctrl-C")) done()
      })
      demo.once("exit", (code) => failed(new Error(`demo exited with ${code} before it was up`)))
    })
    await withTimeout(up, CHILD_START_MS, "the demo to be up")
    ready = JSON.parse(readFileSync(readyFile, "utf8")) as Ready
  }, holdsStarts(1, 5000))

  afterAll(() => {
    if (demo.exitCode === null) demo.kill("SIGKILL")
    rmSync(readyFile, { force: true })
  })

  it("writes the ready file with the entry URL and every sidecar's admin URLs, the dashboard on the store's control listener", async () => {
    expect(ready.entry).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/$/)
    expect(ready.admins).toHaveLength(7)
    expect(ready.controls).toHaveLength(7)
    expect(ready.dashboard).toBe(`${ready.controls[0]}/`)
    const page = await fetch(ready.dashboard)
    expect(page.status).toBe(200)
    expect(page.headers.get("content-type")).toContain("text/html")
    expect(ready.pids.every(alive)).toBe(true)
  })

  it("gives every sidecar a certificate from its in-process issuer (join tokens), none refused", async () => {
    const metrics = await new Promise<string>((done, failed) =>
      https.get(`${ready.issuer}/metrics`, { rejectUnauthorized: false }, (response) => {
        let text = ""
        response.on("data", (chunk: Buffer) => (text += chunk.toString()))
        response.on("end", () => done(text))
      }).on("error", failed))
    expect(metrics).toMatch(/^iip_mesh_issuer_signed_total\{proof="join"\} 7$/m)
    expect(metrics).not.toMatch(/^iip_mesh_issuer_refused_total\{[^}]*\} [1-9]/m)
  })

  it("serves the storefront page with products from catalog and prices from pricing", async () => {
    const page = await (await fetch(ready.entry)).text()
    expect(page).toContain("Espresso cup")
    expect(page).toMatch(/prices from <b>pricing-[ab]/)
    const api = (await (await fetch(`${ready.entry}api/products`)).json()) as { products: Array<{ price: number | null }> }
    expect(api.products).toHaveLength(4)
    expect(api.products.every((p) => typeof p.price === "number")).toBe(true)
  })

  it("storefront gets its products from catalog's Effect RPC service (streamed) over the mesh, in the request's trace", async () => {
    const traceId = randomBytes(16).toString("hex")
    const response = await fetch(`${ready.entry}api/products`, { headers: { traceparent: `00-${traceId}-${randomBytes(8).toString("hex")}-01` } })
    const api = (await response.json()) as { traceId: string; products: Array<{ name: string }> }
    expect(api.traceId).toBe(traceId)
    expect(api.products.map((p) => p.name)).toStrictEqual(["Espresso cup", "Linen towel", "Desk lamp", "Notebook"])
    const spansOf = async (): Promise<Array<TraceSpan>> => {
      const traces = await fetch(`${ready.controls[0]}/traces/${traceId}`)
      return traces.status === 200 ? ((await traces.json()) as { spans: Array<TraceSpan> }).spans : []
    }
    const isRpc = (span: TraceSpan) => String(span.attributes["url.path"] ?? "").startsWith("/rpc")
    const catalogServer = (spans: ReadonlyArray<TraceSpan>) => spans.find((s) => s.service === "catalog" && s.kind === "server" && isRpc(s))
    const complete = (spans: ReadonlyArray<TraceSpan>) => {
      const server = catalogServer(spans)
      return server !== undefined && spans.some((s) => s.parentSpanId === server.spanId) && spans.some((s) => s.service === "pricing" && s.kind === "server")
    }
    const { value: spans } = await readUntil(spansOf, complete, 5000)
    // The RPC's hop: the store's sidecar (client) -> catalog's sidecar (server) -> its call to the app.
    const server = catalogServer(spans)!
    expect(spans.find((s) => s.spanId === server.parentSpanId)).toMatchObject({ service: "storefront", kind: "client", attributes: { "iip_mesh.service": "catalog" } })
    expect(spans.find((s) => s.parentSpanId === server.spanId)).toMatchObject({ service: "catalog", kind: "client", attributes: { "iip_mesh.hop": "app" } })
    // Catalog's RPC handler prices through pricing in the same trace (the HTTP request's context passed on).
    expect(spans.some((s) => s.service === "catalog" && s.kind === "client" && s.attributes["iip_mesh.service"] === "pricing")).toBe(true)
    expect(spans.some((s) => s.service === "pricing" && s.kind === "server")).toBe(true)
  })

  it("catalog's RPC errors are typed across the mesh (GetProduct of an unknown id fails with ProductNotFound)", async () => {
    const viaSidecar = HttpClient.mapRequest(HttpClientRequest.setHeader("host", "catalog"))
    const protocol = RpcClient.layerProtocolHttp({ url: `${ready.outbound}${catalogRpcPath}`, transformClient: viaSidecar }).pipe(
      Layer.provide([NodeHttpClient.layerNodeHttp, RpcSerialization.layerNdjson])
    )
    const [found, missing] = await Effect.runPromise(
      Effect.gen(function*() {
        const client = yield* RpcClient.make(CatalogRpcs)
        return [yield* client.GetProduct({ id: 3 }), yield* Effect.flip(client.GetProduct({ id: 99 }))] as const
      }).pipe(Effect.scoped, Effect.provide(protocol))
    )
    expect(found.name).toBe("Desk lamp")
    expect(missing).toMatchObject({ _tag: "ProductNotFound", id: 99 })
  })

  it("catalog still answers curl's GET /products in plain JSON, priced, the canary's at v2", async () => {
    const stable = await viaOutbound(ready.outbound, "catalog", "/products")
    expect(stable.status).toBe(200)
    const list = JSON.parse(stable.body) as { catalog: { version: string }; pricing: { version: string }; products: Array<{ name: string; price: number }> }
    expect([list.catalog.version, list.pricing.version]).toStrictEqual(["v1", "v1"])
    expect(list.products.map((p) => p.name)).toStrictEqual(["Espresso cup", "Linen towel", "Desk lamp", "Notebook"])
    expect(list.products.every((p) => typeof p.price === "number")).toBe(true)
    const canary = JSON.parse((await viaOutbound(ready.outbound, "catalog", "/products", { "x-canary": "yes" })).body) as typeof list
    expect([canary.catalog.version, canary.pricing.version]).toStrictEqual(["v2", "v2"])
    expect(JSON.parse((await viaOutbound(ready.outbound, "catalog", "/products/2")).body)).toStrictEqual({ id: 2, name: "Linen towel", category: "kitchen" })
  })

  it("gets stock from inventory, a grpc-js service, over the mesh as gRPC in the page's trace", async () => {
    const traceId = randomBytes(16).toString("hex")
    const api = (await (await fetch(`${ready.entry}api/products`, { headers: { traceparent: `00-${traceId}-${randomBytes(8).toString("hex")}-01` } })).json()) as {
      inventory: { instance: string; version: string }
      products: Array<{ name: string; stock: number | null }>
    }
    expect(api.inventory).toStrictEqual({ instance: "inventory-1", version: "v1" })
    expect(api.products.map((p) => [p.name, p.stock])).toStrictEqual([["Espresso cup", 12], ["Linen towel", 0], ["Desk lamp", 4], ["Notebook", 57]])
    expect(await (await fetch(ready.entry)).text()).toContain("stock from <b>inventory-1</b> (v1, a gRPC service)")
    const spansOf = async (): Promise<Array<TraceSpan>> => {
      const traces = await fetch(`${ready.controls[0]}/traces/${traceId}`)
      return traces.status === 200 ? ((await traces.json()) as { spans: Array<TraceSpan> }).spans : []
    }
    const isGetStock = (span: TraceSpan) => span.attributes["rpc.method"] === "GetStock"
    const { value: spans } = await readUntil(spansOf, (all) => all.some((s) => s.service === "inventory" && s.kind === "server" && isGetStock(s)), 5000)
    const server = spans.find((s) => s.service === "inventory" && s.kind === "server" && isGetStock(s))!
    expect(server.attributes).toMatchObject({ "rpc.system": "grpc", "rpc.service": "demo.Inventory", "rpc.grpc.status_code": 0 })
    expect(spans.find((s) => s.spanId === server.parentSpanId)).toMatchObject({ service: "storefront", kind: "client" })
  })

  it("the page's live counter is a WebSocket through the mesh to pricing: its messages come through, and a close code comes back", async () => {
    expect(await (await fetch(ready.entry)).text()).toContain('new WebSocket((location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/live")')
    const socket = new WebSocket(`${ready.entry.replace("http://", "ws://")}live`)
    const messages: Array<{ instance: string; version: string; served: number }> = []
    const closed = new Promise<number>((done) => socket.once("close", (code) => done(code)))
    await new Promise<void>((two, failed) => {
      socket.on("message", (data: Buffer) => {
        messages.push(JSON.parse(data.toString()) as (typeof messages)[number])
        if (messages.length === 2) two()
      })
      socket.once("error", failed)
    })
    // Once a second from one pricing instance (stable: v1), the socket pinned to it.
    expect(new Set(messages.map((m) => m.instance)).size).toBe(1)
    expect(messages[0]!.instance).toMatch(/^pricing-[ab] /)
    expect(messages.every((m) => m.version === "v1" && Number.isInteger(m.served))).toBe(true)
    socket.close(4001, "page closed")
    expect(await closed).toBe(4001)
  })

  it("the live socket refuses what it was not made for: an upgrade to another path, and a message over its 4 KiB budget (1009)", async () => {
    const refused = await new Promise<string>((done) => {
      const socket = new WebSocket(`${ready.entry.replace("http://", "ws://")}elsewhere`)
      socket.once("open", () => done("opened"))
      socket.once("error", (error) => done(`refused: ${error.message}`))
    })
    expect(refused).toMatch(/^refused: /)
    const socket = new WebSocket(`${ready.entry.replace("http://", "ws://")}live`)
    const closed = new Promise<number>((done) => socket.once("close", (code) => done(code)))
    await new Promise<void>((open, failed) => {
      socket.once("open", open)
      socket.once("error", failed)
    })
    socket.send(Buffer.alloc(5000, 0x61))
    expect(await closed).toBe(1009)
    // The page's service goes on: a new live socket still gets pricing's count.
    const again = new WebSocket(`${ready.entry.replace("http://", "ws://")}live`)
    const first = await new Promise<string>((done, failed) => {
      again.once("message", (data: Buffer) => done(data.toString()))
      again.once("error", failed)
    })
    again.close()
    expect(JSON.parse(first)).toMatchObject({ version: "v1" })
  })

  it("prices through the two v1 pricing instances its sidecar holds at weights 3 and 1: both served, each as the balancer sent it, none at weight 0", async () => {
    // Catalog v1's sidecar (controls[1]) balances its pricing calls over the pricing sidecars
    // (controls[3]: pricing-a, weight 3; controls[4]: pricing-b, weight 1). How p2c shares calls
    // between weights 3 and 1 at equal latencies is test/balancer/pickers.test.ts's (exactly 3:1);
    // here the share also follows each instance's latency, which load moves at will (a CI run gave
    // 14:26). What holds under any load is checked: the weights as discovered, both instances
    // served, every call answered by the instance the balancer's own counts say it sent it to,
    // and a weight of 0 (an admin override) taking none.
    const inboundOf = async (control: string) => ((await (await fetch(`${control}/mesh`)).json()) as { inbound: string }).inbound
    const [addressA, addressB] = await Promise.all([inboundOf(ready.controls[3]!), inboundOf(ready.controls[4]!)])
    const catalogControl = ready.controls[1]!
    const pricingWeights = async () => {
      const mesh = (await (await fetch(`${catalogControl}/mesh`)).json()) as { services: Record<string, Array<{ address: string; weight: number }>> }
      return Object.fromEntries(mesh.services.pricing!.map((e) => [e.address, e.weight]))
    }
    expect(await pricingWeights()).toMatchObject({ [addressA]: 3, [addressB]: 1 })
    // Calls catalog v1's sidecar sent to each pricing endpoint (its own count, every status).
    const sentTo = async () => {
      const text = await (await fetch(`${ready.admins[1]}/metrics`)).text()
      const count = (address: string) => {
        const labels = `iip_mesh_requests_total{direction="outbound",service="pricing",endpoint="${address}",`
        return text.split("\n").filter((line) => line.startsWith(labels)).reduce((sum, line) => sum + Number(line.slice(line.lastIndexOf(" ") + 1)), 0)
      }
      return { a: count(addressA), b: count(addressB) }
    }
    const pricedBy = async () => ((await (await fetch(`${ready.entry}api/products`)).json()) as { pricedBy: string }).pricedBy
    const before = await sentTo()
    const seen = { "pricing-a (weight 3)": 0, "pricing-b (weight 1)": 0 } as Record<string, number>
    // 40 calls, then on until both are served: an instance p2c passed over for a second gets the
    // next call it is drawn for (its probe), so both are served within seconds whatever the latencies.
    const deadline = performance.now() + 15_000
    const bothServed = () => seen["pricing-a (weight 3)"]! > 0 && seen["pricing-b (weight 1)"]! > 0
    for (let calls = 0; calls < 40 || (!bothServed() && performance.now() < deadline); calls++) {
      const by = await pricedBy()
      seen[by] = (seen[by] ?? 0) + 1
    }
    const after = await sentTo()
    expect(Object.keys(seen).sort()).toStrictEqual(["pricing-a (weight 3)", "pricing-b (weight 1)"])
    expect(seen["pricing-a (weight 3)"]).toBeGreaterThan(0)
    expect(seen["pricing-b (weight 1)"]).toBeGreaterThan(0)
    expect({ a: after.a - before.a, b: after.b - before.b }).toStrictEqual({ a: seen["pricing-a (weight 3)"], b: seen["pricing-b (weight 1)"] })
    // Weight 0 for pricing-a, which the weights favour: every call goes to pricing-b, whatever the latencies.
    const override = (method: string, body?: string) => fetch(`${catalogControl}/mesh/pricing/${encodeURIComponent(addressA)}/weight`, { method, ...(body === undefined ? {} : { body }) })
    expect((await override("PUT", "0")).status).toBe(200)
    try {
      const byOverride: Array<string> = []
      for (let i = 0; i < 8; i++) byOverride.push(await pricedBy())
      expect(byOverride).toStrictEqual(Array.from({ length: 8 }, () => "pricing-b (weight 1)"))
    } finally {
      expect((await override("DELETE")).status).toBe(200)
    }
    expect(await pricingWeights()).toMatchObject({ [addressA]: 3, [addressB]: 1 })
  }, 30_000)

  it("x-canary: yes at the storefront sends the whole page to v2 (catalog and pricing), one trace; other pages stay on v1", async () => {
    interface Api {
      readonly traceId: string
      readonly catalog: { readonly version: string }
      readonly pricing: { readonly instance: string; readonly version: string }
      readonly products: ReadonlyArray<{ readonly price: number }>
    }
    for (let i = 0; i < 5; i++) {
      const canary = (await (await fetch(`${ready.entry}api/products`, { headers: { "x-canary": "yes" } })).json()) as Api
      expect([canary.catalog.version, canary.pricing.version, canary.pricing.instance]).toStrictEqual(["v2", "v2", "pricing-c (canary)"])
      const stable = (await (await fetch(`${ready.entry}api/products`)).json()) as Api
      expect([stable.catalog.version, stable.pricing.version]).toStrictEqual(["v1", "v1"])
    }
    const page = await (await fetch(`${ready.entry}?canary=yes`)).text()
    expect(page).toMatch(/Products from <b>catalog-2 \(v2\)<\/b>, prices from <b>pricing-c \(canary\)<\/b> \(v2\)/)
    // One trace across the three sidecars: the storefront's call routed by the canary route, catalog's by the baggage.
    const { traceId } = (await (await fetch(`${ready.entry}api/products`, { headers: { "x-canary": "yes" } })).json()) as Api
    const spans = (await (await fetch(`${ready.controls[0]}/traces/${traceId}`)).json()) as { spans: ReadonlyArray<{ kind: string; service: string; attributes: Record<string, unknown> }> }
    const routed = spans.spans.filter((span) => span.kind === "client" && span.attributes["iip_mesh.route"] !== undefined).map((span) => `${span.service}->${String(span.attributes["iip_mesh.service"])} ${String(span.attributes["iip_mesh.route"])} ${String(span.attributes["iip_mesh.subset"])}`)
    expect(routed.sort()).toStrictEqual(["catalog->pricing baggage v2", "storefront->catalog canary v2"])
  })

  it("its sidecars speak mutual TLS with each other: every handshake ok, none refused, no plain peer", async () => {
    const metrics = await Promise.all(ready.admins.map(async (admin) => (await fetch(`${admin}/metrics`)).text()))
    const all = metrics.join("\n")
    expect(all).toMatch(/^iip_mesh_tls_handshakes_total\{direction="outbound",result="ok"\} [1-9]/m)
    expect(all).toMatch(/^iip_mesh_tls_handshakes_total\{direction="inbound",result="ok"\} [1-9]/m)
    expect(all).not.toMatch(/^iip_mesh_tls_handshakes_total\{direction="[a-z]+",result="(?!ok")[^"]*"\} [1-9]/m)
    expect(all).not.toMatch(/^iip_mesh_plain_connections_total\{result="[a-z]+"\} [1-9]/m)
  })

  it("every sidecar's admin reports ready, and its control listener its view of the mesh", async () => {
    for (const admin of ready.admins) expect((await fetch(`${admin}/ready`)).status).toBe(200)
    expect((await fetch(`${ready.admins[0]}/mesh`)).status).toBe(404)
    const mesh = (await (await fetch(`${ready.controls[0]}/mesh`)).json()) as { services: Record<string, Array<{ weight: number }>> }
    expect(mesh.services.pricing!.map((e) => e.weight).sort()).toStrictEqual([1, 1, 3])
  })

  it("stops on SIGINT with exit 0 and leaves no service process behind", async () => {
    demo.kill("SIGINT")
    expect(await exited).toBe(0)
    expect(ready.pids.filter(alive)).toStrictEqual([])
  }, 20_000)
})
