// DNS SRV targets a hostile or broken DNS server makes costly, against lookupSrv and dnsSrvSource
// (src/discovery/dnsSrvSource.ts) with a real DNS server on 127.0.0.1 over UDP and TCP
// (test/discovery/dnsServer.ts): targets whose address answers fill 64 KiB each (about 4,000
// addresses), and targets whose own lookup fails beside good ones. What must hold: no more targets
// are asked than the endpoint cap needs, a few at a time; one bad target neither hides the others
// nor the addresses it had, for keepFailedTargetMs (then they go, as a target's do at once when its
// name is gone or it leaves the SRV answer).
import * as Result from "effect/Result"
import { Resolver } from "node:dns/promises"
import { afterEach, describe, expect, it } from "vitest"
import { dnsSrvSource, headlessServiceName, lookupSrv, MaxTargetLookupsInFlight } from "../../src/discovery/dnsSrvSource.ts"
import { endpointKey, type EndpointUpdate, MaxEndpointsPerService } from "../../src/discovery/types.ts"
import { LoopbackDnsServer, type Zone } from "./dnsServer.ts"
import { Recorder } from "./recorder.ts"

const name = headlessServiceName({ service: "web", namespace: "shop" })
const target = (pod: string) => `${pod}.web.shop.svc.cluster.local`
const TYPE_A = 1

const servers: Array<LoopbackDnsServer> = []
const stops: Array<() => void> = []
afterEach(async () => {
  for (const stop of stops.splice(0)) stop()
  await Promise.all(servers.splice(0).map((server) => server.close()))
})

const serve = async (zone: Zone) => {
  const server = await LoopbackDnsServer.start(zone, 0, { tcp: true })
  servers.push(server)
  const resolver = new Resolver({ timeout: 5000, tries: 1 })
  resolver.setServers([server.address])
  return { server, resolver }
}

const addressQueries = (server: LoopbackDnsServer) => new Set(server.queries.filter((query) => query.type === TYPE_A).map((query) => query.name)).size

describe("lookupSrv with targets of huge address answers", () => {
  it("200 targets of ~4,000 addresses each (64 KiB over TCP): the first targets fill the cap and the others are never asked", async () => {
    // 4,000 A records of 16 bytes fit one 64 KiB TCP answer: 800,000 addresses if every target were looked up.
    const targets = Array.from({ length: 200 }, (_, i) => target(`pod-${i}`))
    const a: Record<string, Array<string>> = {}
    for (const [i, t] of targets.entries()) a[t] = Array.from({ length: 4000 }, (_, j) => `10.${i}.${j >> 8}.${j & 255}`)
    const { server, resolver } = await serve({ srv: { [name]: targets.map((t) => ({ weight: 1, port: 4143, target: t })) }, a, ttl: 5 })
    const result = await lookupSrv(resolver, "web", name)
    if (Result.isFailure(result)) throw new Error(`lookup failed: ${JSON.stringify(result.failure)}`)
    expect(result.success.endpoints).toHaveLength(MaxEndpointsPerService)
    expect(result.success.capped).toBe(true)
    // The answers did come over TCP (the UDP ones were truncated): the test measures what it means to.
    expect(server.queries.some((query) => query.type === TYPE_A && query.tcp)).toBe(true)
    expect(addressQueries(server)).toBeLessThanOrEqual(MaxTargetLookupsInFlight)
  })

  it("1,000 targets of one address each: all are looked up, at most MaxTargetLookupsInFlight at a time", async () => {
    const targets = Array.from({ length: MaxEndpointsPerService }, (_, i) => target(`pod-${i}`))
    const a: Record<string, Array<string>> = {}
    for (const [i, t] of targets.entries()) a[t] = [`10.9.${i >> 8}.${i & 255}`]
    const { server, resolver } = await serve({ srv: { [name]: targets.map((t) => ({ weight: 1, port: 4143, target: t })) }, a })
    // Each answer sent 20 ms after its query: lookups started together pile up at the server.
    server.answerDelayMs = 20
    const received = server.queries.length
    const result = await lookupSrv(resolver, "web", name)
    if (Result.isFailure(result)) throw new Error(`lookup failed: ${JSON.stringify(result.failure)}`)
    expect(result.success.endpoints).toHaveLength(MaxEndpointsPerService)
    expect(result.success.capped).toBeUndefined()
    expect(server.queries.length - received).toBeGreaterThanOrEqual(MaxEndpointsPerService + 1)
    expect(server.mostOutstanding).toBeLessThanOrEqual(MaxTargetLookupsInFlight)
  })
})

