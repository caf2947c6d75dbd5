// Demo service "catalog": the products on sale. Knows nothing of the mesh. With PRICES_FROM
// (the local demo: `pricing`), it prices its list through its own sidecar, so a request crosses
// three sidecars (storefront -> catalog -> pricing) and a canary can be seen following it.
import { callService, contextOf, serve, version } from "./serve.ts"

const instance = process.env.INSTANCE ?? "catalog"
const pricesFrom = process.env.PRICES_FROM

const products = [
  { id: 1, name: "Espresso cup", category: "kitchen" },
  { id: 2, name: "Linen towel", category: "kitchen" },
  { id: 3, name: "Desk lamp", category: "office" },
  { id: 4, name: "Notebook", category: "office" }
]

serve("catalog", async (req, url) => {
  if (url.pathname === "/products") {
    if (pricesFrom === undefined) return { body: JSON.stringify(products) }
    // The request's context (trace, baggage, deadline) goes on with the call, as an instrumented app's does.
    const priced = (await callService(pricesFrom, `/prices?ids=${products.map((p) => p.id).join(",")}`, contextOf(req))) as {
      readonly instance: string
      readonly version: string
      readonly prices: Record<string, number>
    }
    return {
      body: JSON.stringify({
        catalog: { instance, version },
        pricing: { instance: priced.instance, version: priced.version },
        products: products.map((p) => ({ ...p, price: priced.prices[p.id] ?? null }))
      })
    }
  }
  const match = /^\/products\/(\d+)$/.exec(url.pathname)
  const product = match === null ? undefined : products.find((p) => p.id === Number(match[1]))
  return product === undefined ? { status: 404, body: JSON.stringify({ error: "no such product" }) } : { body: JSON.stringify(product) }
})
