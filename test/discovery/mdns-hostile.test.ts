// What any host on the LAN can announce over mDNS, decoded and tracked with no network (the
// decoder and the liveness table of src/discovery/mdnsSource.ts): TXT values out of range or not
// of their kind, hosts that are not addresses, and more instances than any mesh has. A bad record
// is left out or loses the bad field; the good ones are kept.
import { createRequire } from "node:module"
import os from "node:os"
import { describe, expect, it } from "vitest"
import { decodeService, instancesIn, MaxMdnsInstances, MdnsEndpointTable, type SeenService } from "../../src/discovery/mdnsSource.ts"
import { type DiscoveredEndpoint, type EndpointUpdate, MaxWeight } from "../../src/discovery/types.ts"

// The decoder multicast-dns (under bonjour-service) reads packets with.
const require = createRequire(import.meta.url)
const packet = createRequire(require.resolve("multicast-dns"))("dns-packet") as { decode: (bytes: Buffer) => { readonly answers?: unknown } }

const txt = { service: "catalog", mesh: "shop", node: "n1", weight: "1", proto: "1", features: "mesh/1", addr: "10.0.0.5" }

const seen = (fields: Record<string, unknown>, overrides: Partial<SeenService> = {}): SeenService => ({
  fqdn: "catalog n1 7001 shop._iip-mesh._tcp.local",
  port: 7001,
  host: "h1.local",
  txt: { ...txt, ...fields },
  referer: { address: "10.0.0.9" },
  ...overrides
})

const decoded = (fields: Record<string, unknown>, overrides: Partial<SeenService> = {}): DiscoveredEndpoint | string => {
  const result = decodeService(seen(fields, overrides), "shop", "self")
  return result.ok ? result.endpoint : result.reason
}

