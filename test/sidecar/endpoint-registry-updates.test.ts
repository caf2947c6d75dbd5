// The endpoint registry's updates (src/sidecar/endpoints.ts) as discovery floods it: an update
// of one service must cost what that service holds, not what the whole registry holds (a hostile
// LAN host can announce 4,096 mDNS instances). And the clients an update closes are those of an
// address and security no service lists any more: two services listing one address with different
// securities each have a client of their own security.
import { afterEach, describe, expect, it, vi } from "vitest"
import type { Endpoint, EndpointRegistry } from "../../src/sidecar/endpoints.ts"
import { IipClient } from "../../src/iip/client.ts"
import { prng } from "../helpers/prng.ts"
import { bareRegistry } from "../support/bareRegistry.ts"


const registries: Array<EndpointRegistry> = []
const makeRegistry = (): EndpointRegistry => {
  const registry = bareRegistry()
  registries.push(registry)
  return registry
}

afterEach(() => {
  for (const registry of registries.splice(0)) registry.close()
  vi.restoreAllMocks()
})

describe("EndpointRegistry.set", () => {
  it("an update reads the endpoints of the service it updates, not those of every service (4,096 one-endpoint services)", () => {
    const registry = makeRegistry()
    let reads = 0
    // What a client of an endpoint must present is read from each endpoint a pass looks at.
    const endpoint = (service: string, i: number): Endpoint => ({
      service,
      host: `10.0.${i >> 8}.${i & 255}`,
      port: 7000,
      weight: 1,
      source: "mdns",
      get security() {
        reads++
        return undefined
      }
    })
    const count = 4096
    for (let i = 0; i < count; i++) registry.set(`s${i}`, [endpoint(`s${i}`, i)])
    // Then 1,000 updates of one of them, with the other 4,095 in place.
    for (let i = 0; i < 1000; i++) registry.set("s0", [endpoint("s0", i)])
    // A full scan per update read 8.4 M endpoints for the first part and 4.1 M for the second.
    expect(reads).toBeLessThanOrEqual(2 * (count + 1000))
    expect(registry.endpointsOf("s0")).toHaveLength(1)
    expect(registry.endpointsOf(`s${count - 1}`)[0]!.host).toBe("10.0.15.255")
  })

  it("gives each service's listing of a shared address a client of its own security (an mTLS endpoint is never dialled plain)", () => {
    const registry = makeRegistry()
    const payments: Endpoint = { service: "payments", host: "10.0.0.7", port: 7000, weight: 1, source: "kubernetes", security: "mtls", identity: "spiffe://t/payments" }
    // Any host on the mDNS link can announce another service at that address (TXT addr), without an identity.
    const listed: Endpoint = { service: "other", host: "10.0.0.7", port: 7000, weight: 1, source: "mdns" }
    registry.set("payments", [payments])
    registry.set("other", [listed])
    const plain = registry.clientOf(listed)
    const mtls = registry.clientOf(payments)
    expect(mtls).not.toBe(plain)
    // An update of a third service keeps both: each is listed.
    registry.set("third", [{ ...listed, service: "third", host: "10.0.0.8" }])
    expect(registry.clientOf(payments)).toBe(mtls)
    expect(registry.clientOf(listed)).toBe(plain)
    const closes = vi.spyOn(IipClient.prototype, "close")
    registry.set("other", [])
    expect(closes.mock.contexts).toEqual([plain])
    expect(registry.clientOf(payments)).toBe(mtls)
  })

  it("closes the clients whose address and security no service lists any more after each update (randomized)", () => {
    const closes = vi.spyOn(IipClient.prototype, "close")
    // A failure reproduces from its seed.
    const seed = 0x1ee7
    const { next: random, pick } = prng(seed)
    const services = ["a", "b", "c", "d"]
    const addresses = [1, 2, 3, 4, 5, 6].map((i) => ({ host: i === 6 ? "::1" : `127.0.0.${i}`, port: 7000 + (i % 2) }))
    const securities: ReadonlyArray<Partial<Endpoint>> = [{}, { security: "mtls", identity: "spiffe://t/a" }, { security: "mtls", identity: "spiffe://t/b" }, { security: "tls", ca: "/ca.pem" }, { security: "plain" }]
    const versions = [undefined, "v1", "v2"]
    const keyOf = (e: { host: string; port: number }): string => (e.host.includes(":") ? `[${e.host}]:${e.port}` : `${e.host}:${e.port}`)
    const securityOf = (e: Partial<Endpoint>): string => `${e.security ?? ""} ${e.identity ?? ""} ${e.ca ?? ""}`
    // Clients compared by identity (two clients of one address are deeply equal).
    const serials = new Map<unknown, number>()
    const serialsOf = (clients: Iterable<unknown>): Array<number | undefined> => [...clients].map((client) => serials.get(client)).sort()

    for (let run = 0; run < 20; run++) {
      const registry = makeRegistry()
      // The model: a full scan of every service's members after each update.
      const model = new Map<string, ReadonlyArray<Endpoint>>()
      const clients = new Map<string, { readonly client: IipClient }>()
      // Every endpoint listed so far: a lease picked before an update may make its client after it.
      const listed: Array<Endpoint> = []
      for (let step = 0; step < 300; step++) {
        if (random() < 0.6) {
          const service = pick(services)
          const size = random() < 0.15 ? 0 : 1 + Math.floor(random() * 5) // duplicates of an address included
          const endpoints: Array<Endpoint> = []
          for (let i = 0; i < size; i++) endpoints.push({ service, ...pick(addresses), weight: 1, source: "test", version: pick(versions), ...pick(securities) })
          listed.push(...endpoints)
          if (endpoints.length === 0) model.delete(service)
          else model.set(service, endpoints)
          const used = new Set<string>()
          for (const members of model.values()) for (const e of members) used.add(`${keyOf(e)} ${securityOf(e)}`)
          const expectedClosed = new Set<IipClient>()
          for (const [key, { client }] of clients) {
            if (!used.has(key)) {
              expectedClosed.add(client)
              clients.delete(key)
            }
          }
          const before = closes.mock.contexts.length
          registry.set(service, endpoints)
          expect(serialsOf(closes.mock.contexts.slice(before)), `seed ${seed} run ${run} step ${step}`).toEqual(serialsOf(expectedClosed))
          for (const name of services) expect(registry.endpointsOf(name)).toEqual(model.get(name) ?? [])
        } else {
          // A request: a client for a member of some service (as the outbound side makes them, right after
          // a pick), or now and then for an endpoint of an earlier set (no service may list it any more).
          const members = random() < 0.1 && listed.length > 0 ? listed : model.get(pick(services))
          if (members === undefined) continue
          const e = pick(members)
          const client = registry.clientOf(e)
          const key = `${keyOf(e)} ${securityOf(e)}`
          const known = clients.get(key)
          if (known !== undefined) expect(client).toBe(known.client)
          else {
            serials.set(client, serials.size)
            clients.set(key, { client })
          }
        }
      }
    }
    // Closes happened often enough for the comparison to tell.
    expect(closes.mock.calls.length).toBeGreaterThan(1000)
  })
})
