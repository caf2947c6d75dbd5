// Runs inside one host's network namespace (test/support/netnsHosts.ts `exec`) beside that host's
// sidecar: the host's app and the test's hands inside the namespace. Talks only to 127.0.0.1 (the
// namespace's own loopback): the app listens there, and the commands below refuse other addresses.
//
// stdout, JSON lines:
//   {"type":"app","port":P}                       the app (answers "from <hostname>") is listening
//   {"type":"mesh","services":{...}}              the sidecar's /mesh `services` each time they change
//   {"type":"answer","id":N,"status":S,"body":B}  or {"type":"answer","id":N,"error":E}
// stdin, JSON lines:
//   {"cmd":"watch","admin":"127.0.0.1:P"}         polls /mesh every 10 ms (no push exists) and reports changes
//   {"cmd":"unwatch"}                             stops polling (the sidecar is going away)
//   {"cmd":"request","id":N,"outbound":"127.0.0.1:P","host":"catalog"}  GET / through the outbound
//   {"cmd":"get","id":N,"admin":"127.0.0.1:P","path":"/federation","token":T}  GET an admin path with a bearer token
// Exits when stdin closes.
import * as http from "node:http"
import type * as net from "node:net"
import { hostname } from "node:os"
import * as readline from "node:readline"

const out = (data: Record<string, unknown>) => process.stdout.write(`${JSON.stringify(data)}\n`)

const loopback = (address: string): { host: string; port: number } => {
  const match = /^127\.0\.0\.1:(\d+)$/.exec(address)
  if (match === null) throw new Error(`refusing a non-loopback address: ${address}`)
  return { host: "127.0.0.1", port: Number(match[1]) }
}

const get = (address: string, path: string, headers: Record<string, string>, timeoutMs: number) =>
  new Promise<{ status: number; body: string }>((resolve, reject) => {
    const { host, port } = loopback(address)
    const req = http.request({ host, port, path, headers, agent: false, timeout: timeoutMs }, (res) => {
      let body = ""
      res.setEncoding("utf8")
      res.on("data", (chunk: string) => (body += chunk))
      res.on("end", () => resolve({ status: res.statusCode ?? 0, body }))
      res.on("error", reject)
    })
    req.on("timeout", () => req.destroy(new Error(`timed out after ${timeoutMs} ms`)))
    req.on("error", reject)
    req.end()
  })

const name = hostname()
const app = http.createServer((_req, res) => res.end(`from ${name}`))
await new Promise<void>((resolve) => app.listen(0, "127.0.0.1", resolve))
out({ type: "app", port: (app.address() as net.AddressInfo).port, hostname: name })

let watching: string | undefined
let last = ""
const poll = async (admin: string): Promise<void> => {
  while (watching === admin) {
    try {
      const { status, body } = await get(admin, "/mesh", {}, 1000)
      if (status === 200) {
        // Membership only: latency estimates and pending counts change with every request.
        const all = (JSON.parse(body) as { services: Record<string, Array<{ address: string; weight: number; source: string }>> }).services
        const services = Object.fromEntries(Object.entries(all).map(([name, list]) => [name, list.map(({ address, weight, source }) => ({ address, weight, source }))]))
        const text = JSON.stringify(services)
        if (text !== last && watching === admin) {
          last = text
          out({ type: "mesh", services })
        }
      }
    } catch {
      // the sidecar is starting or gone: keep polling until told otherwise
    }
    await new Promise((resolve) => setTimeout(resolve, 10))
  }
}

const lines = readline.createInterface({ input: process.stdin })
lines.on("line", (line) => {
  let command: Record<string, unknown>
  try {
    command = JSON.parse(line) as Record<string, unknown>
  } catch {
    return
  }
  if (command.cmd === "watch") {
    const admin = String(command.admin)
    loopback(admin)
    watching = admin
    last = ""
    void poll(admin)
  } else if (command.cmd === "unwatch") {
    watching = undefined
  } else if (command.cmd === "get") {
    const id = command.id
    get(String(command.admin), String(command.path), { authorization: `Bearer ${String(command.token)}` }, Number(command.timeoutMs ?? 5000)).then(
      (answer) => out({ type: "answer", id, ...answer }),
      (error: unknown) => out({ type: "answer", id, error: error instanceof Error ? error.message : String(error) })
    )
  } else if (command.cmd === "request") {
    const id = command.id
    get(String(command.outbound), "/", { host: String(command.host) }, Number(command.timeoutMs ?? 5000)).then(
      (answer) => out({ type: "answer", id, ...answer }),
      (error: unknown) => out({ type: "answer", id, error: error instanceof Error ? error.message : String(error) })
    )
  }
})
lines.on("close", () => process.exit(0))
