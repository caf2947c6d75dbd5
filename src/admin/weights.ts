// Run-time weight overrides through the admin API: `PUT /mesh/<service>/<host:port>/weight` with a
// weight (a bare number or {"weight": n}, 0..1000), `DELETE` to return to discovery's weight. The
// registry's balancer keeps the override across discovery updates.
import type * as http from "node:http"
import type { Sidecar } from "../sidecar/sidecar.ts"
import { json, smallBody } from "./respond.ts"

export const WEIGHT_PATH = /^\/mesh\/([a-z0-9-]+)\/([^/]+)\/weight$/

export const weightOverride = async (sidecar: Sidecar, req: http.IncomingMessage, res: http.ServerResponse, service: string, address: string) => {
  if (req.method !== "PUT" && req.method !== "DELETE") return json(res, 405, { error: "method_not_allowed", allowed: ["PUT", "DELETE"] })
  let weight: number | undefined = undefined
  if (req.method === "PUT") {
    const text = await smallBody(req, 1024)
    let parsed: unknown = undefined
    try {
      parsed = text === undefined ? undefined : JSON.parse(text)
    } catch {
      parsed = undefined
    }
    const value = typeof parsed === "object" && parsed !== null ? (parsed as { weight?: unknown }).weight : parsed
    if (typeof value !== "number" || !Number.isInteger(value) || value < 0 || value > 1000) {
      return json(res, 400, { error: "bad_weight", message: "send a weight from 0 to 1000, as 3 or {\"weight\": 3}" })
    }
    weight = value
  }
  if (!sidecar.registry.overrideWeight(service, address, weight)) return json(res, 404, { error: "no_such_endpoint", service, address })
  json(res, 200, { service, address, weight: weight ?? "from discovery" })
}
