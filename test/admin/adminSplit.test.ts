// The admin split (issue 15): a read-only listener with /health, /ready and /metrics only, and a
// control listener with everything else (dashboard and its data, /mesh, /traces, /config, weight
// overrides), on loopback by default; with a token, every control request needs it as a bearer
// token, without one a request must name a loopback host (a DNS-rebinding page cannot drive it). The bind checks run in a network namespace of the test's own where 10.44.0.2 stands for
// the pod's address: the control listener cannot be reached there by default, even with the
// read-only one on 0.0.0.0. /config never shows a secret.
import { execFile, spawnSync } from "node:child_process"
import { mkdtempSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join, resolve } from "node:path"
import { afterEach, beforeEach, describe, expect, it } from "vitest"
import { Cleanup } from "../support/iipRaw.ts"
import { assertCapability, type Capability, gate } from "../support/netnsProcess.ts"
import { call, sidecarConfig, startAdminListeners, startSidecar } from "../support/sidecarHarness.ts"

const token = "s3cret-admin-token-0123456789"

let cleanup: Cleanup
let dir: string
beforeEach(() => {
  cleanup = new Cleanup()
  dir = mkdtempSync(join(tmpdir(), "iip-mesh-admin-"))
})
afterEach(async () => {
  await cleanup.run()
  rmSync(dir, { recursive: true, force: true })
})

const portOf = (url: string) => Number(new URL(url).port)