describe("lookupSrv with targets that fail", () => {
  const oneBroken: Zone = { ...twoTargets(), servfail: [target("broken")] }

  it("one target's lookup failing (SERVFAIL) does not hide the others: they are reported, the failure counted", async () => {
    const { resolver } = await serve(oneBroken)
    const result = await lookupSrv(resolver, "web", name)
    if (Result.isFailure(result)) throw new Error(`lookup failed: ${JSON.stringify(result.failure)}`)
    expect(result.success.endpoints.map(endpointKey)).toStrictEqual(["10.1.0.1:4143"])
    expect(result.success.failedTargets).toMatchObject({ count: 1, code: "ESERVFAIL" })
  })

  it("every target failing is a failed lookup: the last set stays", async () => {
    const { resolver } = await serve({ ...oneBroken, servfail: [target("good"), target("broken")] })
    const result = await lookupSrv(resolver, "web", name)
    expect(Result.isFailure(result) ? result.failure.code : "answered").toBe("ESERVFAIL")
  })
})

describe("lookupSrv with addresses no peer has", () => {
  it("multicast and broadcast addresses (as IP targets, IPv4-mapped, or A records) are left out, as mDNS leaves them out: no dial could reach a peer there", async () => {
    const odd = ["224.0.0.251", "255.255.255.255", "::ffff:224.0.0.1", "ff02::1"]
    const { resolver } = await serve({
      srv: { [name]: [...odd.map((t) => ({ weight: 1, port: 4143, target: t })), { weight: 1, port: 4143, target: target("group") }, { weight: 1, port: 4143, target: target("good") }] },
      a: { [target("group")]: ["239.1.2.3"], [target("good")]: ["10.1.0.1"] }
    })
    const result = await lookupSrv(resolver, "web", name)
    if (Result.isFailure(result)) throw new Error(`lookup failed: ${JSON.stringify(result.failure)}`)
    expect(result.success.endpoints.map(endpointKey)).toStrictEqual(["10.1.0.1:4143"])
  })
})

describe("dnsSrvSource with an answer past the cap", () => {
  it("logs discovery.dns-capped when the answer becomes capped, not again on every lookup while it stays so (TTL 0: a lookup a second)", async () => {
    const targets = Array.from({ length: 600 }, (_, i) => target(`pod-${i}`))
    const a: Record<string, Array<string>> = {}
    for (const [i, t] of targets.entries()) a[t] = [`10.8.${i >> 8}.${i & 255}`, `10.9.${i >> 8}.${i & 255}`]
    const capped: Zone = { srv: { [name]: targets.map((t) => ({ weight: 1, port: 4143, target: t })) }, a, ttl: 0 }
    const { server } = await serve(capped)
    const logs = new Recorder<{ event: string; fields: Record<string, unknown> }>()
    const source = dnsSrvSource({ service: "web", name, servers: [server.address], refreshMs: 100, minRefreshMs: 20, log: (event, fields) => logs.push({ event, fields }) })
    const updates = new Recorder<EndpointUpdate>()
    stops.push(source.start(updates.push))
    const resets = (count: number) => updates.waitFor(() => updates.items.length >= count, { timeoutMs: 10_000 })
    await resets(4)
    expect(logs.items.filter((entry) => entry.event === "discovery.dns-capped")).toHaveLength(1)
    // Under the cap, then past it again: a new episode, logged again.
    server.zone = { ...capped, srv: { [name]: capped.srv![name]!.slice(0, 10) } }
    await updates.waitFor((update) => update._tag === "Reset" && update.endpoints.length === 20, { timeoutMs: 10_000 })
    server.zone = capped
    await updates.waitFor((update) => update._tag === "Reset" && update.endpoints.length === MaxEndpointsPerService, { from: updates.mark, timeoutMs: 10_000 })
    await resets(updates.items.length + 2)
    expect(logs.items.filter((entry) => entry.event === "discovery.dns-capped")).toHaveLength(2)
  })
})

