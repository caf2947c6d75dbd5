// One hop of a bare Node relay pair (nodeRelays.ts starts two, B in front of the app, A in front of
// B, as the sidecar bench's relay-bytes and relay-http paths): what a Node process costs in a
// sidecar's place with none of the sidecar's layers, so the added latency of each layer can be
// read off against it in the same run.
//   node nodeRelay.mjs bytes HOST:PORT   every accepted connection gets its own upstream socket;
//                                        'data' -> write both ways, TCP_NODELAY, no parsing
//   node nodeRelay.mjs http HOST:PORT    a plain reverse proxy: node:http server, keep-alive
//                                        http.Agent to the next hop, bodies streamed both ways
// Prints {"event":"relay-ready","listen":"127.0.0.1:PORT"} once it listens. Not part of the
// sidecar: plain Node and plain JavaScript, as stallProbe.mjs is, so no TypeScript stripper loads.
import * as http from "node:http"
import * as net from "node:net"

const HOST = "127.0.0.1"
/** An idle connection (either side) is closed after this long: the bench's keep-alive is 60 s. */
const IDLE_MS = 60_000

const [kind, next] = process.argv.slice(2)
const colon = next?.lastIndexOf(":") ?? -1
const nextHost = next?.slice(0, colon)
const nextPort = Number(next?.slice(colon + 1))
if ((kind !== "bytes" && kind !== "http") || colon <= 0 || !Number.isInteger(nextPort) || nextPort <= 0 || nextPort > 65_535) {
  process.stderr.write("usage: nodeRelay.mjs bytes|http HOST:PORT\n")
  process.exit(2)
}

/** `from`'s bytes written to `to`; `from` paused while `to` is over its high-water mark (a budget per direction). */
const forward = (from, to) => {
  from.on("data", (chunk) => {
    if (!to.write(chunk)) from.pause()
  })
  to.on("drain", () => from.resume())
  from.on("end", () => to.end())
}

const bytesRelay = () =>
  net.createServer({ noDelay: true, allowHalfOpen: true }, (client) => {
    const upstream = net.connect({ host: nextHost, port: nextPort, noDelay: true, allowHalfOpen: true })
    const close = () => {
      client.destroy()
      upstream.destroy()
    }
    for (const socket of [client, upstream]) {
      socket.setTimeout(IDLE_MS, close)
      socket.on("error", close)
      socket.on("close", close)
    }
    forward(client, upstream)
    forward(upstream, client)
  })

// Hop-by-hop headers (RFC 9110 7.6.1) are the relay's own on each side, not forwarded.
const HOP_BY_HOP = new Set(["connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade"])
const endToEnd = (headers) => {
  const kept = {}
  for (const name in headers) if (!HOP_BY_HOP.has(name)) kept[name] = headers[name]
  return kept
}

const httpRelay = () => {
  const agent = new http.Agent({ keepAlive: true, keepAliveMsecs: IDLE_MS, maxSockets: 256, timeout: IDLE_MS })
  const server = http.createServer({ keepAliveTimeout: IDLE_MS, requestTimeout: IDLE_MS }, (req, res) => {
    const upstream = http.request({ host: nextHost, port: nextPort, method: req.method, path: req.url, headers: endToEnd(req.headers), agent, timeout: IDLE_MS })
    const fail = () => {
      if (res.headersSent) res.destroy()
      else res.writeHead(502, { "content-length": 0 }).end()
      upstream.destroy()
    }
    upstream.on("error", fail)
    upstream.on("timeout", fail)
    upstream.on("response", (answer) => {
      res.writeHead(answer.statusCode ?? 502, endToEnd(answer.headers))
      answer.on("error", () => res.destroy())
      answer.pipe(res)
    })
    req.on("error", () => upstream.destroy())
    req.pipe(upstream)
  })
  server.on("clientError", (_error, socket) => socket.destroy())
  return server
}

const server = kind === "bytes" ? bytesRelay() : httpRelay()
server.on("error", (error) => {
  process.stderr.write(`relay ${kind}: ${error.message}\n`)
  process.exit(1)
})
server.listen(0, HOST, () => process.stdout.write(`${JSON.stringify({ event: "relay-ready", listen: `${HOST}:${server.address().port}` })}\n`))
process.once("SIGTERM", () => process.exit(0))
