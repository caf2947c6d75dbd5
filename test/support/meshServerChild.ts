// A child-process IIP server (mesh mode on) for tests that kill it and start it again
// (test/iip/mesh-reconnect.test.ts) or measure its memory alone (test/iip/budgets.test.ts).
// Usage: node [--expose-gc] meshServerChild.ts [port]; without a port (or 0) it listens on
// 127.0.0.1 port 0, with one it listens on that port, so a restart can take the port the OS chose
// for the first run. IIP_TEST_SERVER_OPTIONS may hold a JSON object of ServerOptions (budgets,
// limits). It reports on stdout, one JSON object per line: {"port":N,"pid":P} once listening,
// {"hang":"<data>"} each time a /hang request reaches its handler (with IIP_TEST_QUIET_HANG set,
// not), and {"error":"..."} (then exits 1) if it cannot listen. /hang never answers; /echo answers
// with the request data; /memory answers with {"rss","heapUsed","arrayBuffers"} in bytes, after a
// full collection when the process runs with --expose-gc, and a line "memory" on stdin prints
// {"memory":{...}} the same (for when the server refuses requests).
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
const memory = () => {
  ;(globalThis as { gc?: () => void }).gc?.()
  const usage = process.memoryUsage()
  return { rss: usage.rss, heapUsed: usage.heapUsed, arrayBuffers: usage.arrayBuffers }
}
server.handle("/memory", () => JSON.stringify(memory()))
readline.createInterface({ input: process.stdin }).on("line", (line) => {
  if (line === "memory") say({ memory: memory() })
})
try {
  await server.listen()
} catch (error) {
  say({ error: error instanceof Error ? error.message : String(error) })
  process.exit(1)
}
say({ port: server.address.port, pid: process.pid })
