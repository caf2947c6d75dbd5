// `npm start` is `iip-mesh demo`: the demo services come up behind their sidecars, the storefront
// page is served with data from catalog and pricing through the mesh, pricing calls follow the
// 3:1 weights, the sidecars speak mutual TLS with the certificates the demo's issuer gave them, and
// SIGINT stops everything with exit 0, leaving no service process behind.
import { type ChildProcess, spawn } from "node:child_process"
import * as https from "node:https"
import { readFileSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join, resolve } from "node:path"
import { randomBytes } from "node:crypto"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { readUntil } from "../support/iipRaw.ts"

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
    await new Promise<void>((up, failed) => {
      let out = ""
      demo.stdout!.on("data", (chunk: Buffer) => {
        out += chunk.toString()
        if (out.includes("stop      Ctrl-C")) up()
      })
      demo.once("exit", (code) => failed(new Error(`demo exited with ${code} before it was up`)))
    })
    ready = JSON.parse(readFileSync(readyFile, "utf8")) as Ready
  }, 30_000)

  afterAll(() => {
    if (demo.exitCode === null) demo.kill("SIGKILL")
    rmSync(readyFile, { force: true })
  })

  it("writes the ready file with the entry URL and every sidecar's admin URLs, the dashboard on the store's control listener", async () => {
    expect(ready.entry).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/$/)
    expect(ready.admins).toHaveLength(4)
    expect(ready.controls).toHaveLength(4)
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
    expect(metrics).toMatch(/^iip_mesh_issuer_signed_total\{proof="join"\} 4$/m)
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
    const api = (await response.json()) as { products: Array<{ name: string }> }
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
    expect(spans.some((s) => s.service === "pricing" && s.kind === "server")).toBe(true)
  })

  it("spreads pricing calls 3:1 over its two instances", async () => {
    const seen: Record<string, number> = {}
    for (let i = 0; i < 40; i++) {
      const api = (await (await fetch(`${ready.entry}api/products`)).json()) as { pricedBy: string }
      seen[api.pricedBy] = (seen[api.pricedBy] ?? 0) + 1
    }
    // p2c draws by weight (3:1) and moves a request only for a clear difference in latency, so
    // the split follows the weights without being exact.
    const a = seen["pricing-a (weight 3)"] ?? 0
    const b = seen["pricing-b (weight 1)"] ?? 0
    expect(a + b).toBe(40)
    expect(a).toBeGreaterThan(b)
    expect(b).toBeGreaterThan(0)
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
    expect(mesh.services.pricing!.map((e) => e.weight).sort()).toStrictEqual([1, 3])
  })

  it("stops on SIGINT with exit 0 and leaves no service process behind", async () => {
    demo.kill("SIGINT")
    expect(await exited).toBe(0)
    expect(ready.pids.filter(alive)).toStrictEqual([])
  }, 20_000)
})
