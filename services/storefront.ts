// Demo service "storefront": the page a person opens. It calls catalog and pricing through its
// sidecar (SIDECAR_URL, the service named by Host) and shows which pricing instance answered.
import { callService, serve } from "./serve.ts"

interface Product {
  readonly id: number
  readonly name: string
  readonly category: string
}

const escape = (text: string) => text.replace(/[&<>"]/g, (c) => `&#${c.charCodeAt(0)};`)

const products = async () => {
  const list = (await callService("catalog", "/products")) as Array<Product>
  const priced = (await callService("pricing", `/prices?ids=${list.map((p) => p.id).join(",")}`)) as {
    readonly instance: string
    readonly prices: Record<string, number>
  }
  return { pricedBy: priced.instance, products: list.map((p) => ({ ...p, price: priced.prices[p.id] ?? null })) }
}

serve("storefront", async (_req, url) => {
  if (url.pathname === "/api/products") return { body: JSON.stringify(await products()) }
  if (url.pathname !== "/") return { status: 404, body: JSON.stringify({ error: "not found" }) }
  const { pricedBy, products: rows } = await products()
  const items = rows.map((p) => `<tr><td>${escape(p.name)}</td><td>${escape(p.category)}</td><td>${p.price ?? "-"}</td></tr>`).join("")
  const html = `<!doctype html><meta charset="utf-8"><title>iip-mesh demo store</title>
<h1>iip-mesh demo store</h1><p>Products from <b>catalog</b>, prices from <b>${escape(pricedBy)}</b> (reload to see the weights at work).</p>
<table border="1" cellpadding="4"><tr><th>product</th><th>category</th><th>price</th></tr>${items}</table>`
  return { type: "text/html; charset=utf-8", body: html }
})
