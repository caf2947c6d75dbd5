// What a sidecar loads before it is ready: the heavy packages of features it was not asked for
// (Kubernetes client, mDNS, WebSocket, X.509 for workload identities, the OpenTelemetry SDK
// without an exporter), the other commands' code (file server, demo, effect/cli commands) and the
// admin federation's client stay unloaded until used, which keeps an idle sidecar's memory down (issue 14). The
// child runs with test/support/loadedModules.ts preloaded, which logs every module it loads.
import { resolve } from "node:path"
import { afterEach, describe, expect, it } from "vitest"
import { holdsStarts } from "../support/childStart.ts"
import { readUntil } from "../support/iipRaw.ts"
import { killIfRunning, type SidecarProcess, spawnSidecarProcess } from "../support/sidecarProcess.ts"

const moduleLog = resolve(import.meta.dirname, "../support/loadedModules.ts")

/** Module URLs loaded so far, from the child's stderr. */
const loaded = (sidecar: SidecarProcess): ReadonlyArray<string> =>
  sidecar.stderr().split("\n").filter((line) => line.startsWith("loaded ")).map((line) => line.slice("loaded ".length))

describe("a sidecar loads only what it uses", () => {
  let sidecar: SidecarProcess | undefined
  afterEach(() => killIfRunning(sidecar?.proc))

  it("with no Kubernetes, mDNS, WebSocket or identity settings it never loads their packages, nor the other commands", async () => {
    sidecar = spawnSidecarProcess(["--service", "lazy", "--outbound", "127.0.0.1:0", "--inbound", "127.0.0.1:0", "--admin", "127.0.0.1:0"], ["--import", moduleLog])
    await sidecar.ready
    const urls = loaded(sidecar)
    // The log works: the sidecar's own modules and effect are in it.
    expect(urls.some((url) => url.endsWith("/src/sidecar/sidecar.ts"))).toBe(true)
    expect(urls.some((url) => url.includes("/node_modules/effect/"))).toBe(true)
    const unwanted = [
      "/node_modules/@kubernetes/",
      "/node_modules/bonjour-service/",
      "/node_modules/multicast-dns/",
      "/node_modules/ws/",
      "/node_modules/@peculiar/",
      "/src/cli/sidecarIdentity.ts",
      // The app leg is our own llhttp client (src/sidecar/appPool.ts): no undici at all.
      "/node_modules/undici/",
      // Tracing is on, but with no exporter its records need no OpenTelemetry SDK (src/telemetry/otelSdk.ts).
      "/node_modules/@opentelemetry/core/",
      "/node_modules/@opentelemetry/resources/",
      "/node_modules/@opentelemetry/sdk-trace-base/",
      "/node_modules/@opentelemetry/semantic-conventions/",
      "/node_modules/@effect/opentelemetry/",
      "/src/discovery/kubernetesSource.ts",
      "/src/files/",
      "/src/cli/demo.ts",
      "/src/cli/commands.ts",
      "/src/admin/federation.ts",
      "/src/admin/adminClient.ts"
    ]
    expect(urls.filter((url) => unwanted.some((part) => url.includes(part)))).toEqual([])
  }, holdsStarts(1, 10_000))

  it("never loads node:http2 nor node's undici (an ES import of node:http would: about 8 MB) before it is ready", async () => {
    sidecar = spawnSidecarProcess(["--service", "lazy", "--outbound", "127.0.0.1:0", "--inbound", "127.0.0.1:0", "--admin", "127.0.0.1:0"], ["--import", moduleLog])
    await sidecar.ready
    const builtins = async () => sidecar!.stderr().split("\n").find((line) => line.startsWith("builtins "))
    const { value: line } = await readUntil(builtins, (found) => found !== undefined, 5000)
    const names = line!.slice("builtins ".length).split(",")
    // The list means something: the sidecar's own builtins are in it.
    expect(names).toContain("NativeModule net")
    expect(names.filter((name) => name.includes("http2") || name.includes("undici"))).toEqual([])
  }, holdsStarts(1, 10_000))
})
