// Seeded random mDNS responses, as any host on the link could send them, through the browse path
// of src/discovery/mdnsSource.ts with no network: encoded by dns-packet (what multicast-dns decodes
// with), a few bytes garbled in half of them, decoded (a packet that does not decode is a
// multicast-dns warning, never ours), read by instancesIn, decoded by decodeService and tracked by
// MdnsEndpointTable. Nothing throws, and every endpoint reported is one a sidecar may dial.
import { createRequire } from "node:module"
import { isIP } from "node:net"
import { describe, expect, it } from "vitest"
import { decodeService, instancesIn, MdnsEndpointTable } from "../../src/discovery/mdnsSource.ts"
import { type EndpointUpdate, isHost, isServiceName, MaxWeight } from "../../src/discovery/types.ts"
import { prng } from "../helpers/prng.ts"

const require = createRequire(import.meta.url)
const dnsPacket = createRequire(require.resolve("multicast-dns"))("dns-packet") as {
  encode: (packet: unknown) => Buffer
  decode: (bytes: Buffer) => { readonly answers?: unknown; readonly additionals?: unknown }
}

const type = "_iip-mesh._tcp.local"
const loopbackOrLocal = /^(?:127\.|0\.|::1$|::$|::ffff:127\.|(?:[^.]+\.)*localhost\.?$)/i

describe("seeded random mDNS responses", () => {
  it("3,000 packets: nothing throws, the table keeps its bound, every endpoint reported is dialable and in range", () => {
    const random = prng(0x3d45)
    const maxInstances = 64
    const updates: Array<EndpointUpdate> = []
    const table = new MdnsEndpointTable((update) => updates.push(update), 60_000, maxInstances)
    const pick = <A>(items: ReadonlyArray<A>) => random.pick(items)
    const text = () => pick(["catalog", "web", "Catalog", "", "a".repeat(70), "x\u009b31m", "-bad", "db-1", String(random.int(0, 99999))])
    const addr = () => pick(["10.0.0.5", "127.0.0.1", "0.0.0.0", "::1", "::", "::ffff:127.0.0.1", "localhost", "a.localhost", "224.0.0.251", "ff02::fb", "255.255.255.255", "fd00::5", "h1.local", "evil host", "10.0.0.1:80", ""])
    let decodedPackets = 0
    for (let round = 0; round < 3000; round++) {
      const instances = random.int(1, 4)
      const answers: Array<unknown> = []
      for (let i = 0; i < instances; i++) {
        const fqdn = `${pick(["a", "b", "c", "d"])}${random.int(0, 200)}.${type}`
        const target = pick(["h1.local", "h2.local", "localhost"])
        const txt = [`service=${text()}`, `mesh=${pick(["shop", "shop", "other"])}`, `node=${pick(["n1", "self", "x\u0000y"])}`, `weight=${pick(["1", "0", "-5", "1e308", "NaN", "999999", "7"])}`, `features=${pick(["mesh/1", "", "a,b,,c", "x".repeat(100)])}`, `admin=${pick(["0", "65535", "70000", "9090", "x"])}`]
        if (random.int(0, 3) > 0) txt.push(`addr=${addr()}`)
        answers.push(
          { name: type, type: "PTR", ttl: pick([0, 10, 4500]), data: fqdn },
          { name: fqdn, type: "SRV", ttl: pick([0, 120]), data: { port: pick([0, 1, 7001, 65535, random.int(0, 65535)]), target } },
          { name: fqdn, type: "TXT", ttl: 4500, data: txt },
          { name: target, type: "A", ttl: 120, data: pick(["10.0.0.5", "127.0.0.1", "224.0.0.1", "0.0.0.0"]) }
        )
      }
      let bytes = dnsPacket.encode({ type: "response", answers })
      if (random.int(0, 1) === 0) {
        bytes = Buffer.from(bytes)
        for (let i = random.int(1, 4); i > 0; i--) bytes[random.int(0, bytes.length - 1)] = random.int(0, 255)
      }
      let packet: { readonly answers?: unknown; readonly additionals?: unknown }
      try {
        packet = dnsPacket.decode(bytes)
      } catch {
        continue
      }
      decodedPackets++
      const referer = { address: pick(["10.0.0.9", "10.0.0.9", "127.0.0.1"]) }
      const { goodbyes, seen } = instancesIn(packet, referer)
      for (const fqdn of goodbyes) table.gone(fqdn, referer.address, round)
      for (const service of seen) {
        const decoded = decodeService(service, "shop", "self")
        if (!decoded.ok) {
          table.gone(service.fqdn, referer.address, round)
          continue
        }
        const { endpoint } = decoded
        expect(isServiceName(endpoint.service)).toBe(true)
        expect(isHost(endpoint.host), endpoint.host).toBe(true)
        expect(/^(?:22[4-9]|23\d|255\.255\.255\.255|ff)/i.test(endpoint.host), endpoint.host).toBe(false)
        if (loopbackOrLocal.test(endpoint.host)) expect(referer.address, endpoint.host).toBe("127.0.0.1")
        expect(Number.isInteger(endpoint.port) && endpoint.port >= 1 && endpoint.port <= 65535).toBe(true)
        expect(Number.isInteger(endpoint.weight) && endpoint.weight >= 1 && endpoint.weight <= MaxWeight, String(endpoint.weight)).toBe(true)
        expect(endpoint.features.length).toBeLessThanOrEqual(16)
        if (endpoint.adminPort !== undefined) expect(endpoint.adminPort >= 1 && endpoint.adminPort <= 65535).toBe(true)
        if (isIP(endpoint.host) === 0) expect(endpoint.host.length).toBeLessThanOrEqual(253)
        table.seen(service.fqdn, endpoint, round, referer.address)
        expect(table.size).toBeLessThanOrEqual(maxInstances)
      }
    }
    // The garbling left enough packets whole to exercise the decoder, and some endpoints got through.
    expect(decodedPackets).toBeGreaterThan(1500)
    expect(updates.some((update) => update._tag === "Add")).toBe(true)
  })
})
