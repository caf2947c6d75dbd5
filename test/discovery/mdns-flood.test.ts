// A hostile host floods the link with mDNS announcements of more instances than any mesh has
// (test/support/mdnsFlooder.ts), inside a loopback-only namespace the test creates; a browsing
// sidecar's mDNS source (test/support/netnsMdnsChild.ts) must stay up, track at most
// MaxMdnsInstances of them, say so once, and keep the real publisher it knew; 1,000 datagrams
// that do not decode before the flood make a few log lines, not 1,000. (Through
// bonjour-service's browser, which looks each answer up in every instance it ever saw, the same
// flood got 1,381-1,893 instances through in 20 s, a core pinned and the socket dropping the rest.)
// No mDNS packet leaves that namespace.
import { resolve } from "node:path"
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest"
import { MaxMdnsInstances } from "../../src/discovery/mdnsSource.ts"
import { CHILD_START_MS, holdsStarts } from "../support/childStart.ts"
import { LoopbackNamespace, mdnsChildScript, type NamespaceChild, probeLoopbackNamespace } from "../support/netnsLo.ts"
import { assertCapability, gate, isAdd, isRemove } from "../support/netnsProcess.ts"

const capability = probeLoopbackNamespace()
const suite = gate("mDNS flood (loopback namespace)", capability)
const flooderScript = resolve(import.meta.dirname, "../support/mdnsFlooder.ts")

// Each test starts up to 3 children one after another: its timeout holds those starts.
describe.skipIf(suite.skip)(suite.title, { timeout: holdsStarts(3, 20_000) }, () => {
  let ns: LoopbackNamespace | undefined
  let started: Array<NamespaceChild> = []
  beforeAll(async () => {
    assertCapability(capability, "unshare -rn (a user + network namespace)")
    ns = await LoopbackNamespace.start()
  }, holdsStarts(1, 5000))
  afterEach(() => {
    for (const child of started) child.kill("SIGKILL")
    started = []
  })
  afterAll(async () => {
    await ns?.close()
  })

  const spawn = async (id: string, script: string, config: unknown): Promise<NamespaceChild> => {
    const child = ns!.spawn(id, script, [JSON.stringify(config)])
    started.push(child)
    const line = await child.log.waitFor((d) => d.type === "ready" || d.type === "fatal" || d.type === "exit", CHILD_START_MS, `${id} to start`)
    if (line.data.type !== "ready") throw new Error(`${id} did not start: ${JSON.stringify(child.log.lines.map((l) => l.data))}`)
    return child
  }

  it(`twice MaxMdnsInstances announced at once: the browser tracks ${MaxMdnsInstances}, logs the table full once, keeps the real one and stays up`, async () => {
    const browser = await spawn("browser", mdnsChildScript, { options: { mesh: "test", node: "browser", silenceMs: 60_000 }, allowedPrefixes: ["127."] })
    await spawn("real", mdnsChildScript, { options: { mesh: "test", node: "real", announce: [{ service: "catalog", port: 7001, address: "127.0.0.1" }] }, allowedPrefixes: ["127."] })
    await browser.log.waitFor(isAdd("real"), 3000, "the real publisher to appear")
    const flooder = await spawn("flooder", flooderScript, { count: 2 * MaxMdnsInstances, perPacket: 20, mesh: "test", service: "flood", garbage: 1000 })
    await flooder.log.waitFor((d) => d.type === "sent", 30_000, "the flood to be sent")
    // What the browser reported: the real publisher and flood instances up to the bound, no more.
    const adds = () => browser.log.lines.filter((l) => l.data.type === "update" && (l.data.update as { _tag: string })._tag === "Add").length
    await browser.log.waitFor((d) => d.type === "log" && d.event === "mdns-table-full", 10_000, "the table to be full")
    expect(adds()).toBe(MaxMdnsInstances)
    expect(browser.log.lines.filter((l) => l.data.type === "log" && l.data.event === "mdns-table-full")).toHaveLength(1)
    expect(browser.log.find(isRemove("127.0.0.1:7001"))).toBeUndefined()
    expect(browser.exited).toBe(false)
    // The 1,000 undecodable datagrams before it: the first of an interval logged, the rest counted.
    const warnings = browser.log.lines.filter((l) => l.data.type === "log" && l.data.event === "mdns-warning")
    expect(warnings.length).toBeGreaterThanOrEqual(1)
    expect(warnings.length).toBeLessThanOrEqual(5)
    await browser.log.waitFor((d) => d.type === "log" && d.event === "mdns-warnings", 3000, "the count of the other warnings")
    console.log(`mdns flood: ${2 * MaxMdnsInstances} instances announced, ${adds()} reported`)
  })

  it("a flood that goes silent expires at once: the expiry is logged in a few lines with its count, not a line per instance (2,000 lines for 2,000 instances)", async () => {
    const browser = await spawn("expiring", mdnsChildScript, { options: { mesh: "test", node: "expiring", silenceMs: 1000 }, allowedPrefixes: ["127."], manualClock: true })
    const flooder = await spawn("silent-flooder", flooderScript, { count: 2000, perPacket: 20, mesh: "test", service: "flood" })
    await flooder.log.waitFor((d) => d.type === "sent", 30_000, "the flood to be sent")
    const adds = () => browser.log.lines.filter((l) => l.data.type === "update" && (l.data.update as { _tag: string })._tag === "Add").length
    await browser.log.waitFor(() => adds() === 2000, 10_000, "the 2,000 instances to be listed")
    // Silent for more than silenceMs: one re-query tick drops them all; a second tick, more time.
    browser.send("tick 1500")
    await browser.log.waitFor((d) => d.type === "ticked" && d.now === 1500, 5_000, "the first tick")
    browser.send("tick 1000")
    await browser.log.waitFor((d) => d.type === "ticked" && d.now === 2500, 5_000, "the second tick")
    const removes = browser.log.lines.filter((l) => l.data.type === "update" && (l.data.update as { _tag: string })._tag === "Remove").length
    expect(removes).toBe(2000)
    const expired = browser.log.lines.filter((l) => l.data.type === "log" && l.data.event === "mdns-expired")
    expect(expired.length).toBeGreaterThanOrEqual(1)
    expect(expired.length).toBeLessThanOrEqual(2)
    expect(expired.reduce((sum, l) => sum + ((l.data.fields as { count?: number }).count ?? 0), 0)).toBe(2000)
  })
})
