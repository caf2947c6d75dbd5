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

/** `iip-mesh <args>` to its exit (bounded), any child left killed after the file. */
const children = new Cleanup()
const run = (args: Array<string>) => runCli(children, args)

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
    }), 30_000, "the demo")
    ready = JSON.parse(readFileSync(readyFile, "utf8")) as Ready
    for (let i = 0; i < 10; i++) expect((await fetch(ready.entry)).status).toBe(200)
  }, 40_000)

  afterAll(async () => {
    await children.run()
    if (demo.exitCode === null) demo.kill("SIGKILL")
    rmSync(readyFile, { force: true })
  })

  it("stat: every demo service and the chain's edges; stat catalog: its routes", async () => {
    const result = await run(["stat", "--admin", ready.controls[0]!])
    expect(result.stderr).toBe("")
    expect(result.code).toBe(0)
    for (const service of ["catalog", "pricing"]) {
      const row = rowOf(result.stdout, service)
      expect(row, `${service} in\n${result.stdout}`).toBeDefined()
      expect(row).toMatch(/100\.00%\s+\d+\.\d{2}\s+[\d.]+ms\s+[\d.]+ms\s+[\d.]+ms\s+\d+/)
    }
    expect(rowOf(result.stdout, "storefront", "catalog"), result.stdout).toBeDefined()
    expect(rowOf(result.stdout, "catalog", "pricing"), result.stdout).toBeDefined()
    // --mesh: the admin's /federation (in the demo its peers are its own sidecars: the same view).
    const meshWide = await run(["stat", "--mesh", "--admin", ready.controls[1]!])
    expect(meshWide.code).toBe(0)
    for (const service of ["catalog", "pricing"]) expect(rowOf(meshWide.stdout, service), meshWide.stdout).toBeDefined()
    expect(rowOf(meshWide.stdout, "storefront", "catalog"), meshWide.stdout).toBeDefined()
    const catalog = await run(["stat", "catalog", "--admin", ready.controls[0]!, "--window", "10m"])
    expect(catalog.code).toBe(0)
    expect(catalog.stdout).toMatch(/^ROUTE/m)
    expect(catalog.stdout).toMatch(/^\/\S+\s+100\.00%/m)
  }, 20_000)

  it("stat with an admin that does not answer: named on stderr, the other shown", async () => {
    const result = await run(["stat", "--admin", `http://127.0.0.1:1,${ready.controls[0]!}`])
    expect(result.code).toBe(0)
    expect(result.stderr).toContain("http://127.0.0.1:1")
    expect(rowOf(result.stdout, "catalog")).toBeDefined()
    const none = await run(["stat", "--admin", "http://127.0.0.1:1"])
    expect(none.code).toBe(1)
    expect(none.stderr).toContain("no admin answered")
  }, 20_000)

  it("top: the busiest routes", async () => {
    const result = await run(["top", "--admin", ready.controls[0]!, "--iterations", "1", "--window", "10m"])
    expect(result.code).toBe(0)
    expect(result.stdout).toMatch(/^SERVICE\s+ROUTE\s+SUCCESS/m)
    expect(result.stdout).toMatch(/^(catalog|pricing)\s+\/\S*\s+100\.00%/m)
  }, 20_000)

  it("tap --service catalog --count 3: three records of calls to catalog while load runs", async () => {
    const tapped = run(["tap", "--admin", ready.controls[0]!, "--service", "catalog", "--count", "3"])
    let done = false
    void tapped.then(() => (done = true))
    // Load until tap has its records (bounded).
    const deadline = Date.now() + 15_000
    while (!done && Date.now() < deadline) await fetch(ready.entry).then((r) => r.arrayBuffer())
    const result = await tapped
    expect(result.code).toBe(0)
    const lines = result.stdout.trim().split("\n")
    expect(lines).toHaveLength(3)
    for (const line of lines) expect(line).toMatch(/^\S+Z (in |out) \S+->catalog POST \/rpc\S* 200 [\d.]+ms \S+ trace=[0-9a-f]{32}$/)
  }, 20_000)
})