describe("admin listeners", () => {
  it("the read-only listener serves /health, /ready and /metrics and nothing else; the control listener serves everything", async () => {
    const running = await startSidecar(cleanup, sidecarConfig({ service: "store", endpoints: { catalog: [{ address: "127.0.0.1:1", weight: 1 }] } }))
    const { readOnly, control } = await startAdminListeners(cleanup, running)
    for (const path of ["/health", "/ready", "/metrics"]) {
      expect((await call(portOf(readOnly), { path, headers: { host: "127.0.0.1" } })).status, `read-only ${path}`).toBe(200)
      expect((await call(portOf(control), { path, headers: { host: "127.0.0.1" } })).status, `control ${path}`).toBe(200)
    }
    for (const path of ["/", "/dashboard", "/mesh", "/traces", "/config", "/dashboard/data"]) {
      const refused = await call(portOf(readOnly), { path, headers: { host: "127.0.0.1" } })
      expect(refused.status, `read-only ${path}`).toBe(404)
      expect(JSON.parse(refused.body.toString()), `read-only ${path}`).toMatchObject({ error: "not_found", paths: ["/health", "/ready", "/metrics"] })
      expect((await call(portOf(control), { path, headers: { host: "127.0.0.1" } })).status, `control ${path}`).toBe(200)
    }
    const put = await call(portOf(readOnly), { method: "PUT", path: "/mesh/catalog/127.0.0.1:1/weight", body: "0", headers: { host: "127.0.0.1" } })
    expect(put.status).toBe(404)
    expect(running.sidecar.registry.view()[0]!.endpoints[0]!.weight).toBe(1)
    expect((await call(portOf(control), { method: "PUT", path: "/mesh/catalog/127.0.0.1:1/weight", body: "0", headers: { host: "127.0.0.1" } })).status).toBe(200)
    expect(running.sidecar.registry.view()[0]!.endpoints[0]!.weight).toBe(0)
  })

  it("a read path asked with another method than GET or HEAD is 405 (Allow: GET, HEAD) on both listeners; unknown paths stay 404", async () => {
    const running = await startSidecar(cleanup, sidecarConfig({ service: "store", endpoints: { catalog: [{ address: "127.0.0.1:1", weight: 1 }] } }))
    const { readOnly, control } = await startAdminListeners(cleanup, running)
    const host = { host: "127.0.0.1" }
    for (const method of ["POST", "DELETE", "PUT", "OPTIONS", "PATCH"]) {
      for (const path of ["/health", "/metrics"]) {
        const refused = await call(portOf(readOnly), { method, path, headers: host })
        expect(refused.status, `read-only ${method} ${path}`).toBe(405)
        expect(refused.headers.allow).toBe("GET, HEAD")
      }
      for (const path of ["/", "/dashboard", "/config", "/traces", `/traces/${"ab".repeat(16)}`, "/tap", "/golden", "/federation/series"]) {
        const refused = await call(portOf(control), { method, path, headers: host })
        expect(refused.status, `control ${method} ${path}`).toBe(405)
        expect(JSON.parse(refused.body.toString())).toMatchObject({ error: "method_not_allowed", allowed: ["GET", "HEAD"] })
      }
      expect((await call(portOf(readOnly), { method, path: "/nope", headers: host })).status).toBe(404)
      expect((await call(portOf(control), { method, path: "/nope", headers: host })).status).toBe(404)
    }
    const head = await call(portOf(control), { method: "HEAD", path: "/config", headers: host })
    expect(head.status).toBe(200)
    expect(head.body.length).toBe(0)
    expect((await call(portOf(control), { method: "DELETE", path: "/mesh/catalog/127.0.0.1:1/weight", headers: host })).status).toBe(200)
  })

  it("without a token, the control listener answers only requests for a loopback host (no DNS rebinding); the read-only one any", async () => {
    const running = await startSidecar(cleanup, sidecarConfig({ service: "store", endpoints: { catalog: [{ address: "127.0.0.1:1", weight: 1 }] } }))
    const { readOnly, control } = await startAdminListeners(cleanup, running)
    const port = portOf(control)
    for (const host of ["evil.example", `evil.example:${port}`, "127.0.0.1.nip.io", "admin", "0.0.0.0", "[::ffff:7f00:1]"]) {
      const refused = await call(port, { method: "PUT", path: "/mesh/catalog/127.0.0.1:1/weight", body: "0", headers: { host } })
      expect(refused.status, host).toBe(403)
      expect(JSON.parse(refused.body.toString()), host).toMatchObject({ error: "bad_host" })
    }
    expect(running.sidecar.registry.view()[0]!.endpoints[0]!.weight).toBe(1)
    for (const host of ["127.0.0.1", `127.0.0.1:${port}`, `localhost:${port}`, `[::1]:${port}`, "127.1.2.3"]) {
      expect((await call(port, { path: "/mesh", headers: { host } })).status, host).toBe(200)
    }
    expect((await call(portOf(readOnly), { path: "/ready", headers: { host: "evil.example" } })).status).toBe(200)
  })

  it("with a token, a control request without it or with a wrong one is 401 and changes nothing; the right one works", async () => {
    const running = await startSidecar(cleanup, sidecarConfig({ service: "store", endpoints: { catalog: [{ address: "127.0.0.1:1", weight: 1 }] } }))
    const { readOnly, control } = await startAdminListeners(cleanup, running, { token })
    const weight = (authorization?: string) =>
      call(portOf(control), { method: "PUT", path: "/mesh/catalog/127.0.0.1:1/weight", body: "5", headers: { host: "127.0.0.1", ...(authorization === undefined ? {} : { authorization }) } })
    for (const authorization of [undefined, "Bearer wrong", `Bearer ${token}x`, `Bearer ${token.slice(0, -1)}`, token, `Basic ${token}`]) {
      const answer = await weight(authorization)
      expect(answer.status, String(authorization)).toBe(401)
      expect(answer.headers["www-authenticate"]).toBe('Bearer realm="iip-mesh-admin"')
      expect((await call(portOf(control), { path: "/mesh", headers: { host: "127.0.0.1", ...(authorization === undefined ? {} : { authorization }) } })).status).toBe(401)
    }
    expect(running.sidecar.registry.view()[0]!.endpoints[0]!.weight).toBe(1)
    expect((await weight(`Bearer ${token}`)).status).toBe(200)
    expect((await weight(`bearer  ${token} `)).status).toBe(200)
    expect(running.sidecar.registry.view()[0]!.endpoints[0]!.weight).toBe(5)
    // Probes and Prometheus carry no token: the read-only listener never asks for one.
    expect((await call(portOf(readOnly), { path: "/ready", headers: { host: "127.0.0.1" } })).status).toBe(200)
  })

  it("/config never shows a secret: the token (by its setting's marking), and any setting named like one", async () => {
    const running = await startSidecar(cleanup, sidecarConfig({ service: "store", adminToken: token }))
    const { control } = await startAdminListeners(cleanup, running, { token })
    const answer = await call(portOf(control), { path: "/config", headers: { host: "127.0.0.1", authorization: `Bearer ${token}` } })
    expect(answer.status).toBe(200)
    expect(answer.body.toString()).not.toContain(token)
    const body = JSON.parse(answer.body.toString()) as Record<string, unknown>
    expect(body.adminToken).toBe("[redacted]")
    expect(body.adminTokenFile).toBeNull()
    expect(body.hashKey).toBeNull()
    expect(body.service).toBe("store")

    const { redactSecrets } = await import("../../src/admin/views.ts")
    expect(redactSecrets({ joinToken: "j", issuerKey: "k", caKeyFile: "/x", exporter: { headers: { authorization: "a" } }, hashKey: "header:x", apiKey: "a", list: [{ password: "p" }], unset: { secret: null } })).toStrictEqual({
      joinToken: "[redacted]",
      issuerKey: "[redacted]",
      caKeyFile: "[redacted]",
      exporter: { headers: "[redacted]" },
      hashKey: "header:x",
      apiKey: "[redacted]",
      list: [{ password: "[redacted]" }],
      unset: { secret: null }
    })
  })
})

