// Demo service "catalog": the products on sale. Knows nothing of the mesh.
import { serve } from "./serve.ts"

const products = [
  { id: 1, name: "Espresso cup", category: "kitchen" },
  { id: 2, name: "Linen towel", category: "kitchen" },
  { id: 3, name: "Desk lamp", category: "office" },
  { id: 4, name: "Notebook", category: "office" }
]

serve("catalog", async (_req, url) => {
  if (url.pathname === "/products") return { body: JSON.stringify(products) }
  const match = /^\/products\/(\d+)$/.exec(url.pathname)
  const product = match === null ? undefined : products.find((p) => p.id === Number(match[1]))
  return product === undefined ? { status: 404, body: JSON.stringify({ error: "no such product" }) } : { body: JSON.stringify(product) }
})
