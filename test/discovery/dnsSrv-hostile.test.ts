// DNS SRV answers a DNS server should never give, against lookupSrv (src/discovery/dnsSrvSource.ts)
// with a real DNS server on 127.0.0.1 (test/discovery/dnsServer.ts): port 0, and answer sets whose
// records times addresses run to a hundred thousand endpoints. Bad records are left out, the good
// ones kept, and no more than MaxEndpointsPerService endpoints are built.
import * as Result from "effect/Result"
import { Resolver } from "node:dns/promises"
import { afterEach, describe, expect, it } from "vitest"
import { headlessServiceName, lookupSrv } from "../../src/discovery/dnsSrvSource.ts"
import { endpointKey, MaxEndpointsPerService } from "../../src/discovery/types.ts"
import { LoopbackDnsServer, type Zone } from "./dnsServer.ts"

const name = headlessServiceName({ service: "web", namespace: "shop" })
const target = (pod: string) => `${pod}.web.shop.svc.cluster.local`

const servers: Array<LoopbackDnsServer> = []
afterEach(async () => {
  await Promise.all(servers.splice(0).map((server) => server.close()))
})

const lookup = async (zone: Zone) => {
  const server = await LoopbackDnsServer.start(zone)
  servers.push(server)
  const resolver = new Resolver({ timeout: 2000, tries: 1 })
  resolver.setServers([server.address])
  const result = await lookupSrv(resolver, "web", name)
  if (Result.isFailure(result)) throw new Error(`lookup failed: ${JSON.stringify(result.failure)}`)
  return result.success
}

describe("lookupSrv against hostile answers", () => {
  it("a record with port 0 is left out; the others are kept", async () => {
    const answer = await lookup({
      srv: { [name]: [{ weight: 1, port: 0, target: target("zero") }, { weight: 1, port: 4143, target: target("good") }] },
      a: { [target("zero")]: ["10.1.0.1"], [target("good")]: ["10.1.0.2"] }
    })
    expect(answer.endpoints.map(endpointKey)).toStrictEqual(["10.1.0.2:4143"])
    expect(answer.capped).toBeUndefined()
  })

  it("records times addresses beyond MaxEndpointsPerService: at most that many endpoints are built, and the TTL still comes out", async () => {
    // 40 targets with 70 addresses each (as many as fit a UDP answer): 2,800 endpoints if all were kept.
    const targets = Array.from({ length: 40 }, (_, i) => target(`pod-${i}`))
    const a: Record<string, Array<string>> = {}
    for (const [i, t] of targets.entries()) a[t] = Array.from({ length: 70 }, (_, j) => `10.${i}.0.${j}`)
    const answer = await lookup({ srv: { [name]: targets.map((t) => ({ weight: 1, port: 4143, target: t })) }, a, ttl: 7 })
    expect(answer.endpoints).toHaveLength(MaxEndpointsPerService)
    expect(answer.capped).toBe(true)
    expect(answer.ttlSeconds).toBe(7)
  })
})
