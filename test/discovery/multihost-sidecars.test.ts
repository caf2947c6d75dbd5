// Real sidecars (the `iip-mesh sidecar` CLI) on three hosts that find each other by mDNS alone
// (issue 5, "Must show"): network namespaces on a bridge the test creates (as root; topology and
// safety rules in test/support/netnsHosts.ts: blackhole route for the test subnet, multicast only
// inside the namespaces). Each host runs an app and a sidecar bound to its own address for inbound
// and mDNS (test/support/meshHostAgent.ts is the app and the test's hands inside the namespace:
// it polls host1's admin /mesh and sends requests through host1's outbound, on that namespace's
// loopback). host1 runs "store", which calls "catalog" on host2 and host3.
// Asserts, with the measured times printed: a new catalog appears in host1's /mesh within 1 s of
// its ready line and is used (answers through host1's outbound); a drained one (SIGTERM) is
// dropped by its goodbye (within 1 s, before liveness could); a SIGKILLed one within 5 s; an
// unplugged host within 5 s and it comes back when plugged in again; with 30% packet loss on the
// bridge (nftables in the bridge namespace, when `nft` is installed) the mesh still converges.
import { execFileSync, spawnSync } from "node:child_process"
import { resolve } from "node:path"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { CHILD_START_MS, holdsStarts } from "../support/childStart.ts"
import { type Host, NetnsHosts, probeRootNetns } from "../support/netnsHosts.ts"
import { assertCapability, type Capability, gate, inCi, type JsonLineProcess, type Line } from "../support/netnsProcess.ts"

const agentScript = resolve(import.meta.dirname, "../support/meshHostAgent.ts")
const cli = resolve(import.meta.dirname, "../../src/cli/main.ts")

const capability = probeRootNetns()
const suite = gate("sidecars on three hosts find each other by mDNS (network namespaces on a bridge)", capability)
const nftCapability: Capability =
  spawnSync("sh", ["-c", "command -v nft"], { stdio: "ignore" }).status === 0
    ? { ok: true }
    : { ok: false, reason: "`nft` is not installed (apt nftables): packet loss is injected by an nftables rule on the bridge" }
const lossGate = gate("with 30% packet loss on the bridge the mesh still converges", capability.ok ? nftCapability : capability)

type Data = Record<string, unknown>
interface Sidecar {
  readonly proc: JsonLineProcess
  readonly ready: Line
  readonly outbound: string
  readonly admin: string
}

const ms = (n: number) => `${n.toFixed(0)} ms`
const catalogOf = (data: Data): ReadonlyArray<{ address: string; weight: number; source: string }> =>
  data.type === "mesh" ? (((data.services as Record<string, unknown>).catalog ?? []) as Array<{ address: string; weight: number; source: string }>) : []
const lists = (host: Host) => (data: Data) => data.type === "mesh" && catalogOf(data).some((e) => e.address.startsWith(`${host.address}:`))
const lacks = (host: Host) => (data: Data) => data.type === "mesh" && !catalogOf(data).some((e) => e.address.startsWith(`${host.address}:`))

