// Demo service "storefront": the page a person opens. It calls catalog (and, when catalog does not
// price its list itself, pricing) through its sidecar (SIDECAR_URL, the service named by Host) and
// shows which instances answered, of which version, and the trace the page's calls belong to. A
// request with `x-canary: yes` (or `?canary=yes`, for a browser) passes that header on to its
// calls, where the demo's routes send it, and everything it leads to, to the v2 instances (locally
// the routes file, demo.ts; on Kubernetes the pricing canary's HTTPRoute).
import type { IncomingMessage } from "node:http"
import { callService, contextOf, serve, traceIdOf } from "./serve.ts"

interface Product {
  readonly id: number
  readonly name: string
  readonly category: string
  readonly price?: number | null
}

interface Instance {
  readonly instance: string
  readonly version: string
}

const escape = (text: string) => text.replace(/[&<>"]/g, (c) => `&#${c.charCodeAt(0)};`)

const products = async (req: IncomingMessage, url: URL) => {
  // Every call in one trace: the request's context, or a new one.
  const context = contextOf(req)
  const canary = req.headers["x-canary"] === "yes" || url.searchParams.get("canary") === "yes"
  const asked = canary ? { ...context, "x-canary": "yes" } : context
  const listed = (await callService("catalog", "/products", asked)) as
    | Array<Product>
    | { readonly catalog: Instance; readonly pricing: Instance; readonly products: Array<Product> }
  const traceId = traceIdOf(context)
  if (!Array.isArray(listed)) return { canary, traceId, catalog: listed.catalog, pricing: listed.pricing, pricedBy: listed.pricing.instance, products: listed.products }
  // Pricing it here (catalog does not, as on Kubernetes): the header goes on to pricing, where an HTTPRoute may route by it.
  const priced = (await callService("pricing", `/prices?ids=${listed.map((p) => p.id).join(",")}`, asked)) as Instance & { readonly prices: Record<string, number> }
  return { canary, traceId, catalog: undefined, pricing: { instance: priced.instance, version: priced.version }, pricedBy: priced.instance, products: listed.map((p) => ({ ...p, price: priced.prices[p.id] ?? null })) }
}

serve("storefront", async (req, url) => {
  if (url.pathname === "/api/products") return { body: JSON.stringify(await products(req, url)) }
  if (url.pathname !== "/") return { status: 404, body: JSON.stringify({ error: "not found" }) }
  const { canary, traceId, catalog, pricing, products: rows } = await products(req, url)
  const items = rows.map((p) => `<tr><td>${escape(p.name)}</td><td>${escape(p.category)}</td><td>${p.price ?? "-"}</td></tr>`).join("")
  const from = catalog === undefined ? "<b>catalog</b>" : `<b>${escape(catalog.instance)} (${escape(catalog.version)})</b>`
  const html = `<!doctype html><meta charset="utf-8"><title>iip-mesh demo store</title>
<h1>iip-mesh demo store${canary ? " (canary)" : ""}</h1><p>Products from ${from}, prices from <b>${escape(pricing.instance)}</b> (${escape(pricing.version)}) (reload to see the weights at work).</p>
<table border="1" cellpadding="4"><tr><th>product</th><th>category</th><th>price</th></tr>${items}</table>
<p>Trace <code>${escape(traceId)}</code> (the dashboard's traces show it across every sidecar). ${canary ? `<a href="/">Back to the stable versions</a>` : `<a href="/?canary=yes">See the canary</a>: the header <code>x-canary: yes</code> sends the whole page's calls to v2.`}</p>`
  return { type: "text/html; charset=utf-8", body: html }
})
