// The shipped CLI is a rolldown bundle (scripts/build.ts): test/cli/lazyModules.test.ts pins what a
// sidecar loads on the source tree, and this pins that the bundle keeps it: each `import()` of the
// code is a chunk of its own that an idle sidecar never loads, and the packages it bundles are
// not loaded again from node_modules. Two bundled sidecars export a request's spans over OTLP: the
// bundle's own @opentelemetry/api and the SDK's, loaded from node_modules, must share one tracer
// provider, or nothing is exported. The bundle is built into a directory of its own inside the
// repository (the external packages resolve from there) and removed afterwards.
import { spawnSync } from "node:child_process"
import { existsSync, mkdtempSync, readdirSync, rmSync } from "node:fs"
import { join, resolve } from "node:path"
import { pathToFileURL } from "node:url"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { holdsStarts } from "../support/childStart.ts"
import { Cleanup, withTimeout } from "../support/iipRaw.ts"
import { type ExportedSpan, spansOf, startOtlpReceiver } from "../support/otlpReceiver.ts"
import { call, startApp } from "../support/sidecarHarness.ts"
import { killIfRunning, portOf, type SidecarProcess, spawnSidecarProcess } from "../support/sidecarProcess.ts"

const root = resolve(import.meta.dirname, "../..")
const moduleLog = resolve(import.meta.dirname, "../support/loadedModules.ts")

/**
 * Chunks named after the modules that are only imported lazily (rolldown names a chunk after its entry
 * module). goldenViewCheck is the chunk the federation and the CLI's stat share: it holds adminClient too.
 */
const lazyChunks = ["commands", "demo", "kubernetesSource", "federation", "goldenViewCheck", "sidecarIdentity", "certificates"]

describe("the bundled CLI", () => {
  let out = ""
  let sidecar: SidecarProcess | undefined
  const cleanup = new Cleanup()
  beforeAll(() => {
    out = mkdtempSync(join(root, ".dist-lazy-"))
    const built = spawnSync(process.execPath, [join(root, "scripts", "build.ts"), out], { encoding: "utf8" })
    expect(built.status, built.stderr).toBe(0)
  }, 60_000)
  afterAll(async () => {
    killIfRunning(sidecar?.proc)
    await cleanup.run()
    rmSync(out, { recursive: true, force: true })
  })

  it("an idle sidecar loads no lazy chunk and no bundled package from node_modules", async () => {
    const chunks = readdirSync(join(out, "cli"))
    // The check means something: every lazy import became a chunk of its own.
    for (const name of lazyChunks) expect(chunks.some((file) => file.startsWith(`${name}-`)), name).toBe(true)
    sidecar = spawnSidecarProcess(["--service", "lazy", "--outbound", "127.0.0.1:0", "--inbound", "127.0.0.1:0", "--admin", "127.0.0.1:0"], ["--import", moduleLog], join(out, "cli", "main.js"))
    await sidecar.ready
    const urls = sidecar.stderr().split("\n").filter((line) => line.startsWith("loaded file:")).map((line) => line.slice("loaded ".length))
    const outUrl = pathToFileURL(out).href
    expect(urls).toContain(`${outUrl}/cli/main.js`)
    expect(urls.filter((url) => lazyChunks.some((name) => url.startsWith(`${outUrl}/cli/${name}-`)))).toEqual([])
    // Nothing from node_modules: @opentelemetry/api is bundled too (scripts/build.ts says why).
    expect(urls.filter((url) => url.includes("/node_modules/"))).toEqual([])
    // The memory trim (scripts/nativeTrim.ts) is built where a C compiler is (test/cli/mallocTrim.test.ts
    // skips or fails without one); the sidecar says which, and started either way.
    const trim = sidecar.stderr().split("\n").find((line) => line.includes('"event":"memory-trim"'))
    expect(trim).toMatch(existsSync(join(out, "native", "malloc_trim.node")) ? /"active":true,"trimmedMb":[\d.]+/ : /"active":false,"reason":"no [^"]*malloc_trim\.node \(npm install and npm run build compile it/)
  }, holdsStarts(1, 10_000))

  it("two bundled sidecars export one request's spans over OTLP under their service names", async () => {
    const otlp = await startOtlpReceiver()
    cleanup.add(() => otlp.close())
    const app = await startApp(cleanup, (_req, res) => res.end("hello"))
    const env = { OTEL_EXPORTER_OTLP_ENDPOINT: otlp.url, OTEL_EXPORTER_OTLP_PROTOCOL: "http/json", OTEL_BSP_SCHEDULE_DELAY: "50" }
    const spawnBundled = (args: ReadonlyArray<string>): SidecarProcess => {
      const started = spawnSidecarProcess([...args, "--outbound", "127.0.0.1:0", "--inbound", "127.0.0.1:0", "--admin", "127.0.0.1:0"], [], join(out, "cli", "main.js"), env)
      cleanup.add(() => killIfRunning(started.proc))
      return started
    }
    const b = await spawnBundled(["--service", "catalog", "--app", app.address]).ready
    const a = await spawnBundled(["--service", "store", "--app", "none", "--endpoint", `catalog=${b.inbound}`]).ready

    const answer = await call(portOf(a.outbound), { path: "/items", headers: { host: "catalog" } })
    expect(answer.status).toBe(200)
    expect(answer.body.toString()).toBe("hello")

    // Each sidecar exports its own batch; wait on the receiver until both services have spoken.
    const spans: Array<ExportedSpan> = []
    while (!["store", "catalog"].every((service) => spans.some((span) => span.service === service))) {
      spans.push(...spansOf((await withTimeout(otlp.next(), 10_000, "an OTLP export from each sidecar")).body))
    }
    const store = spans.filter((span) => span.service === "store")
    const catalog = spans.filter((span) => span.service === "catalog")
    const traceId = store[0]!.traceId
    expect(traceId).toMatch(/^[0-9a-f]{32}$/)
    // One trace across both processes: the far sidecar's spans continue the near one's context.
    expect([...store, ...catalog].every((span) => span.traceId === traceId)).toBe(true)
    const storeIds = new Set(store.map((span) => span.spanId))
    expect(catalog.some((span) => storeIds.has(span.parentSpanId))).toBe(true)
  }, holdsStarts(2, 20_000))
})
