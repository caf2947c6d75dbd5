// Sidecars that find each other by mDNS with no endpoint in their configuration (issue 5): run
// inside a loopback-only network namespace the test creates (`unshare -rn`), so no multicast
// leaves it. B's endpoint reaches A quickly with the announced weight, a request through A is
// answered by B's app, and B's graceful stop (its goodbye) removes it from A at once.
import { spawn } from "node:child_process"
import { resolve } from "node:path"
import { describe, expect, it } from "vitest"
import { loopbackSetup, probeLoopbackNamespace } from "../support/netnsLo.ts"
import { gate, readJsonLines } from "../support/netnsProcess.ts"

const script = resolve(import.meta.dirname, "../support/netnsSidecars.ts")
const capability = probeLoopbackNamespace()
const { skip, title } = gate("sidecars discover each other by mDNS in a namespace of their own", capability)

describe.skipIf(skip)(title, () => {
  it("learns the peer within 1 s, routes to it, and drops it at once on its goodbye", async () => {
    const events = new Map<string, Record<string, unknown>>()
    const child = spawn("unshare", ["-rn", "sh", "-c", `${loopbackSetup} && exec "${process.execPath}" "${script}"`], {
      stdio: ["ignore", "pipe", "inherit"]
    })
    readJsonLines(child.stdout, (data) => events.set(String(data.event), data))
    const code = await new Promise<number | null>((done) => {
      const limit = setTimeout(() => child.kill("SIGKILL"), 30_000)
      child.once("exit", (exitCode) => {
        clearTimeout(limit)
        done(exitCode)
      })
    })
    console.log(`[mdns sidecars] ${JSON.stringify(Object.fromEntries(events))}`)
    expect(code).toBe(0)
    const discovered = events.get("discovered")!
    expect(discovered.found).toBe(true)
    expect(discovered.ms as number).toBeLessThan(1000)
    expect(discovered.endpoint).toMatchObject({ service: "catalog", host: "127.0.0.1", weight: 2, source: "mdns" })
    expect(events.get("answer")).toMatchObject({ status: 200, body: "from catalog" })
    expect(events.get("dropped")).toMatchObject({ dropped: true })
    expect(events.get("dropped")!.ms as number).toBeLessThan(200)
  }, 40_000)
})
