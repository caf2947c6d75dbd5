// The mDNS source's pure parts, with no network: instance names, the TXT record both ways, and the
// liveness table driven by a hand-moved clock (seen / goodbye / sweep -> Add, Change, Remove).
import { describe, expect, it } from "vitest"
import type { DiscoveredEndpoint, EndpointUpdate } from "../../src/discovery/types.ts"
import {
  decodeService,
  encodeTxt,
  instanceName,
  type MdnsSourceOptions,
  MdnsEndpointTable,
  type SeenService
} from "../../src/discovery/mdnsSource.ts"

const options: MdnsSourceOptions = { mesh: "shop", node: "n1" }
const announcement = { service: "catalog", port: 7001, address: "10.0.0.5", weight: 3, version: "1.2.0", zone: "z1" }

const seenOf = (txt: Record<string, string>, overrides: Partial<SeenService> = {}): SeenService => ({
  fqdn: "catalog n1 7001 shop._iip-mesh._tcp.local",
  port: 7001,
  host: "h1",
  txt,
  referer: { address: "10.0.0.9" },
  ...overrides
})

const endpoint = (overrides: Partial<DiscoveredEndpoint> = {}): DiscoveredEndpoint => ({
  service: "catalog",
  host: "10.0.0.5",
  port: 7001,
  weight: 1,
  features: ["mesh/1"],
  source: "mdns",
  node: "n1",
  ...overrides
})

/** The address a host's answers come from. */
const O = "10.0.0.5"

describe("instance names", () => {
  it("are DNS labels: no dots, at most 63 bytes, distinct when any part differs", () => {
    const name = instanceName("shop", "node.a", announcement)
    expect(name).toBe("catalog node-a 7001 shop")
    const long = instanceName("m".repeat(40), "n".repeat(40), announcement)
    expect(Buffer.byteLength(long)).toBeLessThanOrEqual(63)
    expect(long).not.toBe(instanceName("m".repeat(40), `${"n".repeat(39)}x`, announcement))
    expect(instanceName("shop", "n1", { ...announcement, port: 7002 })).not.toBe(instanceName("shop", "n1", announcement))
  })
})

describe("TXT record", () => {
  it("carries service, weight, version, zone, node, mesh, protocol version, features and address, and decodes back", () => {
    const txt = encodeTxt(options, announcement)
    expect(txt).toStrictEqual({
      service: "catalog",
      weight: "3",
      version: "1.2.0",
      zone: "z1",
      node: "n1",
      mesh: "shop",
      proto: "1",
      features: "mesh/1",
      addr: "10.0.0.5"
    })
    expect(decodeService(seenOf(txt), "shop", "other")).toStrictEqual({
      ok: true,
      endpoint: endpoint({ weight: 3, version: "1.2.0", zone: "z1", offHost: true })
    })
  })

  it("carries the identity the sidecar presents over mTLS as TXT id; an id that is not a SPIFFE ID is left out", () => {
    const txt = encodeTxt(options, { ...announcement, identity: "spiffe://iip-mesh.local/svc/catalog" })
    expect(txt.id).toBe("spiffe://iip-mesh.local/svc/catalog")
    const decoded = decodeService(seenOf(txt), "shop", "other")
    expect(decoded.ok && decoded.endpoint.identity).toBe("spiffe://iip-mesh.local/svc/catalog")
    const bad = decodeService(seenOf({ ...txt, id: "catalog" }), "shop", "other")
    expect(bad.ok && bad.endpoint.identity).toBeUndefined()
  })

  it("carries the version as TXT version, the endpoint's subset label; one that is not a label is left out", () => {
    const txt = encodeTxt(options, { ...announcement, version: "v2" })
    const decoded = decodeService(seenOf(txt), "shop", "other")
    expect(decoded.ok && decoded.endpoint.version).toBe("v2")
    const bad = decodeService(seenOf({ ...txt, version: "v2 beta" }), "shop", "other")
    expect(bad.ok && bad.endpoint.version).toBeUndefined()
  })

  it("announces the interface address for a wildcard listen address, and nothing without one (the answer's source is used)", () => {
    expect(encodeTxt({ ...options, interface: "10.1.1.1" }, { ...announcement, address: "0.0.0.0" }).addr).toBe("10.1.1.1")
    const txt = encodeTxt(options, { service: "catalog", port: 7001 })
    expect(txt.addr).toBeUndefined()
    expect(txt.weight).toBe("1")
    const decoded = decodeService(seenOf(txt), "shop", undefined)
    expect(decoded.ok && decoded.endpoint.host).toBe("10.0.0.9")
  })

  it("rejects another mesh, its own node, and records without a service or port", () => {
    const txt = encodeTxt(options, announcement)
    expect(decodeService(seenOf(txt), "other-mesh", undefined)).toStrictEqual({ ok: false, reason: "mesh" })
    expect(decodeService(seenOf(txt), "shop", "n1")).toStrictEqual({ ok: false, reason: "self" })
    const { service: _, ...noService } = txt
    expect(decodeService(seenOf(noService), "shop", undefined)).toStrictEqual({ ok: false, reason: "malformed" })
    expect(decodeService(seenOf(txt, { port: 0 }), "shop", undefined)).toStrictEqual({ ok: false, reason: "malformed" })
  })
})