/** `unshare -rn` with loopback up and 10.44.0.2 on it: the pod's address, in a namespace nothing else shares. */
const podSetup = "ip link set lo up && ip addr add 10.44.0.2/32 dev lo"
const probeNamespace = (): Capability => {
  const result = spawnSync("unshare", ["-rn", "sh", "-c", podSetup], { encoding: "utf8", timeout: 10_000 })
  if (result.error !== undefined) return { ok: false, reason: `unshare: ${result.error.message}` }
  return result.status === 0 ? { ok: true } : { ok: false, reason: `unshare -rn failed (${result.status}): ${result.stderr.trim()}` }
}
const capability = probeNamespace()
const suite = gate("admin listeners seen from the pod's address (network namespace)", capability)

interface PodRun {
  readonly ready?: Record<string, unknown>
  readonly results?: ReadonlyArray<number | string>
  readonly exited?: number
  readonly stderr?: string
}

/**
 * Bounds sized for a loaded machine: a pod run is a node start (2 s of CPU, 9-15 s of wall time at
 * load 15) plus a sidecar's; each ends at the pod's exit.
 */
const POD_MS = 90_000
const TEST_MS = 120_000

/**
 * Runs the CLI sidecar with `args` in a fresh namespace and makes the requests; fixed ports are fine
 * there, so pods run side by side. Not spawnSync: a blocked worker cannot even time the test out.
 */
const inPod = (args: ReadonlyArray<string>, probes: ReadonlyArray<{ address: string; path: string; token?: string }>): Promise<PodRun> => {
  const child = resolve(import.meta.dirname, "../support/adminPodChild.ts")
  const scenario = JSON.stringify({ args: ["--service", "store", "--outbound", "127.0.0.1:4140", "--inbound", "127.0.0.1:4143", ...args], probes })
  return new Promise((done, failed) => {
    execFile("unshare", ["-rn", "sh", "-c", `${podSetup} && exec "$0" "$1" "$2"`, process.execPath, child, scenario], { encoding: "utf8", timeout: POD_MS }, (error, stdout, stderr) => {
      if (error !== null && stdout.trim() === "") return failed(new Error(`the pod run failed (${error.code ?? error.signal}): ${stderr}`))
      done(JSON.parse(stdout.trim().split("\n").at(-1)!) as PodRun)
    })
  })
}

describe.skipIf(suite.skip)(suite.title, () => {
  it("by default the control listener is on 127.0.0.1, unreachable at the pod's address even with the read-only one on 0.0.0.0", async () => {
    assertCapability(capability, "a user and network namespace")
    const admins = ["0.0.0.0:9990", "10.44.0.2:9990"]
    const runs = await Promise.all(admins.map((admin) => inPod(["--admin", admin], [
        { address: "10.44.0.2:9990", path: "/ready" },
        { address: "10.44.0.2:9990", path: "/metrics" },
        { address: "10.44.0.2:9990", path: "/mesh" },
        { address: "10.44.0.2:9991", path: "/mesh" },
        { address: "10.44.0.2:9991", path: "/dashboard/data" },
        { address: "127.0.0.1:9991", path: "/mesh" }
      ])))
    for (const [i, admin] of admins.entries()) {
      const run = runs[i]!
      expect(run.ready, `${admin}: ${run.stderr}`).toMatchObject({ event: "sidecar-ready", adminControl: "127.0.0.1:9991" })
      expect(run.results, admin).toStrictEqual([200, 200, 404, "ECONNREFUSED", "ECONNREFUSED", 200])
    }
  }, TEST_MS)

  it("off loopback the control listener needs a token: refused at start without one; with one, 401 without it and 200 with it", async () => {
    assertCapability(capability, "a user and network namespace")
    const tokenFile = join(dir, "token")
    writeFileSync(tokenFile, `${token}\n`)
    const [refused, run] = await Promise.all([
      inPod(["--admin", "0.0.0.0:9990", "--admin-control", "10.44.0.2:9991"], []),
      inPod(["--admin", "0.0.0.0:9990", "--admin-control", "10.44.0.2:9991", "--admin-token-file", tokenFile], [
        { address: "10.44.0.2:9991", path: "/mesh" },
        { address: "10.44.0.2:9991", path: "/mesh", token: "wrong-token-0123456789" },
        { address: "10.44.0.2:9991", path: "/mesh", token },
        { address: "10.44.0.2:9990", path: "/ready" }
      ])
    ])
    expect(refused.exited).toBe(2)
    expect(refused.stderr).toContain("adminControl: 10.44.0.2:9991 is not a loopback address")
    expect(run.results, run.stderr).toStrictEqual([401, 401, 200, 200])
  }, TEST_MS)
})