describe("dnsSrvSource with a target that starts failing", () => {
  const keys = (update: EndpointUpdate) => (update._tag === "Reset" ? update.endpoints.map(endpointKey).sort() : [])

  it("keeps the addresses that target last had, logs the failure once and looks up again soon", async () => {
    const { server } = await serve({ ...twoTargets(), ttl: 0 })
    const updates = new Recorder<EndpointUpdate>()
    const logs = new Recorder<{ event: string; fields: Record<string, unknown> }>()
    const source = dnsSrvSource({ service: "web", name, servers: [server.address], refreshMs: 100, minRefreshMs: 20, retryMs: 20, log: (event, fields) => logs.push({ event, fields }) })
    stops.push(source.start(updates.push))
    await updates.waitFor((update) => keys(update).length === 2)
    const mark = updates.mark
    server.zone = { ...twoTargets(), ttl: 0, servfail: [target("broken")] }
    await logs.waitFor((entry) => entry.event === "discovery.dns-target-failed")
    // Two lookups after the failure began: every Reset since still lists the broken target's address.
    const after = server.queries.filter((query) => query.type === 33).length
    await server.received((query) => query.type === 33, after + 2)
    const since = updates.items.slice(mark).map(keys)
    for (const reset of since) expect(reset).toStrictEqual(["10.1.0.1:4143", "10.1.0.2:4143"])
    expect(logs.items.find((entry) => entry.event === "discovery.dns-target-failed")?.fields).toMatchObject({ service: "web", failed: 1, code: "ESERVFAIL" })
    // Logged when the target started failing, not again on each lookup while it goes on failing.
    expect(logs.items.filter((entry) => entry.event === "discovery.dns-target-failed")).toHaveLength(1)
  })

  it("logs a target's failure when it begins right after a failed lookup too (the SRV query's own failure does not stand for it)", async () => {
    const { server } = await serve({ ...twoTargets(), ttl: 0, servfail: [name] })
    const logs = new Recorder<{ event: string; fields: Record<string, unknown> }>()
    const source = dnsSrvSource({ service: "web", name, servers: [server.address], refreshMs: 100, minRefreshMs: 20, retryMs: 20, log: (event, fields) => logs.push({ event, fields }) })
    const updates = new Recorder<EndpointUpdate>()
    stops.push(source.start(updates.push))
    await logs.waitFor((entry) => entry.event === "discovery.dns-failed")
    server.zone = { ...twoTargets(), ttl: 0, servfail: [target("broken")] }
    await updates.waitFor((update) => keys(update).length > 0)
    expect((await logs.waitFor((entry) => entry.event === "discovery.dns-target-failed", { timeoutMs: 1000 })).fields).toMatchObject({ failed: 1, code: "ESERVFAIL" })
  })

  it("keeps them only for keepFailedTargetMs after they were last looked up: a target that goes on failing (SERVFAIL) is then left out", async () => {
    const { server } = await serve({ ...twoTargets(), ttl: 0 })
    const updates = new Recorder<EndpointUpdate>()
    const source = dnsSrvSource({ service: "web", name, servers: [server.address], refreshMs: 100, minRefreshMs: 20, retryMs: 20, keepFailedTargetMs: 300, log: () => {} })
    stops.push(source.start(updates.push))
    await updates.waitFor((update) => keys(update).length === 2)
    const lastGood = updates.items.length
    server.zone = { ...twoTargets(), ttl: 0, servfail: [target("broken")] }
    await updates.waitFor((update) => keys(update).join() === "10.1.0.1:4143", { timeoutMs: 5000 })
    // Kept meanwhile: at least one lookup after the failure began still listed it.
    const since = updates.items.slice(lastGood).map(keys)
    expect(since[0]).toStrictEqual(["10.1.0.1:4143", "10.1.0.2:4143"])
    expect(since.at(-1)).toStrictEqual(["10.1.0.1:4143"])
  })

  it("drops at the next lookup a target that no longer exists (NXDOMAIN) or that left the SRV answer: neither is kept as a failure", async () => {
    const { server } = await serve({ ...twoTargets(), ttl: 0 })
    const updates = new Recorder<EndpointUpdate>()
    const source = dnsSrvSource({ service: "web", name, servers: [server.address], refreshMs: 100, minRefreshMs: 20, retryMs: 20, log: () => {} })
    stops.push(source.start(updates.push))
    await updates.waitFor((update) => keys(update).length === 2)
    // "broken" still listed in the SRV answer, its name gone: NXDOMAIN.
    server.zone = { srv: twoTargets().srv!, a: { [target("good")]: ["10.1.0.1"] }, ttl: 0 }
    await updates.waitFor((update) => keys(update).join() === "10.1.0.1:4143", { timeoutMs: 5000 })
    server.zone = { ...twoTargets(), ttl: 0 }
    await updates.waitFor((update) => keys(update).length === 2, { from: updates.mark, timeoutMs: 5000 })
    // Left out of the SRV answer while its name still answers.
    server.zone = { ...twoTargets(), srv: { [name]: twoTargets().srv![name]!.slice(0, 1) }, ttl: 0 }
    await updates.waitFor((update) => keys(update).join() === "10.1.0.1:4143", { from: updates.mark, timeoutMs: 5000 })
  })
})

