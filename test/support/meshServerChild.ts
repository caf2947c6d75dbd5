// A child-process IIP server (mesh mode on) for tests that kill it and start it again
// (test/iip/mesh-reconnect.test.ts) or measure its memory alone (test/iip/budgets.test.ts).
// Usage: node [--expose-gc] meshServerChild.ts [port]; without a port (or 0) it listens on
// 127.0.0.1 port 0, with one it listens on that port, so a restart can take the port the OS chose
// for the first run. IIP_TEST_SERVER_OPTIONS may hold a JSON object of ServerOptions (budgets,
// limits). It reports on stdout, one JSON object per line: {"port":N,"pid":P} once listening,
// {"hang":"<data>"} each time a /hang request reaches its handler (with IIP_TEST_QUIET_HANG set,
// not), and {"error":"..."} (then exits 1) if it cannot listen. /hang never answers; /echo answers
// with the request data; /memory answers with {"rss","heapUsed","arrayBuffers"} in bytes, after
// full collections when the process runs with --expose-gc, and a line "memory" on stdin prints
// {"memory":{...}} the same (for when the server refuses requests); a line "state" prints
// {"state":{...}}: the shared budget's counts, the open connections, how many of them have their
// reading paused, and the bytes read from every connection, closed ones included (tests wait on
// these instead of on quiet sockets).
import { subscribe } from "node:diagnostics_channel"
import type * as net from "node:net"
import * as readline from "node:readline"
import { IipServer, type ServerOptions } from "../../src/iip/server.ts"

const say = (message: Record<string, unknown>) => process.stdout.write(`${JSON.stringify(message)}\n`)

const port = Number(process.argv[2] ?? "0")
const options = JSON.parse(process.env.IIP_TEST_SERVER_OPTIONS ?? "{}") as ServerOptions
const quiet = process.env.IIP_TEST_QUIET_HANG !== undefined
const server = new IipServer({ ...options, host: "127.0.0.1", port: Number.isInteger(port) && port > 0 ? port : 0, log: () => {} })
server.handle("/echo", (request) => request.data)
server.handle("/hang", (request) => {
  if (!quiet) say({ hang: request.data.toString("utf8") })
  return new Promise<string>(() => {})
})
/** After two full collections a turn of the event loop apart: buffers of a connection closed just now are let go only after its close callbacks ran. */
const memory = async () => {
  const gc = (globalThis as { gc?: () => void }).gc
  gc?.()
  await new Promise<void>((resolve) => setImmediate(resolve))
  gc?.()
  const usage = process.memoryUsage()
  return { rss: usage.rss, heapUsed: usage.heapUsed, arrayBuffers: usage.arrayBuffers }
}
server.handle("/memory", async () => JSON.stringify(await memory()))
/** Bytes read from connections since closed: the count a test waits on never goes back when the server closes some. */
let closedBytesRead = 0
subscribe("net.server.socket", (message) => {
  const socket = (message as { readonly socket: net.Socket }).socket
  socket.once("close", () => (closedBytesRead += socket.bytesRead))
})
const state = () => {
  const connections = [...new Set([...server.sessions].map((s) => s.connection).concat([...server.meshSessions].map((s) => s.connection)))]
  return {
    requests: server.budget.requests,
    bytes: server.budget.bytes,
    channels: server.budget.channels,
    sharedFull: server.budget.full,
    connections: connections.filter((c) => !c.closed).length,
    paused: connections.filter((c) => !c.closed && c.readingPaused).length,
    bytesRead: connections.reduce((sum, c) => sum + (c.socket.destroyed ? 0 : (c.socket as net.Socket).bytesRead), closedBytesRead)
  }
}
readline.createInterface({ input: process.stdin }).on("line", (line) => {
  if (line === "memory") void memory().then((figures) => say({ memory: figures }))
  if (line === "state") say({ state: state() })
})
try {
  await server.listen()
} catch (error) {
  say({ error: error instanceof Error ? error.message : String(error) })
  process.exit(1)
}
say({ port: server.address.port, pid: process.pid })
