// Run inside a loopback namespace of the test's own (`unshare -rn`, adminConnections.test.ts) whose
// `lo` holds 2001:db8:0:1::a and ::b (one /64) and 2001:db8:0:2::a: the machine's own loopback has
// ::1 alone, and adding addresses there would change the shared machine. A listener capped by
// capConnections on [::] (dual-stack), and idle connections from those addresses, ::1 and
// 127.0.0.1, counted by the IPv6 prefix IPV6_SOURCE_PREFIX says (default 64); prints one JSON line: how many of the held connections (their server sides) each
// newcomer evicted.
import * as http from "node:http"
import * as net from "node:net"
import { ADMIN_LIMITS, capConnections, limitPipelining, serverOptions } from "../../src/admin/listenerLimits.ts"

const server = http.createServer(serverOptions)
server.on("request", limitPipelining(capConnections(server, Number(process.env.IPV6_SOURCE_PREFIX ?? 64)), (_req, res) => res.writeHead(200, { "content-length": 2 }).end("ok")))
/** The server's side of every connection, by the client's address and port. */
const serverSides = new Map<string, net.Socket>()
server.on("connection", (socket: net.Socket) => serverSides.set(`${socket.remoteAddress} ${socket.remotePort}`, socket))
/** A held connection: the client's socket and the server's side of it. */
interface Held {
  readonly client: net.Socket
  readonly server: net.Socket
}
await new Promise<void>((listening) => server.listen(0, "::", listening))
const port = (server.address() as net.AddressInfo).port

/** An idle connection from `from` to `host`, once the server has accepted it. */
const hold = (from: string, host = from.includes(":") ? "::1" : "127.0.0.1"): Promise<Held> =>
  new Promise((resolve, reject) => {
    const socket = net.connect({ port, host, localAddress: from })
    socket.on("error", () => {})
    socket.once("error", reject)
    socket.once("connect", () => {
      const key = `${socket.localAddress} ${socket.localPort}`
      const accepted = () => {
        const server = serverSides.get(key)
        if (server === undefined) setImmediate(accepted)
        else resolve({ client: socket, server })
      }
      accepted()
    })
  })

/** Server sides of `clients` destroyed (evicted). */
const evicted = (held: ReadonlyArray<Held>) => held.filter((h) => h.server.destroyed).length

/** GET /health from `from` on a new connection: the status line. */
const probe = (from: string): Promise<string> =>
  new Promise((resolve, reject) => {
    const req = http.request({ port, host: from.includes(":") ? "::1" : "127.0.0.1", localAddress: from, path: "/health", agent: false })
    req.once("error", reject)
    req.once("response", (res) => {
      res.resume()
      res.once("end", () => resolve(String(res.statusCode)))
    })
    req.end()
  })

/** `connectionsPerAddress` idle connections from `from`, the first accepted alone (the one idle longest). */
const fill = async (from: string) => {
  const first = await hold(from)
  return [first, ...(await Promise.all(Array.from({ length: ADMIN_LIMITS.connectionsPerAddress - 1 }, () => hold(from))))]
}

const sameBlock = await fill("2001:db8:0:1::a")
const fromSameBlock = await probe("2001:db8:0:1::b")
const sameBlockEvicted = evicted(sameBlock)
const fromOtherBlock = await probe("2001:db8:0:2::a")
const otherBlockEvicted = evicted(sameBlock) - sameBlockEvicted
const loopback = await fill("::1")
const fromIpv4 = await probe("127.0.0.1")
const ipv4Evicted = evicted(loopback)
console.log(JSON.stringify({ fromSameBlock, sameBlockEvicted, firstEvicted: sameBlock[0]!.server.destroyed, fromOtherBlock, otherBlockEvicted, fromIpv4, ipv4Evicted }))
for (const held of [...sameBlock, ...loopback]) held.client.destroy()
server.close()
server.closeAllConnections()