describe("hostile TXT records", () => {
  it("a weight beyond MaxWeight is clamped to it: at 1e308 the weights sum to Infinity and the round-robin breaks (two equal ones split 998:1)", () => {
    for (const weight of ["1e308", "99999999999999999999", "Infinity", "1001"]) expect(decoded({ weight }), weight).toMatchObject({ weight: MaxWeight })
    for (const weight of ["-5", "NaN", "0x", ""]) expect(decoded({ weight }), weight).toMatchObject({ weight: 1 })
  })

  it("a service that is not a DNS label is malformed: no control characters or 10 KB names reach the registry, the admin view or the log", () => {
    for (const service of ["Catalog", "cat alog", "catalog\n{\"forged\":true}", "a".repeat(64), "../etc", "-catalog"]) {
      expect(decoded({ service }), JSON.stringify(service)).toBe("malformed")
    }
  })

  it("an addr that is not an IP address or host name is malformed, not a dial target; a bad SRV host without addr too", () => {
    for (const addr of ["10.0.0.1:80", "evil host", "a\r\nb", "x".repeat(300), "http://10.0.0.1/"]) {
      expect(decoded({ addr }), JSON.stringify(addr)).toBe("malformed")
    }
    expect(decoded({ addr: "fd00::5" })).toMatchObject({ host: "fd00::5" })
    const { addr: _, ...noAddr } = txt
    // No addr and no source address: the SRV target's name is the host, if it is one.
    const bare = (host: string) => {
      const result = decodeService({ fqdn: "x._iip-mesh._tcp.local", port: 7001, host, txt: noAddr, addresses: [] }, "shop", "self")
      return result.ok ? result.endpoint.host : result.reason
    }
    expect(bare("bad host\u0000")).toBe("malformed")
    expect(bare("h1.local")).toBe("h1.local")
  })

  it("an addr on the receiving host (loopback, 0.0.0.0, ::, localhost) from another host is refused: it would aim the mesh at this sidecar's own app or admin", () => {
    for (const addr of ["127.0.0.1", "127.9.9.9", "0.0.0.0", "0.1.2.3", "::1", "::", "::ffff:127.0.0.1", "0:0:0:0:0:0:0:1", "localhost", "LocalHost.", "admin.localhost"]) {
      expect(decoded({ addr }), JSON.stringify(addr)).toBe("local-address")
    }
    // Without addr the host is the answer's source, which a remote host cannot make loopback; its SRV target neither.
    const { addr: _, ...noAddr } = txt
    expect(decodeService({ fqdn: "x._iip-mesh._tcp.local", port: 7001, host: "localhost", txt: noAddr, addresses: [] }, "shop", "self")).toMatchObject({ ok: false, reason: "local-address" })
    // A publisher on this host (its answer comes from loopback, as in a one-host demo) may announce loopback.
    expect(decoded({ addr: "127.0.0.1" }, { referer: { address: "127.0.0.1" } })).toMatchObject({ host: "127.0.0.1" })
    expect(decoded({ addr: "::1" }, { referer: { address: "::1" } })).toMatchObject({ host: "::1" })
    // So may one whose answer comes from one of this host's own interface addresses (a sidecar beside this one, over the LAN).
    const ownAddresses = new Set(["10.0.0.9"])
    expect(decodeService(seen({ addr: "127.0.0.1" }), "shop", "self", (address) => ownAddresses.has(address))).toMatchObject({ ok: true, endpoint: { host: "127.0.0.1" } })
    expect(decodeService(seen({ addr: "127.0.0.1" }, { referer: { address: "10.0.0.8" } }), "shop", "self", (address) => ownAddresses.has(address))).toMatchObject({ ok: false, reason: "local-address" })
    expect(decoded({ addr: "10.0.0.7" })).toMatchObject({ host: "10.0.0.7" })
  })

  it("an addr the resolver reads as an IPv4 address though it is not a dotted quad (127.1, 2130706433, 0x7f.1, 0) is malformed: it would dial this host's loopback, or multicast, past the checks above", () => {
    // getaddrinfo (what net.connect looks a host name up with) takes inet_aton's forms: 127.1 and
    // 2130706433 connect to 127.0.0.1, 0 to this host, 224.1 is multicast; isIP says none is an address.
    for (const addr of ["127.1", "127.0.1", "2130706433", "0x7f000001", "0x7f.1", "0177.0.0.1", "0", "0.0", "224.1", "3758096635", "127.1."]) {
      for (const referer of ["10.0.0.9", "127.0.0.1"]) expect(decoded({ addr }, { referer: { address: referer } }), `${addr} from ${referer}`).toBe("malformed")
    }
    // Names with digits stay names; a numeric label before the last is fine too.
    for (const addr of ["h1.local", "catalog-1", "1a.example", "web.1st", "pod-7.web.shop.svc.cluster.local", "10.0.0.5"]) {
      expect(decoded({ addr }), addr).toMatchObject({ host: addr })
    }
  })

  it("an addr naming this host by its host name (which /etc/hosts maps to loopback: 127.0.1.1 on Debian) from another host is refused; from this host it is taken", () => {
    // The name is no secret: a sidecar's default node id and its SRV target carry it.
    const name = os.hostname()
    for (const addr of [name, name.toUpperCase(), `${name}.`]) expect(decoded({ addr }), addr).toBe("local-address")
    expect(decoded({ addr: name }, { referer: { address: "127.0.0.1" } })).toMatchObject({ host: name })
    expect(decoded({ addr: `${name}x.example` })).toMatchObject({ host: `${name}x.example` })
  })

  it("any other name can resolve to loopback too (ip6-localhost, an attacker's own DNS name): from another host it is taken marked offHost, so the dial checks the address it resolves to", () => {
    for (const addr of ["evil.example", "ip6-localhost", "printer.local", "10.0.0.5"]) expect(decoded({ addr }), addr).toMatchObject({ host: addr, offHost: true })
    // Announced from this host (two sidecars on one machine): dialled as announced.
    const local = decoded({ addr: "evil.example" }, { referer: { address: "127.0.0.1" } })
    expect(local).toMatchObject({ host: "evil.example" })
    expect((local as DiscoveredEndpoint).offHost).toBeUndefined()
  })

  it("a multicast or broadcast addr is never a dial target, from any host", () => {
    for (const addr of ["224.0.0.251", "239.1.2.3", "255.255.255.255", "ff02::fb"]) {
      for (const referer of ["10.0.0.9", "127.0.0.1"]) expect(decoded({ addr }, { referer: { address: referer } }), `${addr} from ${referer}`).toBe("malformed")
    }
  })

  it("zone, node, features and proto are bounded: values that are not labels are left out, at most 16 features", () => {
    const endpoint = decoded({
      zone: "z".repeat(5000),
      node: "n\u0000de",
      features: Array.from({ length: 5000 }, (_, i) => `f${i}`).join(","),
      proto: "1,evil"
    }) as DiscoveredEndpoint
    expect(endpoint.zone).toBeUndefined()
    expect(endpoint.node).toBeUndefined()
    expect(endpoint.features).toHaveLength(16)
    expect(endpoint.features.every((f) => f.startsWith("f"))).toBe(true)
    // Any id the configuration takes (spaces and all) is kept; only control characters and length are refused.
    expect((decoded({ node: "my node-1" }) as DiscoveredEndpoint).node).toBe("my node-1")
    const weird = decoded({ features: `mesh/1,${"x".repeat(64)},a b,ok/2`, proto: "1" }) as DiscoveredEndpoint
    expect(weird.features).toStrictEqual(["mesh/1", "ok/2"])
  })

  it("TXT values that are not strings (binary or bare keys) are treated as absent", () => {
    expect(decoded({ weight: Buffer.from("9"), zone: true, version: 7 })).toMatchObject({ weight: 1 })
    expect(decoded({ service: Buffer.from("catalog") })).toBe("malformed")
  })
})

