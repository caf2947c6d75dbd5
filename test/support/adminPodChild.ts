// Runs inside a network namespace of the test's own (test/admin/adminSplit.test.ts) where
// 10.44.0.2 stands for the pod's address: starts `iip-mesh sidecar` with the given flags, then
// makes the given HTTP requests (address, path, optional bearer token) and prints one JSON line:
// the ready line and, per request, its status or the connect error's code. Then stops the sidecar.
//   node adminPodChild.ts '{"args": [...], "probes": [{"address": "10.44.0.2:9991", "path": "/mesh"}]}'
import { spawn } from "node:child_process"
import * as http from "node:http"
import { resolve } from "node:path"
import { CHILD_START_MS } from "./childStart.ts"

interface Probe {
  readonly address: string
  readonly path: string
  readonly token?: string
}

const { args, probes } = JSON.parse(process.argv[2]!) as { args: ReadonlyArray<string>; probes: ReadonlyArray<Probe> }
const main = resolve(import.meta.dirname, "../../src/cli/main.ts")
const sidecar = spawn(process.execPath, [main, "sidecar", ...args], { stdio: ["ignore", "pipe", "pipe"] })
let stderr = ""
sidecar.stderr!.on("data", (chunk: Buffer) => (stderr += chunk.toString()))
// The sidecar's start, then the probes (3 s each at most).
const bail = setTimeout(() => {
  process.stdout.write(`${JSON.stringify({ error: "timed out", stderr })}\n`)
  sidecar.kill("SIGKILL")
  process.exit(1)
}, CHILD_START_MS + 20_000)

const get = (probe: Probe) =>
  new Promise<number | string>((done) => {
    const colon = probe.address.lastIndexOf(":")
    const req = http.request({
      host: probe.address.slice(0, colon),
      port: Number(probe.address.slice(colon + 1)),
      path: probe.path,
      agent: false,
      headers: probe.token === undefined ? {} : { authorization: `Bearer ${probe.token}` },
      timeout: 3000
    })
    req.on("timeout", () => req.destroy(new Error("timeout")))
    req.on("error", (error: NodeJS.ErrnoException) => done(error.code ?? error.message))
    req.on("response", (res) => {
      res.resume()
      res.on("end", () => done(res.statusCode ?? 0))
    })
    req.end()
  })

const finish = (line: Record<string, unknown>) => {
  clearTimeout(bail)
  process.stdout.write(`${JSON.stringify(line)}\n`)
  sidecar.kill("SIGKILL")
}

sidecar.once("exit", (code) => finish({ exited: code, stderr }))
let out = ""
let started = false
sidecar.stdout!.on("data", async (chunk: Buffer) => {
  if (started) return
  out += chunk.toString()
  const newline = out.indexOf("\n")
  if (newline === -1) return
  started = true
  sidecar.removeAllListeners("exit")
  const ready = JSON.parse(out.slice(0, newline)) as Record<string, unknown>
  const results: Array<number | string> = []
  for (const probe of probes) results.push(await get(probe))
  finish({ ready, results })
})
