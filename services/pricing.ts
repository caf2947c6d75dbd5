// Demo service "pricing": a price per product id. Runs as several instances (INSTANCE names
// each), so the storefront shows how the mesh spreads calls by weight.
import { serve } from "./serve.ts"

const instance = process.env.INSTANCE ?? "pricing"
const base: Record<number, number> = { 1: 9.5, 2: 14, 3: 39.9, 4: 4.25 }

serve("pricing", async (_req, url) => {
  if (url.pathname !== "/prices") return { status: 404, body: JSON.stringify({ error: "not found" }) }
  const ids = (url.searchParams.get("ids") ?? "").split(",").map(Number).filter((id) => id in base)
  return { body: JSON.stringify({ instance, prices: Object.fromEntries(ids.map((id) => [id, base[id]])) }) }
})
