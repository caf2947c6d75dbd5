// mDNS discovery between processes on one host, inside a loopback-only namespace the test creates
// (`unshare -rn`): a new publisher appears with its TXT fields, a goodbye removes it at once, a
// SIGKILLed one is dropped by the liveness re-query within 5 s (and, with an injected clock, exactly
// when silenceMs of that clock has passed), and another mesh is ignored.
// No mDNS packet leaves that namespace.
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest"
import type { MdnsSourceOptions } from "../../src/discovery/mdnsSource.ts"
import { CHILD_START_MS, holdsStarts } from "../support/childStart.ts"
import { LoopbackNamespace, mdnsChildScript, type NamespaceChild, probeLoopbackNamespace } from "../support/netnsLo.ts"
import { assertCapability, gate, isAdd, isRemove, reportedUpdate } from "../support/netnsProcess.ts"

const capability = probeLoopbackNamespace()
const suite = gate("mDNS discovery on one host (loopback namespace)", capability)

type ChildOptions = Omit<MdnsSourceOptions, "timer" | "log" | "mesh"> & { readonly mesh?: string }

const ms = (n: number) => `${n.toFixed(1)} ms`

// Each test starts up to 4 children one after another: its timeout holds those starts.
describe.skipIf(suite.skip)(suite.title, { timeout: holdsStarts(4, 15_000) }, () => {
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

  const start = async (id: string, options: ChildOptions, extra: { readonly manualClock?: boolean } = {}): Promise<NamespaceChild> => {
    const config = { options: { mesh: "test", ...options }, allowedPrefixes: ["127."], ...extra }
    const child = ns!.spawn(id, mdnsChildScript, [JSON.stringify(config)])
    started.push(child)
    const line = await child.log.waitFor((d) => d.type === "ready" || d.type === "fatal" || d.type === "exit", CHILD_START_MS, `${id} to start`)
    if (line.data.type !== "ready") throw new Error(`${id} did not start: ${JSON.stringify(child.log.lines.map((l) => l.data))}`)
    return child
  }
  const publisher = (id: string, port: number, extra: Partial<ChildOptions> = {}) =>
    start(id, { node: id, announce: [{ service: "catalog", port, address: "127.0.0.1" }], ...extra })

  it("a new publisher appears to a running browser within 1 s, with weight, version, zone and node from its TXT", async () => {
    const browser = await start("b1", { node: "b1" })
    const p1 = await start("p1", {
      node: "p1",
      announce: [{ service: "catalog", port: 7001, address: "127.0.0.1", weight: 3, version: "1.2.0", zone: "z1" }]
    })
    await p1.log.waitFor((d) => d.type === "log" && d.event === "mdns-published", 2000, "p1 to announce")
    const started = p1.log.find((d) => d.type === "ready")!
    const added = await browser.log.waitFor(isAdd("p1"), 2000, "p1 to appear")
    expect(added.at - started.at).toBeLessThan(1000)
    expect(reportedUpdate(added.data)!.endpoint).toStrictEqual({
      service: "catalog",
      host: "127.0.0.1",
      port: 7001,
      weight: 3,
      features: ["mesh/1"],
      source: "mdns",
      version: "1.2.0",
      zone: "z1",
      node: "p1"
    })
    console.log(`mdns loopback: appear ${ms(added.at - started.at)} after the source started (${ms(added.at - p1.spawnedAt)} after spawn)`)

    // A browser started after the publisher finds it through its first query.
    const late = await start("b1-late", { node: "b1-late" })
    const found = await late.log.waitFor(isAdd("p1"), 1000, "p1 to appear to a late browser")
    console.log(`mdns loopback: late browser finds a publisher ${ms(found.at - late.log.find((d) => d.type === "ready")!.at)} after it started`)
    // The publisher does not report itself.
    expect(p1.log.find(isAdd("p1"))).toBeUndefined()
  })

  it("a stopped publisher's goodbye removes it at once (liveness could not: silence limit 60 s)", async () => {
    const browser = await start("b2", { node: "b2", silenceMs: 60_000 })
    const p2 = await publisher("p2", 7002)
    await browser.log.waitFor(isAdd("p2"), 2000, "p2 to appear")
    const sent = performance.now()
    p2.send("stop")
    const removed = await browser.log.waitFor(isRemove("127.0.0.1:7002"), 1000, "p2's goodbye")
    expect(removed.at - sent).toBeLessThan(500)
    await p2.log.waitFor((d) => d.type === "stopped", 2000, "p2 to stop")
    console.log(`mdns loopback: goodbye drop ${ms(removed.at - sent)} after stop`)
  })

  it("a SIGKILLed publisher is dropped within 5 s by the re-query, while a live one stays", async () => {
    const browser = await start("b3", { node: "b3" })
    const dying = await publisher("p3-dying", 7003)
    const living = await publisher("p3-living", 7004)
    await browser.log.waitFor(isAdd("p3-dying"), 2000, "p3-dying to appear")
    await browser.log.waitFor(isAdd("p3-living"), 2000, "p3-living to appear")
    const killed = performance.now()
    dying.kill("SIGKILL")
    const removed = await browser.log.waitFor(isRemove("127.0.0.1:7003"), 5000, "the killed publisher to be dropped")
    expect(removed.at - killed).toBeLessThan(5000)
    await browser.log.waitFor((d) => d.type === "log" && d.event === "mdns-expired", 1000, "the expiry to be logged")
    expect(browser.log.find(isRemove("127.0.0.1:7004"))).toBeUndefined()
    expect(living.exited).toBe(false)
    console.log(`mdns loopback: SIGKILL drop ${ms(removed.at - killed)} after the kill (query 1000 ms, silence 2500 ms)`)
  })

  it("expiry follows the source's clock: a killed publisher stays until silenceMs of (injected) time has passed", async () => {
    const browser = await start("b5", { node: "b5", silenceMs: 2500 }, { manualClock: true })
    const victim = await publisher("p5", 7007)
    const added = await browser.log.waitFor(isAdd("p5"), 2000, "p5 to appear")
    victim.kill("SIGKILL")
    await victim.log.waitFor((d) => d.type === "exit", 2000, "p5 to die")
    let from = browser.log.lines.indexOf(added)
    const tick = async (advanceMs: number) => {
      browser.send(`tick ${advanceMs}`)
      const ticked = await browser.log.waitFor((d) => d.type === "ticked", 2000, "the tick", from + 1)
      const removed = browser.log.find(isRemove("127.0.0.1:7007"), from)
      from = browser.log.lines.indexOf(ticked)
      return { now: ticked.data.now, removed: removed !== undefined }
    }
    // Seen at clock 0; silence is measured in the injected time only, however long real time takes.
    expect(await tick(1000)).toStrictEqual({ now: 1000, removed: false })
    expect(await tick(1000)).toStrictEqual({ now: 2000, removed: false })
    expect(await tick(500)).toStrictEqual({ now: 2500, removed: false })
    expect(await tick(1)).toStrictEqual({ now: 2501, removed: true })
  })

  it("records of another mesh are ignored; each mesh sees only its own", async () => {
    const ours = await start("b4", { node: "b4" })
    const theirs = await start("b4-other", { node: "b4-other", mesh: "other" })
    await publisher("o4", 7005, { mesh: "other" })
    await publisher("p4", 7006)
    await ours.log.waitFor(isAdd("p4"), 2000, "p4 to appear to its mesh")
    await theirs.log.waitFor(isAdd("o4"), 2000, "o4 to appear to its mesh")
    const ignoredBy = (child: NamespaceChild, node: string) =>
      child.log.waitFor(
        (d) => d.type === "log" && d.event === "mdns-ignored" && String((d.fields as { fqdn: string }).fqdn).includes(` ${node} `),
        2000,
        `${node} to be seen and ignored`
      )
    await ignoredBy(ours, "o4")
    await ignoredBy(theirs, "p4")
    expect(ours.log.find(isAdd("o4"))).toBeUndefined()
    expect(theirs.log.find(isAdd("p4"))).toBeUndefined()
  })
})
