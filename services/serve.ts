// Shared start-up of the demo services: listen on PORT (0 picks one), print one JSON line with
// the port, stop cleanly on SIGTERM/SIGINT, and exit when stdin closes (so a demo that dies
// leaves no service behind). A line `{"sidecar":"http://HOST:PORT"}` on stdin says where this
// service's sidecar takes its calls (the demo starts the sidecar after the app, which it needs
// the port of); SIDECAR_URL says it otherwise.
import { randomBytes } from "node:crypto"
import * as http from "node:http"
import type * as net from "node:net"
import type * as stream from "node:stream"

export type Route = (req: http.IncomingMessage, url: URL) => Promise<{ readonly status?: number; readonly type?: string; readonly body: string }>

/** Takes an HTTP/1.1 Upgrade request (a WebSocket) the service answers itself; without one, upgrades are refused. */
export type Upgrade = (req: http.IncomingMessage, socket: stream.Duplex, head: Buffer) => void

export const serve = (service: string, route: Route, upgrade?: Upgrade): void => {
  const server = http.createServer((req, res) => {
    const url = new URL(req.url ?? "/", "http://localhost")
    route(req, url).then(
      ({ status = 200, type = "application/json", body }) => {
        res.writeHead(status, { "content-type": type, "content-length": Buffer.byteLength(body) })
        res.end(body)
      },
      (error: unknown) => {
        const body = JSON.stringify({ error: error instanceof Error ? error.message : String(error) })
        res.writeHead(502, { "content-type": "application/json", "content-length": Buffer.byteLength(body) })
        res.end(body)
      }
    )
  })
  if (upgrade !== undefined) server.on("upgrade", upgrade)
  server.listen(Number(process.env.PORT ?? 0), process.env.HOST ?? "127.0.0.1", () => {
    const port = (server.address() as net.AddressInfo).port
    process.stdout.write(`${JSON.stringify({ event: "listening", service, port })}\n`)
  })
  const stop = () => server.close(() => process.exit(0))
  process.once("SIGTERM", stop)
  process.once("SIGINT", stop)
  followStdin(stop)
}

/**
 * With EXIT_WITH_STDIN=1 (the demo), calls `stop` when stdin closes and takes the sidecar's
 * address from a `{"sidecar":"http://HOST:PORT"}` line on it. For a service that does not listen
 * through `serve` (catalog, an Effect RPC server).
 */
export const followStdin = (stop: () => void): void => {
  if (process.env.EXIT_WITH_STDIN !== "1") return
  process.stdin.once("end", stop)
  let pending = ""
  process.stdin.setEncoding("utf8")
  process.stdin.on("data", (chunk: string) => {
    pending = (pending + chunk).slice(-4096)
    const lines = pending.split("\n")
    pending = lines.pop()!
    for (const line of lines) {
      try {
        const told = JSON.parse(line) as { sidecar?: unknown }
        if (typeof told.sidecar === "string") sidecarUrl = told.sidecar
      } catch {
        // Not a line for us.
      }
    }
  })
}

let sidecarUrl = process.env.SIDECAR_URL ?? "http://127.0.0.1:4140"

/** Where this service's sidecar takes its calls now (it may be told after start-up, see followStdin). */
export const currentSidecar = (): string => sidecarUrl

/** This instance's version label (the demo's canary runs v2 instances beside v1). */
export const version = process.env.VERSION ?? "v1"

/**
 * Headers an instrumented app passes from its request to the calls it makes for it; x-canary too,
 * as an app passes on the headers its routes match (the demo's canary).
 */
const carried = ["traceparent", "tracestate", "baggage", "iip-timeout", "x-canary"]

/** A request's headers: node:http's or effect/http's (an RPC handler's). */
export type IncomingHeaders = Readonly<Record<string, string | ReadonlyArray<string> | undefined>>

/** The trace a request's context belongs to (what the demo page shows: find it on the dashboard). */
export const traceIdOf = (context: Record<string, string>): string => context.traceparent?.split("-")[1] ?? ""

/**
 * The headers to pass on for one incoming request (its headers), as a traced app would: its trace context (or a
 * new trace's, when the request came without one, so the app's calls share one trace) and deadline.
 */
export const contextOf = (incoming: IncomingHeaders): Record<string, string> => {
  const headers: Record<string, string> = {}
  for (const name of carried) {
    const value = incoming[name]
    if (typeof value === "string") headers[name] = value
  }
  headers.traceparent ??= `00-${randomBytes(16).toString("hex")}-${randomBytes(8).toString("hex")}-01`
  return headers
}

/** Calls another service through this service's sidecar: plain HTTP, the service named by Host. */
export const callService = (service: string, path: string, context: Record<string, string> = {}): Promise<unknown> =>
  new Promise((resolve, reject) => {
    const sidecar = new URL(sidecarUrl)
    const req = http.request({ host: sidecar.hostname, port: sidecar.port, path, headers: { ...context, host: service } }, (res) => {
      let text = ""
      res.setEncoding("utf8")
      res.on("data", (chunk: string) => (text += chunk))
      res.on("end", () => {
        if ((res.statusCode ?? 500) >= 400) return reject(new Error(`${service}${path}: ${res.statusCode} ${text}`))
        try {
          resolve(JSON.parse(text))
        } catch {
          reject(new Error(`${service}${path}: not JSON`))
        }
      })
    })
    req.on("error", reject)
    req.end()
  })