describe("a flood of instances", () => {
  const flood = (count: number) => {
    const updates: Array<EndpointUpdate> = []
    const table = new MdnsEndpointTable((update) => updates.push(update), 2500)
    const refused: Array<boolean> = []
    for (let i = 0; i < count; i++) {
      refused.push(table.seen(`i${i}._iip-mesh._tcp.local`, { service: `s${i % 50}`, host: `10.0.${i >> 8}.${i & 255}`, port: 7000, weight: 1, features: [], source: "mdns" }, 0, "10.0.255.1") === "full")
    }
    return { table, updates, refused }
  }

  it(`the table tracks at most MaxMdnsInstances; the rest are refused until entries expire or leave`, () => {
    const { table, updates, refused } = flood(MaxMdnsInstances + 500)
    expect(table.size).toBe(MaxMdnsInstances)
    expect(updates).toHaveLength(MaxMdnsInstances)
    expect(refused.filter(Boolean)).toHaveLength(500)
    // A known instance is still confirmed and updated at the cap.
    expect(table.seen("i0._iip-mesh._tcp.local", { service: "s0", host: "10.0.0.0", port: 7000, weight: 2, features: [], source: "mdns" }, 1, "10.0.255.1")).toBe("ok")
    expect(updates.at(-1)).toMatchObject({ _tag: "Change" })
    // A goodbye makes room for a new one.
    table.gone("i1._iip-mesh._tcp.local", "10.0.255.1", 1)
    expect(table.seen("new._iip-mesh._tcp.local", { service: "s0", host: "10.9.9.9", port: 7000, weight: 1, features: [], source: "mdns" }, 1, "10.0.255.1")).toBe("ok")
  })
})

