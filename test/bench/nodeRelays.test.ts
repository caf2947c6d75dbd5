// The sidecar bench's bare Node relay pairs (bench/sidecar/nodeRelays.ts, nodeRelay.mjs): each pair
// started in front of the bench's echo app relays requests from real clients (curl, and node:http
// keep-alive: several requests on one connection through both hops) with the app's answers intact,
// a relay whose next hop is gone answers (502 over HTTP, a closed connection over bytes), and
// every relay process exits when stopped. relay-tls's B takes only TLS with a client certificate
// of the bench's CA (curl without one is refused).
import { execFile } from "node:child_process"
import { mkdtempSync, rmSync } from "node:fs"
import * as http from "node:http"
import * as net from "node:net"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { promisify } from "node:util"
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest"
import { type Child, killChild, spawnServer } from "../../bench/children.ts"
import { APP_FILE } from "../../bench/sidecar/app.ts"
import { writeBenchCredentials } from "../../bench/sidecar/credentials.ts"
import { startRelayPair } from "../../bench/sidecar/nodeRelays.ts"
import { type Relay, SHIPPED_NODE_FLAGS } from "../../bench/sidecar/options.ts"
import type { ProxyPair } from "../../bench/sidecar/pair.ts"
import { HOST, SERVICE_HOST } from "../../bench/sidecar/request.ts"

const run = promisify(execFile)

const OPTIONS = { cpuProfDir: undefined, sidecarNodeFlags: SHIPPED_NODE_FLAGS.split(" "), sidecarEnv: {}, sidecarMain: "", sidecarLogDir: undefined }

/** A POST through `agent` (one keep-alive socket): status, body and the socket it went on. */
const post = (port: number, agent: http.Agent, body: Buffer): Promise<{ status: number; body: Buffer; socket: net.Socket }> =>
  new Promise((resolve, reject) => {
    const req = http.request({ host: HOST, port, method: "POST", path: "/echo", agent, headers: { host: SERVICE_HOST, "content-length": body.length } }, (res) => {
      const parts: Array<Buffer> = []
      res.on("data", (chunk: Buffer) => parts.push(chunk))
      res.on("end", () => resolve({ status: res.statusCode!, body: Buffer.concat(parts), socket: req.socket! }))
      res.on("error", reject)
    })
    req.on("error", reject)
    req.end(body)
  })

/** A port nothing listens on: the kernel's pick for port 0, closed again. */
const closedPort = (): Promise<number> =>
  new Promise((resolve) => {
    const server = net.createServer().listen(0, HOST, () => {
      const { port } = server.address() as net.AddressInfo
      server.close(() => resolve(port))
    })
  })

describe("bench relay pairs", () => {
  const spawned: Array<() => Promise<void>> = []
  let app: Child | undefined
  let dir = ""
  let credentials: Record<"echo" | "client", string> = { echo: "", client: "" }
  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), "relay-credentials-"))
    credentials = await writeBenchCredentials(dir, ["echo", "client"]) as Record<"echo" | "client", string>
  })
  afterAll(() => rmSync(dir, { recursive: true, force: true }))
  afterEach(async () => {
    for (const stop of spawned.reverse()) await stop()
    spawned.length = 0
    if (app !== undefined) await killChild(app.process)
    app = undefined
  })

  for (const kind of ["relay-bytes", "relay-tls", "relay-http"] as const satisfies ReadonlyArray<Relay>) {
    it(`${kind}: curl's and keep-alive requests come back echoed through both hops, and both relays exit when stopped`, async () => {
      app = await spawnServer(APP_FILE, "app", undefined)
      const pair: ProxyPair = await startRelayPair(kind, app.port, OPTIONS, spawned, credentials)
      expect(pair.entry.port).toBeGreaterThan(0)

      const curl = await run("curl", ["-sS", "--max-time", "10", "-H", `Host: ${SERVICE_HOST}`, "--data-binary", "through two relays", `http://${HOST}:${pair.entry.port}/echo`])
      expect(curl.stdout).toBe("through two relays")

      const agent = new http.Agent({ keepAlive: true, maxSockets: 1 })
      try {
        const sockets = new Set<net.Socket>()
        for (let i = 0; i < 5; i++) {
          const body = Buffer.alloc(1024 + i * 4096, i + 1)
          const answer = await post(pair.entry.port, agent, body)
          expect(answer.status).toBe(200)
          expect(answer.body.equals(body)).toBe(true)
          sockets.add(answer.socket)
        }
        expect(sockets.size).toBe(1)
      } finally {
        agent.destroy()
      }
      if (kind === "relay-tls") {
        // B itself: TLS only, and only with a client certificate (curl's exit is nonzero either way).
        const b = (pair.b as { readonly entry?: { readonly port: number } }).entry!.port
        const plain = await run("curl", ["-sS", "--max-time", "10", `http://${HOST}:${b}/echo`]).then(() => 0, (error: { code?: number }) => error.code)
        const noCertificate = await run("curl", ["-sS", "-k", "--max-time", "10", `https://${HOST}:${b}/echo`]).then(() => 0, (error: { code?: number }) => error.code)
        expect(plain).not.toBe(0)
        expect(noCertificate).not.toBe(0)
      }

      await pair.a.stop()
      await pair.b.stop()
      expect(() => process.kill(pair.a.pid, 0)).toThrow(/ESRCH/)
      expect(() => process.kill(pair.b.pid, 0)).toThrow(/ESRCH/)
    })
  }

  it("relay-http answers 502 when its next hop is gone; relay-bytes closes the connection", async () => {
    const port = await closedPort()
    const httpPair = await startRelayPair("relay-http", port, OPTIONS, spawned, credentials)
    const agent = new http.Agent({ keepAlive: false })
    try {
      const answer = await post(httpPair.entry.port, agent, Buffer.from("nobody there"))
      expect(answer.status).toBe(502)
    } finally {
      agent.destroy()
    }
    const bytesPair = await startRelayPair("relay-bytes", port, OPTIONS, spawned, credentials)
    const curl = await run("curl", ["-sS", "--max-time", "10", "--data-binary", "x", `http://${HOST}:${bytesPair.entry.port}/echo`]).then(
      () => "answered",
      (error: { code?: number }) => `curl exit ${error.code}`
    )
    // 52: empty reply from server (the relay closed the connection it could not carry on).
    expect(curl).toBe("curl exit 52")
  })
})
