// Local discovery through a shared directory (what the demo uses): announcements appear with their
// weight, a stop removes its announcement at once (the goodbye), an announcement whose process is
// gone is dropped on the next rescan, and another mesh's announcements are ignored.
import { spawnSync } from "node:child_process"
import { mkdtempSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { afterEach, describe, expect, it } from "vitest"
import { directorySource } from "../../src/discovery/directorySource.ts"
import type { EndpointUpdate } from "../../src/discovery/types.ts"
import { Recorder } from "./recorder.ts"

const quiet = () => {}
const resetOf = (service: string, count: number) => (u: EndpointUpdate) => u._tag === "Reset" && u.service === service && u.endpoints.length === count

describe("directorySource", () => {
  const stops: Array<() => void> = []
  let dir = ""
  afterEach(() => {
    for (const stop of stops.splice(0)) stop()
    rmSync(dir, { recursive: true, force: true })
  })
  const start = (options: Partial<Parameters<typeof directorySource>[0]> = {}) => {
    const updates = new Recorder<EndpointUpdate>()
    const stop = directorySource({ directory: dir, mesh: "m", rescanMs: 50, log: quiet, ...options }).start(updates.push)
    stops.push(stop)
    return { updates, stop }
  }

  it("reports what others announce, with their weight and identity, and drops an announcement at its goodbye", async () => {
    dir = mkdtempSync(join(tmpdir(), "iip-mesh-local-"))
    const browser = start()
    const publisher = directorySource({
      directory: dir,
      mesh: "m",
      announce: { service: "catalog", host: "127.0.0.1", port: 4143, weight: 3, node: "b", identity: "spiffe://iip-mesh.local/svc/catalog" },
      log: quiet
    })
    const stopPublisher = publisher.start(() => {})
    const seen = await browser.updates.waitFor(resetOf("catalog", 1), { timeoutMs: 2000 })
    expect(seen).toMatchObject({ endpoints: [{ service: "catalog", host: "127.0.0.1", port: 4143, weight: 3, node: "b", source: "local", identity: "spiffe://iip-mesh.local/svc/catalog" }] })
    const from = browser.updates.items.length
    stopPublisher()
    await browser.updates.waitFor(resetOf("catalog", 0), { from, timeoutMs: 2000 })
  })

  it("drops an announcement whose process is gone, and ignores another mesh", async () => {
    dir = mkdtempSync(join(tmpdir(), "iip-mesh-local-"))
    const exited = spawnSync(process.execPath, ["-e", "process.exit(0)"]).pid!
    const write = (name: string, fields: object) =>
      writeFileSync(join(dir, `${name}.json`), JSON.stringify({ service: "pricing", host: "127.0.0.1", weight: 1, ...fields }))
    write("alive", { port: 1, node: "alive", mesh: "m", pid: process.pid })
    write("dead", { port: 2, node: "dead", mesh: "m", pid: exited })
    write("other", { port: 3, node: "other", mesh: "other-mesh", pid: process.pid })
    const { updates } = start()
    const seen = await updates.waitFor(resetOf("pricing", 1), { timeoutMs: 2000 })
    expect(seen).toMatchObject({ endpoints: [{ port: 1 }] })
  })
})
