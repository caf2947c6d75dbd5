// The admin dashboard in a real browser (Debian chromium driven by playwright-core, testing.md
// "Pages in a real browser"): the real demo (`iip-mesh demo --ready-file F`, a child process)
// serves it; after a few requests to the storefront the page lists the demo's sidecars
// (storefront, catalog, two pricing) and the endpoints they know (as the storefront's /mesh
// reports them), and a click on a trace that crossed several sidecars draws its waterfall with
// spans from at least two of them. The page logs no errors and no request of it fails. A screenshot (PNG) is saved under
// test-results/ and its path printed. Every wait is on a selector or an event, bounded.
import { type ChildProcess, spawn } from "node:child_process"
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join, resolve } from "node:path"
import { type BrowserContext, chromium, type Page } from "playwright-core"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { withTimeout } from "../support/iipRaw.ts"
import { gate } from "../support/netnsProcess.ts"

const main = resolve(import.meta.dirname, "../../src/cli/main.ts")
const resultsDir = resolve(import.meta.dirname, "../../test-results")
const CHROMIUM = "/usr/bin/chromium"
/** testing.md's flags (headless comes from the `headless` option, the profile from launchPersistentContext). */
const CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"]
const WAIT_MS = 15_000
/** scripts/test-tools.sh (run by `npm test`) installs chromium as root; elsewhere the suite says why it skips (in CI it fails). */
const suite = gate("the admin dashboard in headless chromium, on the demo mesh", existsSync(CHROMIUM) ? { ok: true } : { ok: false, reason: `no ${CHROMIUM} (apt chromium)` })

interface Ready {
  readonly entry: string
  readonly admins: ReadonlyArray<string>
  readonly controls: ReadonlyArray<string>
  readonly dashboard: string
}

interface MeshView {
  readonly services: Readonly<Record<string, ReadonlyArray<{ readonly address: string }>>>
}

