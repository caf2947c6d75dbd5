// A child-process IIP server (mesh mode on) for test/iip/mesh-reconnect.test.ts, which kills it and
// starts it again. Usage: node meshServerChild.ts [port]; without a port (or 0) it listens on
// 127.0.0.1 port 0, with one it listens on that port, so a restart can take the port the OS chose
// for the first run. It reports on stdout, one JSON object per line: {"port":N,"pid":P} once
// listening, {"hang":"<data>"} each time a /hang request reaches its handler, and {"error":"..."}
// (then exits 1) if it cannot listen. /hang never answers; /echo answers with the request data.
import { IipServer } from "../../src/iip/server.ts"

const say = (message: Record<string, unknown>) => process.stdout.write(`${JSON.stringify(message)}\n`)

const port = Number(process.argv[2] ?? "0")
const server = new IipServer({ host: "127.0.0.1", port: Number.isInteger(port) && port > 0 ? port : 0, log: () => {} })
server.handle("/echo", (request) => request.data)
server.handle("/hang", (request) => {
  say({ hang: request.data.toString("utf8") })
  return new Promise<string>(() => {})
})
try {
  await server.listen()
} catch (error) {
  say({ error: error instanceof Error ? error.message : String(error) })
  process.exit(1)
}
say({ port: server.address.port, pid: process.pid })
