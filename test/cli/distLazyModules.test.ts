// The shipped CLI is a rolldown bundle (scripts/build.ts): test/cli/lazyModules.test.ts pins what a
// sidecar loads on the source tree, and this pins that the bundle keeps it: each `import()` of the
// code is a chunk of its own that an idle sidecar never loads, and the packages it bundles are
// not loaded again from node_modules. The bundle is built into a directory of its own inside the
// repository (the external packages resolve from there) and removed afterwards.
import { spawnSync } from "node:child_process"
import { existsSync, mkdtempSync, readdirSync, rmSync } from "node:fs"
import { join, resolve } from "node:path"
import { pathToFileURL } from "node:url"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { killIfRunning, type SidecarProcess, spawnSidecarProcess } from "../support/sidecarProcess.ts"

const root = resolve(import.meta.dirname, "../..")
const moduleLog = resolve(import.meta.dirname, "../support/loadedModules.ts")

/** Chunks named after the modules that are only imported lazily (rolldown names a chunk after its entry module). */
const lazyChunks = ["commands", "demo", "kubernetesSource", "federation", "adminClient", "sidecarIdentity", "certificates"]

describe("the bundled CLI loads only what a sidecar uses", () => {
  let out = ""
  let sidecar: SidecarProcess | undefined
  beforeAll(() => {
    out = mkdtempSync(join(root, ".dist-lazy-"))
    const built = spawnSync(process.execPath, [join(root, "scripts", "build.ts"), out], { encoding: "utf8" })
    expect(built.status, built.stderr).toBe(0)
  }, 60_000)
  afterAll(() => {
    killIfRunning(sidecar?.proc)
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
  })
})
