// Demo service "storefront": the page a person opens. It calls catalog and pricing through its
// sidecar (SIDECAR_URL, the service named by Host) and shows which pricing instance answered.
import type { IncomingMessage } from "node:http"
import { callService, contextOf, serve } from "./serve.ts"

interface Product {
  readonly id: number
  readonly name: string
  readonly category: string
}

const escape = (text: string) => text.replace(/[&<>"]/g, (c) => `&#${c.charCodeAt(0)};`)

const products = async (req: IncomingMessage) => {
  // Both calls in one trace: the request's context, or a new one.
  const context = contextOf(req)
  const list = (await callService("catalog", "/products", context)) as Array<Product>
  const priced = (await callService("pricing", `/prices?ids=${list.map((p) => p.id).join(",")}`, context)) as {
    readonly instance: string
    readonly prices: Record<string, number>
  }
  return { pricedBy: priced.instance, products: list.map((p) => ({ ...p, price: priced.prices[p.id] ?? null })) }
}

serve("storefront", async (req, url) => {
  if (url.pathname === "/api/products") return { body: JSON.stringify(await products(req)) }
  if (url.pathname !== "/") return { status: 404, body: JSON.stringify({ error: "not found" }) }
  const { pricedBy, products: rows } = await products(req)
  const items = rows.map((p) => `<tr><td>${escape(p.name)}</td><td>${escape(p.category)}</td><td>${p.price ?? "-"}</td></tr>`).join("")
  const html = `<!doctype html><meta charset="utf-8"><title>iip-mesh demo store</title>
<h1>iip-mesh demo store</h1><p>Products from <b>catalog</b>, prices from <b>${escape(pricedBy)}</b> (reload to see the weights at work).</p>
<table border="1" cellpadding="4"><tr><th>product</th><th>category</th><th>price</th></tr>${items}</table>`
  return { type: "text/html; charset=utf-8", body: html }
})
