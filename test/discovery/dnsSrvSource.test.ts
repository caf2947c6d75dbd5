// DNS SRV discovery (src/discovery/dnsSrvSource.ts) against a real DNS server on 127.0.0.1 (port 0,
// test/discovery/dnsServer.ts) that the test re-zones while a Discovery watches: answers become
// endpoints, a removed instance becomes a Remove, an empty answer empties the set, a stopped server
// keeps the last set until it answers again. The refresh arithmetic is checked as pure functions.
import * as Result from "effect/Result"
import { Resolver } from "node:dns/promises"
import { afterEach, describe, expect, it } from "vitest"
import { Discovery } from "../../src/discovery/discovery.ts"
import { dnsSrvSource, headlessServiceName, jittered, lookupSrv, refreshDelayMs, retryDelayMs, type SrvAnswer } from "../../src/discovery/dnsSrvSource.ts"
import type { MergedEndpoint } from "../../src/discovery/endpointSet.ts"
import { endpointKey, type EndpointUpdate } from "../../src/discovery/types.ts"
import { LoopbackDnsServer, type Zone } from "./dnsServer.ts"
import { Recorder } from "./recorder.ts"

const name = headlessServiceName({ service: "web", namespace: "shop" })
const target = (pod: string) => `${pod}.web.shop.svc.cluster.local`

/** A headless Service with three ready pods (one of them with SRV weight 0). */
const threePods: Zone = {
  srv: {
    [name]: [
      { weight: 10, port: 4143, target: target("web-0") },
      { weight: 20, port: 4143, target: target("web-1") },
      { weight: 0, port: 4143, target: target("web-2") }
    ]
  },
  a: { [target("web-0")]: ["10.1.0.10"], [target("web-1")]: ["10.1.0.11"], [target("web-2")]: ["10.1.0.12"] },
  ttl: 5
}

const without = (zone: Zone, pod: string): Zone => ({ ...zone, srv: { [name]: zone.srv![name]!.filter((r) => r.target !== target(pod)) } })

const servers: Array<LoopbackDnsServer> = []
const startServer = async (zone: Zone, port?: number) => {
  const server = await LoopbackDnsServer.start(zone, port)
  servers.push(server)
  return server
}
let discovery = new Discovery()
afterEach(async () => {
  discovery.close()
  await Promise.all(servers.splice(0).map((server) => server.close().catch(() => {})))
})

const resolverFor = (server: LoopbackDnsServer) => {
  const resolver = new Resolver({ timeout: 1000, tries: 1 })
  resolver.setServers([server.address])
  return resolver
}

const answerOf = (result: Result.Result<SrvAnswer, unknown>): SrvAnswer => {
  if (Result.isFailure(result)) throw new Error(`lookup failed: ${JSON.stringify(result.failure)}`)
  return result.success
}

describe("refresh timing (pure)", () => {
  it("headless Service names are full names", () => {
    expect(name).toBe("_mesh._tcp.web.shop.svc.cluster.local")
    expect(headlessServiceName({ service: "api", namespace: "ns", port: "grpc", protocol: "udp", clusterDomain: "k8s.local" })).toBe("_grpc._udp.api.ns.svc.k8s.local")
  })

  it("the refresh follows the TTL within [min, max], else the configured interval", () => {
    const limits = { refreshMs: 30_000, minRefreshMs: 1_000 }
    expect(refreshDelayMs(5, limits)).toBe(5_000)
    expect(refreshDelayMs(0, limits)).toBe(1_000)
    expect(refreshDelayMs(3600, limits)).toBe(30_000)
    expect(refreshDelayMs(undefined, limits)).toBe(30_000)
  })

  it("jitter stays within ±20%", () => {
    expect(jittered(1000, () => 0)).toBe(800)
    expect(jittered(1000, () => 0.5)).toBe(1000)
    expect(jittered(1000, () => 0.999999)).toBe(1200)
  })

  it("retries back off by doubling, up to the refresh interval", () => {
    const limits = { retryMs: 500, refreshMs: 5_000 }
    expect([1, 2, 3, 4, 5, 10].map((failures) => retryDelayMs(failures, limits))).toStrictEqual([500, 1000, 2000, 4000, 5000, 5000])
  })
})

describe("lookupSrv against a loopback DNS server", () => {
  it("SRV records become endpoints: port and weight from SRV (0 counts as 1), host from the target's A record, TTL from it", async () => {
    const server = await startServer(threePods)
    const answer = answerOf(await lookupSrv(resolverFor(server), "web", name))
    expect(answer.ttlSeconds).toBe(5)
    expect(answer.endpoints).toStrictEqual([
      { service: "web", host: "10.1.0.10", port: 4143, weight: 10, features: [], source: "dns", offHost: true },
      { service: "web", host: "10.1.0.11", port: 4143, weight: 20, features: [], source: "dns", offHost: true },
      { service: "web", host: "10.1.0.12", port: 4143, weight: 1, features: [], source: "dns", offHost: true }
    ])
  })

  it("an IP target is the host; a target with two addresses is two endpoints; a target without any is left out", async () => {
    const server = await startServer({
      srv: {
        [name]: [
          { weight: 1, port: 81, target: "10.1.0.20" },
          { weight: 1, port: 82, target: target("multi") },
          { weight: 1, port: 83, target: target("gone") }
        ]
      },
      a: { [target("multi")]: ["10.1.0.21", "10.1.0.22"], [target("gone")]: [] }
    })
    const answer = answerOf(await lookupSrv(resolverFor(server), "web", name))
    expect(answer.endpoints.map(endpointKey)).toStrictEqual(["10.1.0.20:81", "10.1.0.21:82", "10.1.0.22:82"])
  })

  it("an empty Service (ENODATA) and an unknown name (ENOTFOUND) are empty answers, not failures", async () => {
    const server = await startServer({ srv: { [name]: [] } })
    expect(answerOf(await lookupSrv(resolverFor(server), "web", name))).toStrictEqual({ endpoints: [], ttlSeconds: undefined, addresses: new Map() })
    expect(answerOf(await lookupSrv(resolverFor(server), "web", "_mesh._tcp.nothing.shop.svc.cluster.local"))).toStrictEqual({ endpoints: [], ttlSeconds: undefined, addresses: new Map() })
  })

  it("a server that is gone is a DnsLookupFailed naming the error", async () => {
    const server = await startServer(threePods)
    const resolver = resolverFor(server)
    await server.close()
    const result = await lookupSrv(resolver, "web", name)
    if (Result.isSuccess(result)) throw new Error("expected a failure")
    expect(result.failure).toMatchObject({ _tag: "DnsLookupFailed", name, code: "ECONNREFUSED" })
  })
})