describe.skipIf(suite.skip)(suite.title, () => {
  let net: NetnsHosts | undefined
  const agents = new Map<number, { proc: JsonLineProcess; appPort: number }>()
  const sidecars = new Map<number, Sidecar>()
  const weights = new Map([
    [1, 1],
    [2, 2],
    [3, 3]
  ])
  let requestId = 0

  beforeAll(async () => {
    assertCapability(capability, "root with iproute2 (network namespaces)")
    net = await NetnsHosts.create(3)
    for (const host of net.hosts) {
      const proc = net.exec(host, [agentScript], `${host.name}-agent`)
      const line = await proc.log.waitFor((d) => d.type === "app" || d.type === "exit", CHILD_START_MS, `${host.name}'s app to listen`)
      if (line.data.type !== "app") throw new Error(`${host.name}'s agent did not start: ${proc.stderr}`)
      expect(line.data.hostname).toBe(host.name)
      agents.set(host.index, { proc, appPort: line.data.port as number })
    }
  }, holdsStarts(3, 10_000))

  afterAll(async () => {
    await Promise.all([...sidecars.values(), ...agents.values()].map(({ proc }) => proc.close()))
    net?.destroy()
  })

  const host = (index: number) => net!.host(index)
  const watcher = () => agents.get(1)!.proc

  const startSidecar = async (index: number, service: string): Promise<Sidecar> => {
    const h = host(index)
    const args = [
      cli,
      "sidecar",
      "--service",
      service,
      "--node",
      h.name,
      "--app",
      `127.0.0.1:${agents.get(index)!.appPort}`,
      "--inbound",
      `${h.address}:0`,
      "--outbound",
      "127.0.0.1:0",
      "--admin",
      "127.0.0.1:0",
      "--admin-control",
      "127.0.0.1:0",
      "--mdns",
      "--mesh-name",
      "test",
      "--mdns-interface",
      h.address,
      "--weight",
      String(weights.get(index)),
      "--drain-timeout",
      "1s",
      "--request-timeout",
      "3s"
    ]
    const proc = net!.exec(h, args, `${h.name}-sidecar`)
    const ready = await proc.log.waitFor((d) => d.event === "sidecar-ready" || d.type === "exit", CHILD_START_MS, `${h.name}'s sidecar to be ready`)
    if (ready.data.event !== "sidecar-ready") throw new Error(`${h.name}'s sidecar did not start: ${JSON.stringify(ready.data)} ${proc.stderr}`)
    expect(ready.data.inbound).toMatch(new RegExp(`^${h.address.replaceAll(".", "\\.")}:\\d+$`))
    const sidecar = { proc, ready, outbound: String(ready.data.outbound), admin: String(ready.data.adminControl) }
    sidecars.set(index, sidecar)
    return sidecar
  }

  /** GET / through host1's outbound with Host: catalog, from inside host1. */
  const request = async (timeoutMs = 5000) => {
    const id = ++requestId
    const sent = performance.now()
    watcher().send(JSON.stringify({ cmd: "request", id, outbound: sidecars.get(1)!.outbound, host: "catalog", timeoutMs }))
    const line = await watcher().log.waitFor((d) => d.type === "answer" && d.id === id, timeoutMs + 2000, `answer ${id}`)
    return { ...(line.data as { status?: number; body?: string; error?: string }), at: line.at, tookMs: line.at - sent }
  }

  /** Sends requests until one is answered by `h`'s app; fails after `limitMs`. */
  const usedBy = async (h: Host, limitMs: number) => {
    const started = performance.now()
    const answers: Array<string> = []
    for (;;) {
      const answer = await request(2000)
      answers.push(answer.body ?? answer.error ?? String(answer.status))
      if (answer.status === 200 && answer.body === `from ${h.name}`) return answer
      if (performance.now() - started > limitMs) throw new Error(`${h.name} not used within ${limitMs} ms; answers: ${answers.join(" | ")}`)
    }
  }

  /** Starts host `index`'s catalog sidecar (if not running) and waits until host1 lists it. */
  const ensureCatalog = async (index: number, limitMs = 5000) => {
    const running = sidecars.get(index)
    if (running?.proc.running === true) return running
    const mark = watcher().log.lines.length
    const sidecar = await startSidecar(index, "catalog")
    await watcher().log.waitFor(lists(host(index)), limitMs, `${host(index).name} to appear on host1`, mark)
    return sidecar
  }

  it("a new catalog appears on host1 within 1 s of its ready line and is used", async () => {
    const store = await startSidecar(1, "store")
    watcher().send(JSON.stringify({ cmd: "watch", admin: store.admin }))
    await watcher().log.waitFor((d) => d.type === "mesh", 5000, "host1's first /mesh")
    const report: Array<string> = []
    for (const index of [2, 3]) {
      const h = host(index)
      const mark = watcher().log.lines.length
      const sidecar = await startSidecar(index, "catalog")
      const seen = await watcher().log.waitFor(lists(h), 3000, `${h.name} to appear on host1`, mark)
      const used = await usedBy(h, 3000)
      const seenMs = seen.at - sidecar.ready.at
      const usedMs = used.at - sidecar.ready.at
      report.push(`${h.name}: listed ${ms(seenMs)}, answered ${ms(usedMs)} after its ready line (${ms(seen.at - sidecar.proc.spawnedAt)} after spawn)`)
      expect(seenMs).toBeLessThan(1000)
      expect(usedMs).toBeLessThan(1000)
      const endpoint = catalogOf(seen.data).find((e) => e.address.startsWith(`${h.address}:`))!
      expect(endpoint).toMatchObject({ address: sidecar.ready.data.inbound, weight: weights.get(index), source: "mdns" })
    }
    // Both catalogs serve host1's calls.
    const answers = await Promise.all(Array.from({ length: 20 }, () => request()))
    for (const answer of answers) expect(answer).toMatchObject({ status: 200 })
    const counts = Object.fromEntries([2, 3].map((i) => [host(i).name, answers.filter((a) => a.body === `from ${host(i).name}`).length]))
    expect(Object.values(counts).reduce((a, b) => a + b, 0)).toBe(20)
    console.log(`[multihost sidecars] new service: ${report.join("; ")}; 20 calls from host1 answered by ${JSON.stringify(counts)}`)
  }, holdsStarts(3, 25_000))

  it("a drained catalog (SIGTERM, goodbye) is dropped from host1's view at once", async () => {
    await ensureCatalog(2)
    const drained = await ensureCatalog(3)
    const h3 = host(3)
    const mark = watcher().log.lines.length
    const sent = performance.now()
    drained.proc.kill("SIGTERM")
    const dropped = await watcher().log.waitFor(lacks(h3), 2000, `${h3.name} to drop on host1`, mark)
    const exit = await drained.proc.exited
    const exitedMs = performance.now() - sent
    expect(exit).toEqual({ code: 0, signal: null })
    // Dropped by the goodbye, not by the liveness check, which could not drop it before 1.5 s (a
    // silence of 2.5 s, re-queried each second). Not 300 ms: through four processes on a loaded
    // machine (the watcher polls /mesh and writes a line the test reads) it took 443 ms once.
    expect(dropped.at - sent).toBeLessThan(1000)
    expect(catalogOf(dropped.data).map((e) => e.address)).toEqual([String(sidecars.get(2)!.ready.data.inbound)])
    const after = await Promise.all(Array.from({ length: 5 }, () => request()))
    for (const answer of after) expect(answer).toMatchObject({ status: 200, body: `from ${host(2).name}` })
    const rejoin = performance.now()
    await ensureCatalog(3)
    console.log(
      `[multihost sidecars] drain: dropped on host1 ${ms(dropped.at - sent)} after SIGTERM, sidecar exited 0 after ${ms(exitedMs)}; restarted and listed again after ${ms(performance.now() - rejoin)}`
    )
  }, holdsStarts(2, 25_000))

  it("a SIGKILLed catalog is dropped from host1's view within 5 s", async () => {
    await ensureCatalog(3)
    const victim = await ensureCatalog(2)
    const h2 = host(2)
    const mark = watcher().log.lines.length
    const killed = performance.now()
    victim.proc.kill("SIGKILL")
    const dropped = await watcher().log.waitFor(lacks(h2), 6000, `${h2.name} to drop on host1`, mark)
    expect(dropped.at - killed).toBeLessThan(5000)
    // host3 stayed listed all along, and serves the calls now.
    expect(watcher().log.lines.slice(mark).some((l) => lacks(host(3))(l.data))).toBe(false)
    const after = await Promise.all(Array.from({ length: 5 }, () => request()))
    for (const answer of after) expect(answer).toMatchObject({ status: 200, body: `from ${host(3).name}` })
    const rejoin = performance.now()
    await ensureCatalog(2)
    console.log(
      `[multihost sidecars] SIGKILL: dropped on host1 ${ms(dropped.at - killed)} after the kill; restarted and listed again after ${ms(performance.now() - rejoin)}`
    )
  }, holdsStarts(2, 25_000))

  it("an unplugged host is dropped within 5 s and rejoins when plugged back", async () => {
    await ensureCatalog(2)
    await ensureCatalog(3)
    const h3 = host(3)
    const mark = watcher().log.lines.length
    const unplugged = performance.now()
    net!.unplug(h3)
    let replugMark = 0
    let replugged = 0
    const replug = async () => {
      replugMark = watcher().log.lines.length
      replugged = performance.now()
      await net!.replug(h3)
    }
    // Plug it back even if the drop fails, so the next test starts from a whole mesh.
    const dropped = await watcher().log.waitFor(lacks(h3), 6000, `${h3.name} to drop on host1`, mark).finally(replug)
    expect(dropped.at - unplugged).toBeLessThan(5000)
    const back = await watcher().log.waitFor(lists(h3), 6000, `${h3.name} to rejoin on host1`, replugMark)
    expect(back.at - replugged).toBeLessThan(5000)
    const used = await usedBy(h3, 5000)
    console.log(
      `[multihost sidecars] unplug: dropped on host1 ${ms(dropped.at - unplugged)} after the unplug; listed again ${ms(back.at - replugged)} after the replug, answering ${ms(used.at - replugged)} after it`
    )
  }, holdsStarts(2, 25_000))

  it.skipIf(lossGate.skip)(lossGate.title, async () => {
    assertCapability(nftCapability, `nft (apt nftables${inCi ? ", installed by .ci/run" : ""}) for the packet-loss test`)
    await ensureCatalog(2)
    await ensureCatalog(3)
    // Stop both catalogs cleanly, then start them again while 30% of the frames the bridge
    // forwards are dropped (both ways, unicast and multicast).
    const quiet = watcher().log.lines.length
    for (const index of [2, 3]) sidecars.get(index)!.proc.kill("SIGTERM")
    await Promise.all([2, 3].map((index) => sidecars.get(index)!.proc.exited))
    await watcher().log.waitFor((d) => d.type === "mesh" && catalogOf(d).length === 0, 6000, "host1 to list no catalog", quiet)
    const table = "iimloss"
    const ruleset = `table bridge ${table} {\n  chain forward {\n    type filter hook forward priority 0; policy accept;\n    numgen random mod 100 < 30 counter drop\n  }\n}\n`
    execFileSync("ip", ["netns", "exec", net!.switchNs, "nft", "-f", "-"], { input: ruleset, stdio: ["pipe", "ignore", "pipe"] })
    try {
      const mark = watcher().log.lines.length
      const started = performance.now()
      await Promise.all([startSidecar(2, "catalog"), startSidecar(3, "catalog")])
      const all = (d: Data) => lists(host(2))(d) && lists(host(3))(d)
      const converged = await watcher().log.waitFor(all, 15_000, "both catalogs on host1 under 30% loss", mark)
      const convergedMs = converged.at - started
      // Observe for 5 s under loss: how often an endpoint left host1's view (liveness misses).
      const observed = watcher().log.lines.length
      await new Promise((done) => setTimeout(done, 5000)) // an observation window, not synchronisation
      const flaps = watcher().log.lines.slice(observed).filter((l) => l.data.type === "mesh" && !all(l.data)).length
      const stats = execFileSync("ip", ["netns", "exec", net!.switchNs, "nft", "list", "table", "bridge", table], { encoding: "utf8" })
      const droppedFrames = /counter packets (\d+)/.exec(stats)?.[1] ?? "?"
      // Still (or again) converged after the window: from the latest /mesh line on, both are listed.
      const latest = watcher().log.lines.findLastIndex((l) => l.data.type === "mesh")
      await watcher().log.waitFor(all, 15_000, "both catalogs on host1 after the window", latest)
      // Requests under this loss depend on TCP's retransmission timers (a lost SYN waits 1 s, then
      // 3 s): reported, not asserted. What the issue asks is that discovery converges.
      const underLossAnswers = await Promise.all(Array.from({ length: 10 }, () => request(5000)))
      const underLoss = underLossAnswers.filter((a) => a.status === 200).length
      const why = (answers: ReadonlyArray<{ status?: number; error?: string; body?: string; tookMs: number }>) =>
        answers.filter((a) => a.status !== 200).map((a) => `${a.status ?? a.error} after ${ms(a.tookMs)}: ${a.body?.slice(0, 160) ?? ""}`)
      const failedUnderLoss = why(underLossAnswers)
      spawnSync("ip", ["netns", "exec", net!.switchNs, "nft", "delete", "table", "bridge", table], { stdio: "ignore" })
      const afterAnswers = await Promise.all(Array.from({ length: 10 }, () => request(10_000)))
      const after = afterAnswers.filter((a) => a.status === 200).length
      const failedAfter = why(afterAnswers)
      console.log(
        `[multihost sidecars] 30% loss: both catalogs listed on host1 ${ms(convergedMs)} after their start; ${flaps} /mesh changes lost one in the next 5 s; ` +
          `${droppedFrames} frames dropped by the bridge; ${underLoss}/10 calls answered under loss, ${after}/10 once it ended` +
          (failedUnderLoss.length === 0 ? "" : `; failed under loss: ${failedUnderLoss.slice(0, 3).join(" | ")}`) +
          (failedAfter.length === 0 ? "" : `; failed once it ended: ${failedAfter.join(" | ")}`)
      )
      expect(convergedMs).toBeLessThan(15_000)
      expect(Number(droppedFrames)).toBeGreaterThan(0)
      expect(after).toBe(10)
    } finally {
      spawnSync("ip", ["netns", "exec", net!.switchNs, "nft", "delete", "table", "bridge", table], { stdio: "ignore" })
    }
  }, holdsStarts(3, 30_000))
})
