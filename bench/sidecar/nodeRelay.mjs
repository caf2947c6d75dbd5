// One hop of a bare Node relay pair (nodeRelays.ts starts two, B in front of the app, A in front of
// B, as the sidecar bench's relay-bytes and relay-http paths): what a Node process costs in a
// sidecar's place with none of the sidecar's layers, so the added latency of each layer can be
// read off against it in the same run.
//   node nodeRelay.mjs bytes HOST:PORT   every accepted connection gets its own upstream socket;
//                                        'data' -> write both ways, TCP_NODELAY, no parsing
//   node nodeRelay.mjs http HOST:PORT    a plain reverse proxy: node:http server, keep-alive
//                                        http.Agent to the next hop, bodies streamed both ways
//   ... bytes HOST:PORT --tls-in DIR     the byte relay taking TLS on its listening side (relay-tls's B)
//   ... bytes HOST:PORT --tls-out DIR    the byte relay speaking TLS to the next hop (relay-tls's A)
//     DIR holds key.pem, chain.pem and bundle.pem (credentials.ts); the TLS is the mesh's mTLS as
//     src/iip/tls.ts and src/sidecar/meshTls.ts set it up: TLS 1.3, the mesh's cipher suites, a
//     client certificate required and verified on both sides against the bundle, ALPN iip-mesh/1,
//     no host name check (the mesh checks SPIFFE IDs, a negligible cost once per connection).
// Prints {"event":"relay-ready","listen":"127.0.0.1:PORT"} once it listens. Not part of the
// sidecar: plain Node and plain JavaScript, as stallProbe.mjs is, so no TypeScript stripper loads.
import * as http from "node:http"
import * as net from "node:net"
import * as tls from "node:tls"
import { readFileSync } from "node:fs"
import { join } from "node:path"

const HOST = "127.0.0.1"
/** An idle connection (either side) is closed after this long: the bench's keep-alive is 60 s. */
const IDLE_MS = 60_000

/** MESH_CIPHERSUITES of src/iip/tls.ts (this file loads no TypeScript). */
const MESH_CIPHERSUITES = "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256"
const MESH_ALPN = "iip-mesh/1"

const [kind, next, tlsFlag, tlsDir] = process.argv.slice(2)
const colon = next?.lastIndexOf(":") ?? -1
const nextHost = next?.slice(0, colon)
const nextPort = Number(next?.slice(colon + 1))
const tlsSide = tlsFlag === "--tls-in" ? "in" : tlsFlag === "--tls-out" ? "out" : undefined
if (
  (kind !== "bytes" && kind !== "http") || colon <= 0 || !Number.isInteger(nextPort) || nextPort <= 0 || nextPort > 65_535 ||
  (tlsFlag !== undefined && (kind !== "bytes" || tlsSide === undefined || tlsDir === undefined))
) {
  process.stderr.write("usage: nodeRelay.mjs bytes|http HOST:PORT [--tls-in DIR | --tls-out DIR (bytes only)]\n")
  process.exit(2)
}

/** The mesh's mTLS settings from the credentials directory (the same for both sides, as the mesh's), read once. */
const tlsContext = tlsSide === undefined ? undefined : {
  key: readFileSync(join(tlsDir, "key.pem")),
  cert: readFileSync(join(tlsDir, "chain.pem")),
  ca: readFileSync(join(tlsDir, "bundle.pem")),
  minVersion: "TLSv1.3",
  ciphers: MESH_CIPHERSUITES
}
/** One context for every connection A dials, as the mesh's client keeps one. */
const clientContext = tlsSide === "out" ? tls.createSecureContext(tlsContext) : undefined

/** `from`'s bytes written to `to`; `from` paused while `to` is over its high-water mark (a budget per direction). */
const forward = (from, to) => {
  from.on("data", (chunk) => {
    if (!to.write(chunk)) from.pause()
  })
  to.on("drain", () => from.resume())
  from.on("end", () => to.end())
}

/** The next hop: plain TCP, or (--tls-out) TLS with this relay's client certificate, the server's chain verified. */
const connectNext = () => {
  if (tlsSide !== "out") return net.connect({ host: nextHost, port: nextPort, noDelay: true, allowHalfOpen: true })
  const socket = tls.connect({
    host: nextHost, port: nextPort, allowHalfOpen: true, secureContext: clientContext, ALPNProtocols: [MESH_ALPN], rejectUnauthorized: true, checkServerIdentity: () => undefined
  })
  socket.setNoDelay(true)
  return socket
}

/** The listening side: plain TCP, or (--tls-in) TLS requiring a client certificate that chains to the bundle. */
const listen = (onConnection) =>
  tlsSide === "in"
    ? tls.createServer({ ...tlsContext, ALPNProtocols: [MESH_ALPN], requestCert: true, rejectUnauthorized: true, allowHalfOpen: true }, (client) => {
      client.setNoDelay(true)
      onConnection(client)
    })
    : net.createServer({ noDelay: true, allowHalfOpen: true }, onConnection)

const bytesRelay = () =>
  listen((client) => {
    const upstream = connectNext()
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
