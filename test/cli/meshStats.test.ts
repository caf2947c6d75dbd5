// `iip-mesh stat`, `top` and `tap` against the live demo (`iip-mesh demo --ready-file F`, a child
// process): after storefront page loads, stat lists every demo service with its success rate,
// rps and percentiles and the chain's edges (storefront -> catalog -> pricing), `stat catalog` its routes;
// top lists the busiest routes; tap prints the records its filter takes while load runs (calls to
// catalog are its Effect RPC's POSTs), and stops
// after --count. An admin URL that does not answer is named on stderr, the others still shown.
import { type ChildProcess, spawn } from "node:child_process"
import { readFileSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join, resolve } from "node:path"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { runCli } from "../files/support.ts"
import { Cleanup, withTimeout } from "../support/iipRaw.ts"

const main = resolve(import.meta.dirname, "../../src/cli/main.ts")
const readyFile = join(tmpdir(), `iip-mesh-stats-${process.pid}.json`)

interface Ready {
  readonly entry: string
  readonly controls: ReadonlyArray<string>
}

/**
 * Bounds sized for a loaded machine (a CLI start takes 2 s of CPU, 9 s of wall time at load 15; the
 * demo starts seven apps and its sidecars): each wait ends at its event (an exit, the ready line),
 * so a quiet machine never waits them out.
 */
const CLI_MS = 60_000
const DEMO_MS = 120_000
const TEST_MS = 90_000

/** `iip-mesh <args>` to its exit (bounded), any child left killed after the file. */
const children = new Cleanup()
const run = (args: Array<string>) => runCli(children, args, CLI_MS)

const rowOf = (text: string, ...cells: Array<string>) => text.split("\n").find((line) => cells.every((cell, i) => line.split(/\s+/)[i] === cell))

describe("iip-mesh stat, top and tap on the demo", () => {
  let demo: ChildProcess
  let ready: Ready

  beforeAll(async () => {
    demo = spawn(process.execPath, [main, "demo", "--ready-file", readyFile], { stdio: ["ignore", "pipe", "inherit"] })
    await withTimeout(new Promise<void>((up, failed) => {
      let out = ""
      demo.stdout!.on("data", (chunk: Buffer) => {
        out += chunk.toString()
        if (out.includes("stop      Ctrl-C")) up()
      })
      demo.once("exit", (code) => failed(new Error(`demo exited with ${code} before it was up`)))
    }), DEMO_MS, "the demo")
    ready = JSON.parse(readFileSync(readyFile, "utf8")) as Ready
    for (let i = 0; i < 10; i++) expect((await fetch(ready.entry)).status).toBe(200)
  }, DEMO_MS + 30_000)

  afterAll(async () => {
    await children.run()
    if (demo.exitCode === null) demo.kill("SIGKILL")
    rmSync(readyFile, { force: true })
  })

  it("stat: every demo service and the chain's edges; stat catalog: its routes", async () => {
    // Three reads of a demo that is not loaded meanwhile: their processes start side by side.
    const [result, meshWide, catalog] = await Promise.all([
      run(["stat", "--admin", ready.controls[0]!]),
      // --mesh: the admin's /federation (in the demo its peers are its own sidecars: the same view).
      run(["stat", "--mesh", "--admin", ready.controls[1]!]),
      run(["stat", "catalog", "--admin", ready.controls[0]!, "--window", "10m"])
    ])
    expect(result.stderr).toBe("")
    expect(result.code).toBe(0)
    for (const service of ["catalog", "pricing"]) {
      const row = rowOf(result.stdout, service)
      expect(row, `${service} in\n${result.stdout}`).toBeDefined()
      expect(row).toMatch(/100\.00%\s+\d+\.\d{2}\s+[\d.]+ms\s+[\d.]+ms\s+[\d.]+ms\s+\d+/)
    }
    expect(rowOf(result.stdout, "storefront", "catalog"), result.stdout).toBeDefined()
    expect(rowOf(result.stdout, "catalog", "pricing"), result.stdout).toBeDefined()
    expect(meshWide.code).toBe(0)
    for (const service of ["catalog", "pricing"]) expect(rowOf(meshWide.stdout, service), meshWide.stdout).toBeDefined()
    expect(rowOf(meshWide.stdout, "storefront", "catalog"), meshWide.stdout).toBeDefined()
    expect(catalog.code).toBe(0)
    expect(catalog.stdout).toMatch(/^ROUTE/m)
    expect(catalog.stdout).toMatch(/^\/\S+\s+100\.00%/m)
  }, TEST_MS)

  it("stat with an admin that does not answer: named on stderr, the other shown", async () => {
    const [result, none] = await Promise.all([run(["stat", "--admin", `http://127.0.0.1:1,${ready.controls[0]!}`]), run(["stat", "--admin", "http://127.0.0.1:1"])])
    expect(result.code).toBe(0)
    expect(result.stderr).toContain("http://127.0.0.1:1")
    expect(rowOf(result.stdout, "catalog")).toBeDefined()
    expect(none.code).toBe(1)
    expect(none.stderr).toContain("no admin answered")
  }, TEST_MS)

  it("top: the busiest routes", async () => {
    const result = await run(["top", "--admin", ready.controls[0]!, "--iterations", "1", "--window", "10m"])
    expect(result.code).toBe(0)
    expect(result.stdout).toMatch(/^SERVICE\s+ROUTE\s+SUCCESS/m)
    expect(result.stdout).toMatch(/^(catalog|pricing)\s+\/\S*\s+100\.00%/m)
  }, TEST_MS)

  it("tap --service catalog --count 3: three records of calls to catalog while load runs", async () => {
    const tapped = run(["tap", "--admin", ready.controls[0]!, "--service", "catalog", "--count", "3"])
    let done = false
    void tapped.then(() => (done = true))
    // Load until tap has its records (bounded: tap's own start is most of the wait).
    const deadline = Date.now() + CLI_MS
    while (!done && Date.now() < deadline) await fetch(ready.entry).then((r) => r.arrayBuffer())
    const result = await tapped
    expect(result.code).toBe(0)
    const lines = result.stdout.trim().split("\n")
    expect(lines).toHaveLength(3)
    for (const line of lines) expect(line).toMatch(/^\S+Z (in |out) \S+->catalog POST \/rpc\S* 200 [\d.]+ms \S+ trace=[0-9a-f]{32}$/)
  }, TEST_MS)
})