describe("hostile mDNS responses (instancesIn)", () => {
  const type = "_iip-mesh._tcp.local"
  const fqdn = `catalog n1 7001 shop.${type}`
  const good = [
    { name: type, type: "PTR", ttl: 4500, data: fqdn },
    { name: fqdn, type: "SRV", ttl: 120, data: { priority: 0, weight: 0, port: 7001, target: "h1.local" } },
    { name: fqdn, type: "TXT", ttl: 4500, data: [Buffer.from("service=catalog"), Buffer.from("mesh=shop")] },
    { name: "h1.local", type: "A", ttl: 120, data: "10.0.0.5" }
  ]
  const referer = { address: "10.0.0.9" }

  it("reads an instance with its SRV, TXT and addresses, and a goodbye", () => {
    const { goodbyes, seen } = instancesIn({ answers: good, additionals: [{ name: type, type: "PTR", ttl: 0, data: "gone._iip-mesh._tcp.local" }] }, referer)
    expect(goodbyes).toStrictEqual(["gone._iip-mesh._tcp.local"])
    expect(seen).toHaveLength(1)
    expect(seen[0]).toMatchObject({ fqdn, port: 7001, host: "h1.local", addresses: ["10.0.0.5"], referer })
    expect({ ...seen[0]!.txt }).toStrictEqual({ service: "catalog", mesh: "shop" })
  })

  it("skips what is malformed, keeps the good instance beside it, and never throws", () => {
    const junk: Array<unknown> = [
      null, 7, "x", {}, { name: 5 }, { name: type, type: "PTR" }, { name: type, type: "PTR", ttl: 10, data: { not: "a name" } },
      { name: type, type: "PTR", ttl: 10, data: "nosrv._iip-mesh._tcp.local" },
      { name: type, type: "PTR", ttl: 10, data: "badsrv._iip-mesh._tcp.local" }, { name: "badsrv._iip-mesh._tcp.local", type: "SRV", ttl: 10, data: null },
      { name: type, type: "PTR", ttl: 10, data: "badtxt._iip-mesh._tcp.local" }, { name: "badtxt._iip-mesh._tcp.local", type: "SRV", ttl: 10, data: { port: 1, target: "t" } },
      { name: "badtxt._iip-mesh._tcp.local", type: "TXT", ttl: 10, data: ["s=not a buffer", 42, Buffer.from("="), Buffer.from("__proto__=x"), Buffer.from("k=v")] }
    ]
    for (const packet of [{}, { answers: "nope" }, { answers: null, additionals: 3 }]) expect(instancesIn(packet, referer)).toStrictEqual({ goodbyes: [], seen: [] })
    const { seen } = instancesIn({ answers: [...junk, ...good] }, referer)
    expect(seen.map((s) => s.fqdn).sort()).toStrictEqual(["badtxt._iip-mesh._tcp.local", fqdn])
    const badtxt = seen.find((s) => s.fqdn.startsWith("badtxt"))!
    expect(Object.getPrototypeOf(badtxt.txt)).toBeNull()
    // A key named __proto__ is a plain key of a prototype-less record: it changes no prototype.
    expect(Object.keys(badtxt.txt!).sort()).toStrictEqual(["__proto__", "k"])
    expect(badtxt.txt!["k"]).toBe("v")
  })

  it("a packet of many instances on one target of many addresses costs time in proportion to its size (770 x 2,000 address look-ups took 370 ms)", () => {
    // One 64 KB datagram as a hostile host would compress it (multicast-dns decodes it with dns-packet,
    // as here): 770 instances whose SRVs all name one target, which has 2,000 A records.
    const bytes = compressedFlood(770, 2000)
    expect(bytes.length).toBeLessThanOrEqual(65507)
    const decodedPacket = packet.decode(bytes)
    let best = Infinity
    for (let round = 0; round < 3; round++) {
      const started = performance.now()
      const { seen } = instancesIn(decodedPacket, referer)
      best = Math.min(best, performance.now() - started)
      expect(seen).toHaveLength(770)
      expect(seen[769]!.addresses).toHaveLength(2000)
    }
    expect(best).toBeLessThan(60)
  })

  it("one instance named by a thousand PTRs of one packet is one instance", () => {
    const ptrs = Array.from({ length: 1000 }, () => good[0]!)
    expect(instancesIn({ answers: [...ptrs, ...good.slice(1)] }, referer).seen).toHaveLength(1)
  })
})

/**
 * A response with name compression (pointers reach only the first 16 KiB, so each SRV names its
 * instance as a label and a pointer to the service type): `instances` PTR and SRV records whose SRVs
 * all target h.local, and `addresses` A records of h.local.
 */
const compressedFlood = (instances: number, addresses: number): Buffer => {
  const parts: Array<Buffer> = []
  let size = 12
  const u16 = (n: number) => Buffer.from([n >> 8, n & 255])
  const pointer = (at: number) => u16(0xc000 | at)
  const record = (name: Buffer, type: number, rdata: Buffer) => {
    const bytes = Buffer.concat([name, u16(type), u16(1), Buffer.from([0, 0, 0, 120]), u16(rdata.length), rdata])
    parts.push(bytes)
    size += bytes.length
  }
  const header = Buffer.alloc(12)
  header.writeUInt16BE(0x8400, 2)
  header.writeUInt16BE(instances * 2 + addresses, 6)
  const hostAt = size
  record(Buffer.from("\x01h\x05local\x00", "latin1"), 1, Buffer.from([10, 0, 0, 0]))
  const typeAt = size
  for (let i = 0; i < instances; i++) {
    const label = Buffer.from(String(i))
    const instance = Buffer.concat([Buffer.from([label.length]), label, pointer(typeAt)])
    record(i === 0 ? Buffer.from("\x09_iip-mesh\x04_tcp\x05local\x00", "latin1") : pointer(typeAt), 12, instance)
    record(instance, 33, Buffer.concat([u16(0), u16(0), u16(7001), pointer(hostAt)]))
  }
  for (let j = 1; j < addresses; j++) record(pointer(hostAt), 1, Buffer.from([10, 0, j >> 8, j & 255]))
  return Buffer.concat([header, ...parts])
}