describe("a lookup a server drags out, or that is stopped", () => {
  it("targets whose address queries are never answered: the lookup stops asking at its deadline, the ones not asked keep their last addresses, and it ends", async () => {
    // One target answers, 199 never do: asked 16 at a time to their timeout, they would hold the
    // lookup for 13 timeouts (1,000 such targets at the default 2 s x 2 tries: minutes), the set unchanged meanwhile.
    const targets = Array.from({ length: 200 }, (_, i) => target(`pod-${i}`))
    const a: Record<string, Array<string>> = {}
    for (const [i, t] of targets.entries()) a[t] = [`10.9.0.${i}`]
    const { server } = await serve({ srv: { [name]: targets.map((t) => ({ weight: 1, port: 4143, target: t })) }, a, silent: targets.slice(1) })
    const resolver = new Resolver({ timeout: 200, tries: 1 })
    resolver.setServers([server.address])
    const previous = new Map([[target("pod-150"), { addresses: [{ address: "10.7.0.150" }], resolvedAt: performance.now() }]])
    const result = await lookupSrv(resolver, "web", name, { previous, deadlineMs: 300 })
    if (Result.isFailure(result)) throw new Error(`lookup failed: ${JSON.stringify(result.failure)}`)
    expect(result.success.endpoints.map(endpointKey).sort()).toStrictEqual(["10.7.0.150:4143", "10.9.0.0:4143"])
    expect(result.success.failedTargets).toMatchObject({ count: 199, code: "ETIMEOUT" })
    expect(result.success.capped).toBeUndefined()
    // Asked: the first rounds, not all 200.
    expect(addressQueries(server)).toBeLessThanOrEqual(3 * MaxTargetLookupsInFlight)
  })

  it("a source stopped mid-lookup asks for no further target", async () => {
    const targets = Array.from({ length: 400 }, (_, i) => target(`pod-${i}`))
    const a: Record<string, Array<string>> = {}
    for (const [i, t] of targets.entries()) a[t] = [`10.9.${i >> 8}.${i & 255}`]
    const sentinel = target("after-stop")
    const { server, resolver } = await serve({ srv: { [name]: targets.map((t) => ({ weight: 1, port: 4143, target: t })) }, a: { ...a, [sentinel]: ["10.6.0.1"] } })
    server.answerDelayMs = 20
    const stop = dnsSrvSource({ service: "web", name, servers: [server.address], log: () => {} }).start(() => {})
    const asked = (query: { readonly name: string; readonly type: number }) => query.type === TYPE_A && query.name !== sentinel
    await server.received(asked, 1)
    stop()
    // What the stop's cancelled lookups set off runs in microtasks: one turn later, then a query of
    // our own, which the server receives after any the source sent before it.
    await new Promise<void>((resolve) => setImmediate(resolve))
    const probe = resolver.resolve4(sentinel)
    await server.received((query) => query.name === sentinel, 1)
    await probe
    expect(server.queries.filter(asked).length).toBeLessThanOrEqual(MaxTargetLookupsInFlight)
  })
})

/** Two targets of one address each: "good" and "broken" (which a test makes fail). */
function twoTargets(): Zone {
  return {
    srv: { [name]: [{ weight: 1, port: 4143, target: target("good") }, { weight: 1, port: 4143, target: target("broken") }] },
    a: { [target("good")]: ["10.1.0.1"], [target("broken")]: ["10.1.0.2"] }
  }
}
