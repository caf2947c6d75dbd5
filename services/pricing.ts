// Demo service "pricing": a price per product id. Runs as several instances (INSTANCE names
// each, VERSION their version), so the storefront shows how the mesh spreads calls by weight and
// where a canary went. GET /live is a WebSocket that says, once a second, how many price lists
// this instance has served: the storefront's page shows it live, the socket carried through both
// sidecars (an upgrade over the mesh).
import { WebSocketServer } from "ws"
import { serve, version } from "./serve.ts"

const instance = process.env.INSTANCE ?? "pricing"
const base: Record<number, number> = { 1: 9.5, 2: 14, 3: 39.9, 4: 4.25 }
// v2 is the canary: 10 % off, so the page shows which version priced it.
const factor = version === "v2" ? 0.9 : 1
let served = 0

/** Live sockets are few (one per open page); past this many a new one is refused (1013, try again later). */
const maxLiveSockets = 100
const live = new WebSocketServer({ noServer: true, maxPayload: 4096 })
live.on("connection", (socket) => {
  if (live.clients.size > maxLiveSockets) return socket.close(1013, "too many live sockets")
  const tell = () => socket.send(JSON.stringify({ instance, version, served }))
  tell()
  const ticker = setInterval(tell, 1000)
  socket.once("close", () => clearInterval(ticker))
  socket.on("error", () => socket.terminate())
})

serve(
  "pricing",
  async (_req, url) => {
    if (url.pathname !== "/prices") return { status: 404, body: JSON.stringify({ error: "not found" }) }
    const ids = (url.searchParams.get("ids") ?? "").split(",").map(Number).filter((id) => id in base)
    served++
    return { body: JSON.stringify({ instance, version, prices: Object.fromEntries(ids.map((id) => [id, Math.round(base[id]! * factor * 100) / 100])) }) }
  },
  (req, socket, head) => {
    if (new URL(req.url ?? "/", "http://localhost").pathname !== "/live") return void socket.destroy()
    live.handleUpgrade(req, socket, head, (ws) => live.emit("connection", ws, req))
  }
)