describe("liveness table", () => {
  const table = (silenceMs = 2500) => {
    const updates: Array<EndpointUpdate> = []
    return { updates, table: new MdnsEndpointTable((update) => updates.push(update), silenceMs) }
  }

  it("adds a new instance, ignores a repeat, reports a change of weight and a move of address", () => {
    const { updates, table: t } = table()
    t.seen("A.local", endpoint(), 0, O)
    t.seen("a.local", endpoint(), 10, O)
    expect(updates).toStrictEqual([{ _tag: "Add", endpoint: endpoint() }])
    t.seen("a.local", endpoint({ weight: 5 }), 20, O)
    expect(updates[1]).toStrictEqual({ _tag: "Change", endpoint: endpoint({ weight: 5 }) })
    t.seen("a.local", endpoint({ port: 7009 }), 30, O)
    expect(updates.slice(2)).toStrictEqual([
      { _tag: "Remove", service: "catalog", key: "10.0.0.5:7001" },
      { _tag: "Add", endpoint: endpoint({ port: 7009 }) }
    ])
    expect(t.size).toBe(1)
  })

  it("removes an instance on its goodbye", () => {
    const { updates, table: t } = table()
    t.seen("a.local", endpoint(), 0, O)
    t.gone("a.local", O, 0)
    t.gone("a.local", O, 0)
    expect(updates.at(-1)).toStrictEqual({ _tag: "Remove", service: "catalog", key: "10.0.0.5:7001" })
    expect(updates).toHaveLength(2)
  })

  it("drops what was not re-confirmed within the silence limit, keeps what was, and re-adds a returning instance", () => {
    const { updates, table: t } = table(2500)
    t.seen("a.local", endpoint(), 0, O)
    t.seen("b.local", endpoint({ host: "10.0.0.6", node: "n2" }), 0, O)
    for (let now = 1000; now <= 2000; now += 1000) {
      t.seen("b.local", endpoint({ host: "10.0.0.6", node: "n2" }), now, O)
      expect(t.sweep(now)).toStrictEqual([])
    }
    expect(t.sweep(2500)).toStrictEqual([])
    expect(t.sweep(2501)).toStrictEqual(["a.local"])
    expect(updates.at(-1)).toStrictEqual({ _tag: "Remove", service: "catalog", key: "10.0.0.5:7001" })
    expect(t.endpoints().map((e) => e.node)).toStrictEqual(["n2"])
    t.seen("a.local", endpoint(), 4000, O)
    expect(updates.at(-1)).toStrictEqual({ _tag: "Add", endpoint: endpoint() })
  })
  it("an instance is held by the address its answers come from: another's goodbye or answer for its name is refused while it is live, taken once it went silent", () => {
    const { updates, table: t } = table(2500)
    t.seen("a.local", endpoint(), 0, O)
    // A goodbye and a take-over from another host, while the instance answers: refused, nothing changes.
    expect(t.gone("a.local", "10.0.0.66", 100)).toBe(false)
    expect(t.seen("a.local", endpoint({ host: "10.0.0.66" }), 200, "10.0.0.66")).toBe("spoofed")
    expect(updates).toStrictEqual([{ _tag: "Add", endpoint: endpoint() }])
    // A refused answer does not keep the instance alive either: it expires on its own host's silence.
    expect(t.sweep(2501)).toStrictEqual(["a.local"])
    // Once gone, the name is anyone's (a host that moved to a new address is taken there).
    expect(t.seen("a.local", endpoint({ host: "10.0.0.66" }), 2600, "10.0.0.66")).toBe("ok")
    // Its own goodbye removes it at once; a goodbye for an instance silent past the limit is taken from anyone.
    expect(t.gone("a.local", "10.0.0.66", 2700)).toBe(true)
    t.seen("b.local", endpoint({ host: "10.0.0.7" }), 3000, "10.0.0.7")
    expect(t.gone("b.local", O, 5500)).toBe(false)
    expect(t.gone("b.local", O, 5501)).toBe(true)
    expect(updates.map((u) => u._tag)).toStrictEqual(["Add", "Remove", "Add", "Remove", "Add", "Remove"])
  })
})
