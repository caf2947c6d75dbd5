// Runs inside a network namespace a test made (`unshare -rn`, test/sidecar/rate-limit-ipv6.test.ts)
// whose loopback holds the test's IPv6 addresses. A catalog app and its sidecar B, B's inbound on
// [::]:0 with an inbound rate limit keyed by caller (one request per caller, no refill while the
// test looks), and one caller sidecar A per address: A's connections to [X]:port on loopback come
// from X (the kernel takes the local address itself as the source), so B sees each A as a caller of
// its own address. Before anything it checks that every address it can see is loopback or under
// the test's prefix, and exits otherwise.
//
// argv[2]: the prefix ("fd00:77:1a2b:"); argv[3]: B's ipv6SourcePrefix, or "default";
// argv[4...]: the addresses to call from, in order (one request each).
// stdout, one JSON line: {"sources":[the address B's peer socket saw per request], "answers":[[status, x-iip-mesh-error]...]}
import { mkdtempSync, rmSync, writeFileSync } from "node:fs"
import * as http from "node:http"
import * as net from "node:net"
import os, { tmpdir } from "node:os"
import { join } from "node:path"
import { Cleanup } from "./iipRaw.ts"
import { call, sidecarConfig, startApp, startSidecar } from "./sidecarHarness.ts"

const [prefix = "", bits = "default", ...from] = process.argv.slice(2)
const foreign = Object.values(os.networkInterfaces())
  .flatMap((addresses) => addresses ?? [])
  .filter((a) => a.address !== "127.0.0.1" && a.address !== "::1" && !a.address.startsWith(prefix))
if (prefix === "" || foreign.length > 0) {
  process.stdout.write(`${JSON.stringify({ fatal: `not in the test's namespace: ${foreign.map((a) => a.address).join(", ")}` })}\n`)
  process.exit(2)
}

const cleanup = new Cleanup()
const dir = mkdtempSync(join(tmpdir(), "rate-limit-ipv6-"))
cleanup.add(() => rmSync(dir, { recursive: true, force: true }))
try {
  const routes = join(dir, "catalog.json")
  writeFileSync(routes, JSON.stringify({ routes: [], rateLimits: [{ name: "per-caller", service: "catalog", direction: "inbound", perSecond: 0.001, burst: 1, key: "caller" }] }))
  const app = await startApp(cleanup, (_req, res) => res.end("ok"))
  const b = await startSidecar(cleanup, sidecarConfig({
    service: "catalog",
    app: app.address,
    inbound: "[::]:0",
    routes,
    routesPollMs: 60_000,
    ...(bits === "default" ? {} : { ipv6SourcePrefix: Number(bits) })
  }))
  const port = b.sidecar.inbound.port
  // The source each A's connections come from, as a listener on [::] sees it (the same way B's does).
  const sources: Array<string> = []
  const probe = net.createServer((socket) => {
    sources.push(socket.remoteAddress ?? "")
    socket.destroy()
  })
  await new Promise<void>((listening) => probe.listen(0, "::", listening))
  cleanup.add(() => new Promise<void>((closed) => probe.close(() => closed())))
  const probePort = (probe.address() as net.AddressInfo).port
  const answers: Array<[number, string | null]> = []
  for (const address of from) {
    await new Promise<void>((done) => net.connect({ host: address, port: probePort }).on("close", () => done()).on("error", () => {}))
    const a = await startSidecar(cleanup, sidecarConfig({ service: "store", node: `store-${address}`, endpoints: { catalog: [{ address: `[${address}]:${port}`, weight: 1 }] } }))
    const answer = await call(a.outboundPort, { headers: { host: "catalog", "iip-timeout": "3000" }, agent: new http.Agent({ keepAlive: false }), timeoutMs: 5000 })
    answers.push([answer.status, (answer.headers["x-iip-mesh-error"] as string | undefined) ?? null])
  }
  process.stdout.write(`${JSON.stringify({ sources, answers })}\n`)
} catch (error) {
  process.stdout.write(`${JSON.stringify({ fatal: String(error) })}\n`)
  process.exitCode = 1
} finally {
  await cleanup.run()
}