describe("dnsSrvSource in a Discovery", () => {
  const start = (server: LoopbackDnsServer) => {
    const updates = new Recorder<EndpointUpdate<MergedEndpoint>>()
    const log = new Recorder<[string, Record<string, unknown>]>()
    discovery = new Discovery()
    discovery.subscribe("web", updates.push)
    discovery.register(
      dnsSrvSource({
        service: "web",
        name,
        servers: [server.address],
        refreshMs: 40,
        minRefreshMs: 10,
        retryMs: 20,
        timeoutMs: 1000,
        tries: 1,
        log: (event, fields) => log.push([event, fields])
      })
    )
    return { updates, log }
  }
  const hosts = () => discovery.endpoints("web").map((e) => `${e.host}#${e.weight}`)
  const added = (host: string) => (u: EndpointUpdate<MergedEndpoint>) => u._tag === "Add" && u.endpoint.host === host

  it("answers appear as endpoints; an instance gone from the answer is a Remove; an empty answer empties the set", async () => {
    const server = await startServer(threePods)
    const { updates } = start(server)
    await updates.waitFor(added("10.1.0.12"))
    expect(hosts()).toStrictEqual(["10.1.0.10#10", "10.1.0.11#20", "10.1.0.12#1"])
    expect(discovery.endpoints("web")[0]!.sources).toStrictEqual(["dns"])

    const mark = updates.mark
    server.zone = without(threePods, "web-1")
    await updates.waitFor((u) => u._tag === "Remove", { from: mark })
    expect(updates.items.slice(mark).map((u) => (u._tag === "Remove" ? `Remove ${u.key}` : u._tag))).toStrictEqual(["Remove 10.1.0.11:4143"])
    expect(hosts()).toStrictEqual(["10.1.0.10#10", "10.1.0.12#1"])

    server.zone = { ...threePods, srv: { [name]: [] } }
    await updates.waitFor((u) => u._tag === "Remove" && u.key === "10.1.0.12:4143", { from: mark })
    expect(discovery.endpoints("web")).toStrictEqual([])
  })

  it("a weight change in the answer is a Change", async () => {
    const server = await startServer(threePods)
    const { updates } = start(server)
    await updates.waitFor(added("10.1.0.10"))
    server.zone = { ...threePods, srv: { [name]: threePods.srv![name]!.map((r) => ({ ...r, weight: r.target === target("web-0") ? 50 : r.weight })) } }
    const change = await updates.waitFor((u) => u._tag === "Change")
    expect(change).toMatchObject({ endpoint: { host: "10.1.0.10", weight: 50 } })
  })

  it("a stopped server keeps the last set and is retried; when it answers again the set follows it", async () => {
    const server = await startServer(threePods)
    const { updates, log } = start(server)
    await updates.waitFor(added("10.1.0.12"))
    const mark = updates.mark
    await server.close()
    const [, failure] = await log.waitFor(([event]) => event === "discovery.dns-failed")
    expect(failure).toMatchObject({ service: "web", name, code: "ECONNREFUSED", failures: 1 })
    await log.waitFor(([event, fields]) => event === "discovery.dns-failed" && fields["failures"] === 2)
    expect(updates.items.length).toBe(mark)
    expect(hosts()).toStrictEqual(["10.1.0.10#10", "10.1.0.11#20", "10.1.0.12#1"])

    await startServer(without(threePods, "web-0"), server.port)
    await updates.waitFor((u) => u._tag === "Remove" && u.key === "10.1.0.10:4143", { from: mark })
    expect(hosts()).toStrictEqual(["10.1.0.11#20", "10.1.0.12#1"])
  })

  it("after stop (between lookups or during one) the source emits nothing more", async () => {
    const server = await startServer(threePods)
    const options = { service: "web", name, servers: [server.address], refreshMs: 40, minRefreshMs: 10, log: () => {} }
    const emitted = new Recorder<EndpointUpdate>()
    const stop = dnsSrvSource(options).start(emitted.push)
    await emitted.waitFor((u) => u._tag === "Reset")
    stop()
    const mark = emitted.mark
    const midLookup = new Recorder<EndpointUpdate>()
    dnsSrvSource(options).start(midLookup.push)()
    server.zone = without(threePods, "web-0")
    // A second source on the same server: by its third answer the stopped one would have refreshed too.
    const witness = new Recorder<EndpointUpdate>()
    const stopWitness = dnsSrvSource(options).start(witness.push)
    await witness.waitFor((u) => u._tag === "Reset", { from: 2 })
    stopWitness()
    expect(witness.items[0]).toMatchObject({ _tag: "Reset", endpoints: [{ host: "10.1.0.11" }, { host: "10.1.0.12" }] })
    expect(emitted.items.length).toBe(mark)
    expect(midLookup.items).toStrictEqual([])
  })
})
