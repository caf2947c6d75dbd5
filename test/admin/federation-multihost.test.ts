// Admin federation across three hosts (issue 20, "Must show"): network namespaces on a bridge the
// test creates (as root; topology and safety rules in test/support/netnsHosts.ts), each host an app
// and a real `iip-mesh sidecar` with mDNS on its own address and its admin control listener on
// 0.0.0.0 with a token (so the port it announces in the mDNS TXT is reachable from the others).
// host1 runs "store", which calls "catalog" on host2 and host3. host1's /federation (read from
// inside host1 by test/support/meshHostAgent.ts) lists both peers, fresh, with their served
// requests merged; then host3 is unplugged and shown stale within 5 s, still listed.
import { resolve } from "node:path"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import type { FederationView } from "../../src/admin/federation.ts"
import { CHILD_START_MS, holdsStarts } from "../support/childStart.ts"
import { readUntil } from "../support/iipRaw.ts"
import { NetnsHosts, probeRootNetns } from "../support/netnsHosts.ts"
import { assertCapability, gate, type JsonLineProcess, type Line } from "../support/netnsProcess.ts"

const agentScript = resolve(import.meta.dirname, "../support/meshHostAgent.ts")
const cli = resolve(import.meta.dirname, "../../src/cli/main.ts")
const token = "federation-multihost-token-0123"

const capability = probeRootNetns()
const suite = gate("admin federation across three hosts (network namespaces on a bridge)", capability)

describe.skipIf(suite.skip)(suite.title, () => {
  let net: NetnsHosts | undefined
  const agents = new Map<number, { proc: JsonLineProcess; appPort: number }>()
  const sidecars = new Map<number, { proc: JsonLineProcess; ready: Line }>()
  let requestId = 0

  beforeAll(async () => {
    assertCapability(capability, "root with iproute2 (network namespaces)")
    net = await NetnsHosts.create(3)
    for (const host of net.hosts) {
      const proc = net.exec(host, [agentScript], `${host.name}-agent`)
      const line = await proc.log.waitFor((d) => d.type === "app" || d.type === "exit", CHILD_START_MS, `${host.name}'s app to listen`)
      if (line.data.type !== "app") throw new Error(`${host.name}'s agent did not start: ${proc.stderr}`)
      agents.set(host.index, { proc, appPort: line.data.port as number })
    }
    for (const [index, service] of [[1, "store"], [2, "catalog"], [3, "catalog"]] as const) {
      const h = net.host(index)
      const proc = net.exec(h, [
        cli, "sidecar",
        "--service", service, "--node", h.name,
        "--app", `127.0.0.1:${agents.get(index)!.appPort}`,
        "--inbound", `${h.address}:0`, "--outbound", "127.0.0.1:0",
        "--admin", "127.0.0.1:0", "--admin-control", "0.0.0.0:0", "--admin-token", token,
        "--mdns", "--mesh-name", "federation", "--mdns-interface", h.address,
        "--drain-timeout", "1s", "--request-timeout", "3s"
      ], `${h.name}-sidecar`)
      const ready = await proc.log.waitFor((d) => d.event === "sidecar-ready" || d.type === "exit", CHILD_START_MS, `${h.name}'s sidecar to be ready`)
      if (ready.data.event !== "sidecar-ready") throw new Error(`${h.name}'s sidecar did not start: ${JSON.stringify(ready.data)} ${proc.stderr}`)
      sidecars.set(index, { proc, ready })
    }
  }, holdsStarts(6, 15_000))

  afterAll(async () => {
    await Promise.all([...sidecars.values(), ...agents.values()].map(({ proc }) => proc.close()))
    net?.destroy()
  })

  const agent1 = () => agents.get(1)!.proc
  const adminPort1 = () => String(sidecars.get(1)!.ready.data.adminControl).split(":").at(-1)!

  /** host1's /federation, read inside host1. */
  const federation = async (): Promise<FederationView> => {
    const id = ++requestId
    agent1().send(JSON.stringify({ cmd: "get", id, admin: `127.0.0.1:${adminPort1()}`, path: "/federation", token, timeoutMs: 5000 }))
    const line = await agent1().log.waitFor((d) => d.type === "answer" && d.id === id, 7000, `federation answer ${id}`)
    expect(line.data.status, JSON.stringify(line.data)).toBe(200)
    return JSON.parse(String(line.data.body)) as FederationView
  }

  const request = async () => {
    const id = ++requestId
    agent1().send(JSON.stringify({ cmd: "request", id, outbound: String(sidecars.get(1)!.ready.data.outbound), host: "catalog", timeoutMs: 3000 }))
    return (await agent1().log.waitFor((d) => d.type === "answer" && d.id === id, 5000, `answer ${id}`)).data
  }

  it("host1's /federation lists host2 and host3, merges their metrics, and shows unplugged host3 stale within 5 s", async () => {
    const h2 = net!.host(2)
    const h3 = net!.host(3)
    const peersOf = (view: FederationView) => view.peers.map((p) => `${p.node}:${p.stale ? "stale" : "fresh"}`).sort()
    // Until both peers are found (mDNS) and answer.
    let view = (await readUntil(federation, (v) => peersOf(v).join() === `${h2.name}:fresh,${h3.name}:fresh`, 10_000)).value
    expect(peersOf(view)).toStrictEqual([`${h2.name}:fresh`, `${h3.name}:fresh`])
    for (const peer of view.peers) expect(peer.admin).toMatch(new RegExp(`^${peer.node === h2.name ? h2.address : h3.address}:\\d+$`))
    for (let i = 0; i < 20; i++) expect(await request()).toMatchObject({ status: 200 })
    // A view is at most 0.5 s old (peers are asked at most twice a second): until it holds the calls.
    view = (await readUntil(federation, (v) => v.golden.services.find((s) => s.service === "catalog")?.windows["1m"].requests === 20, 3000)).value
    expect(view.golden.services.find((s) => s.service === "catalog")?.windows["1m"].requests).toBe(20)
    expect(view.golden.edges.find((e) => e.caller === "store" && e.callee === "catalog")?.windows["1m"].requests).toBe(20)

    net!.unplug(h3)
    const cut = await readUntil(federation, (v) => v.peers.find((p) => p.node === h3.name)?.stale === true, 5000)
    view = cut.value
    const staleMs = cut.elapsedMs
    console.log(`[federation] host3 unplugged: shown stale on host1 after ${staleMs.toFixed(0)} ms`)
    expect(peersOf(view)).toStrictEqual([`${h2.name}:fresh`, `${h3.name}:stale`])
    expect(staleMs).toBeLessThan(5000)
    await net!.replug(h3)
  }, 60_000)
})
