// DNS SRV answers a DNS server should never give, against lookupSrv (src/discovery/dnsSrvSource.ts)
// with a real DNS server on 127.0.0.1 (test/discovery/dnsServer.ts): port 0, weights past MaxWeight,
// answer sets whose records times addresses run to a hundred thousand endpoints, no answer at all,
// and seeded random zones and garbled answers. Bad records are left out, the good ones kept, no more
// than MaxEndpointsPerService endpoints are built, and every lookup ends in an answer or a failure.
import * as Result from "effect/Result"
import { Resolver } from "node:dns/promises"
import { afterEach, describe, expect, it } from "vitest"
import { isIP } from "node:net"
import { headlessServiceName, lookupSrv } from "../../src/discovery/dnsSrvSource.ts"
import { endpointKey, MaxEndpointsPerService, MaxWeight } from "../../src/discovery/types.ts"
import { prng } from "../helpers/prng.ts"
import { LoopbackDnsServer, type SrvRecord, type Zone } from "./dnsServer.ts"

const name = headlessServiceName({ service: "web", namespace: "shop" })
const target = (pod: string) => `${pod}.web.shop.svc.cluster.local`

const servers: Array<LoopbackDnsServer> = []
afterEach(async () => {
  await Promise.all(servers.splice(0).map((server) => server.close()))
})

const serve = async (zone: Zone, timeoutMs = 2000) => {
  const server = await LoopbackDnsServer.start(zone)
  servers.push(server)
  const resolver = new Resolver({ timeout: timeoutMs, tries: 1 })
  resolver.setServers([server.address])
  return { server, resolver }
}

const lookup = async (zone: Zone) => {
  const { resolver } = await serve(zone)
  const result = await lookupSrv(resolver, "web", name)
  if (Result.isFailure(result)) throw new Error(`lookup failed: ${JSON.stringify(result.failure)}`)
  return result.success
}

/** What every endpoint lookupSrv builds must be, whatever the server said. */
const expectSound = (endpoints: ReadonlyArray<{ host: string; port: number; weight: number }>) => {
  expect(endpoints.length).toBeLessThanOrEqual(MaxEndpointsPerService)
  for (const endpoint of endpoints) {
    expect(isIP(endpoint.host)).not.toBe(0)
    expect(Number.isInteger(endpoint.port) && endpoint.port >= 1 && endpoint.port <= 65535 ? "in range" : endpoint.port).toBe("in range")
    expect(Number.isInteger(endpoint.weight) && endpoint.weight >= 1 && endpoint.weight <= MaxWeight ? "in range" : endpoint.weight).toBe("in range")
  }
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

  it("weights past MaxWeight (an SRV weight runs to 65535) are clamped to it; 0 counts as 1", async () => {
    const answer = await lookup({
      srv: { [name]: [{ weight: 65535, port: 4143, target: target("heavy") }, { weight: 0, port: 4143, target: target("light") }] },
      a: { [target("heavy")]: ["10.1.0.1"], [target("light")]: ["10.1.0.2"] }
    })
    expect(answer.endpoints.map((endpoint) => [endpointKey(endpoint), endpoint.weight])).toStrictEqual([
      ["10.1.0.1:4143", MaxWeight],
      ["10.1.0.2:4143", 1]
    ])
  })

  it("a server that never answers: the lookup fails with ETIMEOUT by the resolver's timeout, it does not hang", async () => {
    const { server, resolver } = await serve({ srv: { [name]: [{ weight: 1, port: 4143, target: target("pod") }] } }, 100)
    server.rewrite = () => undefined
    const result = await lookupSrv(resolver, "web", name)
    expect(Result.isFailure(result) ? result.failure.code : "answered").toBe("ETIMEOUT")
  })

  it("seeded random zones (ports 0-65535, weights, priorities, IP and named targets, NXDOMAIN): every endpoint built is sound", async () => {
    const random = prng(0x5eed)
    const { server, resolver } = await serve({})
    for (let round = 0; round < 300; round++) {
      const a: Record<string, Array<string>> = {}
      const records: Array<SrvRecord> = Array.from({ length: random.int(0, 8) }, () => {
        const kind = random.int(0, 3)
        const host = kind === 0 ? `10.${random.int(0, 255)}.${random.int(0, 255)}.${random.int(0, 255)}` : kind === 1 ? "." : target(`pod-${random.int(0, 5)}`)
        if (kind >= 2) a[host] = Array.from({ length: random.int(0, 4) }, () => `10.9.${random.int(0, 255)}.${random.int(0, 255)}`)
        return { priority: random.int(0, 65535), weight: random.int(0, 65535), port: random.pick([0, 1, 80, 65535, random.int(0, 65535)]), target: host }
      })
      server.zone = random.int(0, 9) === 0 ? {} : { srv: { [name]: records }, a, ttl: random.pick([0, 1, 2 ** 31 - 1, random.int(0, 2 ** 32 - 1)]) }
      const result = await lookupSrv(resolver, "web", name)
      expect(Result.isSuccess(result) ? "answered" : JSON.stringify({ failure: result.failure, zone: server.zone })).toBe("answered")
      if (Result.isSuccess(result)) expectSound(result.success.endpoints)
    }
  })

  it("seeded garbled answers (bytes overwritten, cut short, lengths and counts changed): every lookup ends, sound or failed", async () => {
    const random = prng(0xbad)
    const records = Array.from({ length: 6 }, (_, i) => ({ weight: 5, port: 4143, target: target(`pod-${i}`) }))
    const a = Object.fromEntries(records.map((record, i) => [record.target, [`10.2.0.${i}`]]))
    // A resolver drops an answer it cannot read and waits for another: each such lookup costs its 50 ms timeout.
    const { server, resolver } = await serve({ srv: { [name]: records }, a }, 50)
    server.rewrite = (answer) => {
      // One answer in three garbled: a lookup asks for the SRV records and then each target's.
      if (random.int(0, 2) !== 0) return answer
      const bytes = Buffer.from(answer)
      // Keep the id (bytes 0-1) so the resolver reads the garbage as the answer to its query.
      for (let i = random.int(1, 4); i > 0; i--) bytes[random.int(2, bytes.length - 1)] = random.int(0, 255)
      return random.int(0, 3) === 0 ? bytes.subarray(0, random.int(2, bytes.length)) : bytes
    }
    let failed = 0
    const rounds = 120
    for (let round = 0; round < rounds; round++) {
      const result = await lookupSrv(resolver, "web", name)
      if (Result.isSuccess(result)) expectSound(result.success.endpoints)
      else failed++
    }
    // Both outcomes came up: the garbling neither always broke the answer nor never did.
    expect(failed).toBeGreaterThan(0)
    expect(failed).toBeLessThan(rounds)
  })
})
