// Demo service "pricing": a price per product id. Runs as several instances (INSTANCE names
// each, VERSION their version), so the storefront shows how the mesh spreads calls by weight and
// where a canary went.
import { serve, version } from "./serve.ts"

const instance = process.env.INSTANCE ?? "pricing"
const base: Record<number, number> = { 1: 9.5, 2: 14, 3: 39.9, 4: 4.25 }
// v2 is the canary: 10 % off, so the page shows which version priced it.
const factor = version === "v2" ? 0.9 : 1

serve("pricing", async (_req, url) => {
  if (url.pathname !== "/prices") return { status: 404, body: JSON.stringify({ error: "not found" }) }
  const ids = (url.searchParams.get("ids") ?? "").split(",").map(Number).filter((id) => id in base)
  return { body: JSON.stringify({ instance, version, prices: Object.fromEntries(ids.map((id) => [id, Math.round(base[id]! * factor * 100) / 100])) }) }
})
