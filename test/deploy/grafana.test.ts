// The Grafana dashboard shipped under deploy/grafana: every query it makes names metrics a real
// sidecar exports, with the labels it filters and groups by. Real sidecars (app <- catalog <-
// store) carry traffic with some 5xx answers and a mesh error, and their /metrics is scraped and
// parsed; the dashboard's PromQL is read for `iip_mesh_*` names, selector labels and `by (...)`
// labels. Also: the route and edge series carry the counts the golden metrics saw.
import { readFileSync } from "node:fs"
import { resolve } from "node:path"
import { afterEach, beforeEach, describe, expect, it } from "vitest"
import { Cleanup } from "../support/iipRaw.ts"
import { histogram, type MetricFamily, parsePrometheusText, value } from "../support/prometheusText.ts"
import { call, startAdmin, startMesh } from "../support/sidecarHarness.ts"

const dashboardFile = resolve(import.meta.dirname, "../../deploy/grafana/iip-mesh-dashboard.json")

interface Dashboard {
  readonly uid: string
  readonly panels: ReadonlyArray<{ readonly title: string; readonly targets: ReadonlyArray<{ readonly expr: string }> }>
  readonly templating: { readonly list: ReadonlyArray<{ readonly query?: unknown }> }
}

/** Every PromQL expression of the dashboard (panels and template variables). */
const expressions = (dashboard: Dashboard): Array<string> => [
  ...dashboard.panels.flatMap((p) => p.targets.map((t) => t.expr)),
  ...dashboard.templating.list.flatMap((v) => (typeof v.query === "object" && v.query !== null && "query" in v.query ? [String((v.query as { query: unknown }).query)] : []))
]

/** The metrics an expression names (histogram suffixes kept) with the labels its selectors and `by` clauses use. */
const references = (expr: string): Array<{ readonly metric: string; readonly labels: ReadonlyArray<string> }> => {
  const grouped = [...expr.matchAll(/by \(([^)]*)\)/g)].flatMap((m) => m[1]!.split(",").map((l) => l.trim()))
  return [...expr.matchAll(/\b(iip_mesh_[a-z_]+)(\{([^}]*)\})?/g)].map((m) => ({
    metric: m[1]!,
    labels: [...new Set([...[...(m[3] ?? "").matchAll(/(\w+)\s*(?:=~|!~|!=|=)/g)].map((l) => l[1]!), ...grouped])].filter((l) => l !== "le")
  }))
}

const familyOf = (families: ReadonlyMap<string, MetricFamily>, sample: string): MetricFamily | undefined =>
  families.get(sample) ?? families.get(sample.replace(/_(bucket|sum|count)$/, ""))

/** Families that exist but have no samples without a rare event (an ejection needs a failing endpoint, a refusal one that takes no connection). */
const RARE = new Set(["iip_mesh_endpoint_ejections_total", "iip_mesh_endpoint_refusals_total"])

let cleanup: Cleanup
beforeEach(() => {
  cleanup = new Cleanup()
})
afterEach(() => cleanup.run())

describe("the Grafana dashboard (deploy/grafana)", () => {
  it("queries only metrics and labels a sidecar exports", async () => {
    const dashboard = JSON.parse(readFileSync(dashboardFile, "utf8")) as Dashboard
    expect(dashboard.uid).toBe("iip-mesh-golden")
    const mesh = await startMesh(cleanup, (req, res) => {
      res.writeHead(req.url?.startsWith("/fail") === true ? 503 : 200)
      res.end()
    })
    for (let i = 0; i < 10; i++) await call(mesh.a.outboundPort, { path: i % 5 === 4 ? `/fail/${i}` : `/items/${i}`, headers: { host: "catalog" } })
    // A service nobody serves: a mesh error (no endpoint).
    await call(mesh.a.outboundPort, { path: "/", headers: { host: "gone" } })
    const texts = await Promise.all([mesh.a, mesh.b].map(async (s) => (await call(Number(new URL(await startAdmin(cleanup, s)).port), { path: "/metrics", headers: { host: "127.0.0.1" } })).body.toString()))
    const families = texts.map(parsePrometheusText)
    const merged = new Map<string, MetricFamily>()
    for (const f of families) {
      for (const [name, family] of f) merged.set(name, merged.has(name) ? { ...family, samples: [...merged.get(name)!.samples, ...family.samples] } : family)
    }
    const problems: Array<string> = []
    const used = new Set<string>()
    for (const expr of expressions(dashboard)) {
      for (const { metric, labels } of references(expr)) {
        const family = familyOf(merged, metric)
        if (family === undefined) {
          problems.push(`${metric}: not exported`)
          continue
        }
        used.add(family.name)
        if (family.samples.length === 0) {
          if (!RARE.has(family.name)) problems.push(`${metric}: no samples after traffic`)
          continue
        }
        for (const label of labels) if (!family.samples.some((s) => label in s.labels)) problems.push(`${metric}: no label ${label}`)
      }
    }
    expect(problems).toStrictEqual([])
    expect([...used].sort()).toContain("iip_mesh_route_requests_total")
    // The route and edge series hold what went through: 8 successes and 2 failures on /items, /fail.
    const b = families[1]!
    expect(value(b, "iip_mesh_route_requests_total", { service: "catalog", route: "/items/{id}", outcome: "success" })).toBe(8)
    expect(value(b, "iip_mesh_route_requests_total", { service: "catalog", route: "/fail/{id}", outcome: "failure" })).toBe(2)
    expect(histogram(b, "iip_mesh_route_request_duration_seconds", { service: "catalog", route: "/items/{id}" }).count).toBe(8)
    const a = families[0]!
    expect(value(a, "iip_mesh_edge_requests_total", { caller: "store", callee: "catalog", outcome: "failure" })).toBe(2)
    expect(value(a, "iip_mesh_edge_requests_total", { caller: "store", callee: "gone", outcome: "failure" })).toBe(1)
  })
})