describe.skipIf(suite.skip)(suite.title, () => {
  let work = ""
  let demo: ChildProcess | undefined
  let exited: Promise<number | null> = Promise.resolve(null)
  let ready: Ready
  let browser: BrowserContext | undefined
  let page: Page
  const pageErrors: Array<string> = []

  beforeAll(async () => {
    work = mkdtempSync(join(tmpdir(), "iip-mesh-dashboard-"))
    const readyFile = join(work, "ready.json")
    const child = spawn(process.execPath, [main, "demo", "--ready-file", readyFile], { stdio: ["ignore", "pipe", "inherit"] })
    demo = child
    exited = new Promise((done) => child.once("exit", (code) => done(code)))
    await withTimeout(
      new Promise<void>((up, failed) => {
        let out = ""
        child.stdout!.on("data", (chunk: Buffer) => {
          out += chunk.toString()
          if (out.includes("stop      Ctrl-C")) up()
        })
        child.once("exit", (code) => failed(new Error(`demo exited with ${code} before it was up`)))
      }),
      20_000,
      "the demo to come up"
    )
    ready = JSON.parse(readFileSync(readyFile, "utf8")) as Ready

    // Traffic, so there are traces: each page view calls catalog and pricing through the sidecars.
    for (let i = 0; i < 4; i++) {
      const response = await fetch(ready.entry)
      expect(response.status).toBe(200)
      await response.text()
    }

    browser = await chromium.launchPersistentContext(join(work, "profile"), {
      executablePath: CHROMIUM,
      headless: true,
      args: CHROMIUM_FLAGS,
      viewport: { width: 1280, height: 900 }
    })
    page = browser.pages()[0] ?? (await browser.newPage())
    page.on("pageerror", (error) => pageErrors.push(error.message))
    page.on("console", (message) => {
      if (message.type() === "error") pageErrors.push(message.text())
    })
    page.on("response", (response) => {
      if (response.status() >= 400) pageErrors.push(`${response.status()} ${response.url()}`)
    })
  }, 60_000)

  afterAll(async () => {
    await browser?.close()
    if (demo !== undefined && demo.exitCode === null && demo.signalCode === null) {
      demo.kill("SIGINT")
      const code = await withTimeout(exited, 15_000, "the demo to stop").catch(() => {
        demo!.kill("SIGKILL")
        return "killed"
      })
      expect(code).toBe(0)
    }
    if (work !== "") rmSync(work, { recursive: true, force: true })
  }, 30_000)

  it("lists the demo's sidecars and endpoints, and draws a trace across at least two sidecars", async () => {
    expect(ready.dashboard).toBe(`${ready.controls[0]}/`)
    await page.goto(ready.dashboard)

    // The mesh table: a row per sidecar (two for pricing), and every endpoint the storefront knows.
    const mesh = page.locator("#mesh tbody")
    await mesh.locator('tr[data-sidecar="storefront"]').waitFor({ timeout: WAIT_MS })
    await mesh.locator('tr[data-sidecar="catalog"]').waitFor({ timeout: WAIT_MS })
    await mesh.locator('tr[data-sidecar="pricing"]').nth(1).waitFor({ timeout: WAIT_MS })
    expect(await mesh.locator("tr[data-sidecar]").evaluateAll((rows) => rows.map((r) => r.getAttribute("data-sidecar")))).toStrictEqual([
      "storefront",
      "catalog",
      "pricing",
      "pricing"
    ])
    const known = ((await (await fetch(`${ready.controls[0]}/mesh`)).json()) as MeshView).services
    expect(Object.keys(known).sort()).toStrictEqual(["catalog", "pricing"])
    expect(known.pricing).toHaveLength(2)
    for (const [service, endpoints] of Object.entries(known)) {
      for (const { address } of endpoints) {
        await mesh.locator(`tr[data-service="${service}"][data-endpoint="${address}"]`).first().waitFor({ timeout: WAIT_MS })
      }
    }

    // A trace that crossed the storefront's sidecar and at least one other.
    const across = page.locator('#traces tbody tr[data-services*="storefront"][data-services*=","]').first()
    await across.waitFor({ timeout: WAIT_MS })
    const traceId = (await across.getAttribute("data-trace"))!
    expect(traceId).toMatch(/^[0-9a-f]{32}$/)
    await across.locator("a").click()

    // The waterfall: one row per span the demo's shared store holds, from two sidecars or more.
    const waterfall = page.locator("#waterfall")
    await waterfall.locator('.row[data-service="storefront"]').first().waitFor({ timeout: WAIT_MS })
    await waterfall.locator('.row[data-span]:not([data-service="storefront"])').first().waitFor({ timeout: WAIT_MS })
    await expect.poll(() => page.locator("#trace-title").textContent(), { timeout: WAIT_MS }).toContain(traceId)
    const rows = await waterfall.locator(".row[data-span]").evaluateAll((found) =>
      found.map((r) => ({ span: r.getAttribute("data-span"), service: r.getAttribute("data-service"), instance: r.getAttribute("data-instance") }))
    )
    const spans = ((await (await fetch(`${ready.controls[0]}/traces/${traceId}`)).json()) as { spans: ReadonlyArray<{ spanId: string }> }).spans
    expect(rows.map((r) => r.span).sort()).toStrictEqual(spans.map((s) => s.spanId).sort())
    expect(new Set(rows.map((r) => r.service)).size).toBeGreaterThanOrEqual(2)
    expect(new Set(rows.map((r) => r.instance)).size).toBeGreaterThanOrEqual(2)
    // Each bar inside its track.
    const bars = await waterfall.locator(".row[data-span] .bar").evaluateAll((found) =>
      found.map((bar) => {
        const track = bar.parentElement!.getBoundingClientRect()
        const box = bar.getBoundingClientRect()
        return box.left >= track.left - 0.5 && box.right <= track.right + 0.5 && box.width > 0
      })
    )
    expect(bars.length).toBe(rows.length)
    expect(bars.every(Boolean)).toBe(true)

    mkdirSync(resultsDir, { recursive: true })
    const screenshot = join(resultsDir, "dashboard.png")
    await page.screenshot({ path: screenshot, fullPage: true })
    console.log(`dashboard screenshot: ${screenshot}`)
    expect(readFileSync(screenshot).subarray(1, 4).toString()).toBe("PNG")

    expect(pageErrors).toStrictEqual([])
  }, 60_000)
})
