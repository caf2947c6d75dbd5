// The key per-peer limits count a peer under (src/iip/sourceKey.ts: the issuer's per-source limits,
// the admin listeners' per-client cap): IPv4 per address, IPv6 per /64 in one printed form
// whatever form the address came in (compressed, expanded, upper case, an IPv4 tail), an
// IPv4-mapped address as its IPv4 address, a link-local one's zone kept; text that is no address
// is its own key, and nothing throws.
import { describe, expect, it } from "vitest"
import { sourceKeyOf } from "../../src/iip/sourceKey.ts"

describe("sourceKeyOf", () => {
  it("an IPv4 address is its own key", () => {
    expect(sourceKeyOf("10.0.0.1")).toBe("10.0.0.1")
    expect(sourceKeyOf("127.0.0.2")).toBe("127.0.0.2")
  })

  it("an IPv4-mapped IPv6 address is the IPv4 address, in any of its forms", () => {
    for (const mapped of ["::ffff:10.0.0.1", "::FFFF:10.0.0.1", "::ffff:a00:1", "0:0:0:0:0:ffff:10.0.0.1", "0000:0000:0000:0000:0000:FFFF:0A00:0001"]) {
      expect(sourceKeyOf(mapped), mapped).toBe("10.0.0.1")
    }
    expect(sourceKeyOf("::ffff:255.255.255.255")).toBe("255.255.255.255")
  })

  it("every address of one /64 has one key, however it is written", () => {
    const forms = [
      "2001:db8:1:2::1",
      "2001:db8:1:2:ffff:ffff:ffff:ffff",
      "2001:0db8:0001:0002:0000:0000:0000:0001",
      "2001:DB8:1:2::ABCD",
      "2001:db8:1:2:0:0:1.2.3.4",
      "2001:db8:1:2::"
    ]
    for (const form of forms) expect(sourceKeyOf(form), form).toBe("2001:db8:1:2::/64")
  })

  /** Each address and the key it must have. */
  const keys = (pairs: ReadonlyArray<readonly [string, string]>) => {
    for (const [address, key] of pairs) expect(sourceKeyOf(address), address).toBe(key)
  }

  it("the /64 is printed as RFC 5952 would: zero hextets that end it join the `::`, others stay 0", () => {
    keys([
      ["2001:db8::1", "2001:db8::/64"],
      ["2001:db8:0:0:1::", "2001:db8::/64"],
      ["2001:0:0:1::5", "2001:0:0:1::/64"],
      ["0:0:0:1::5", "0:0:0:1::/64"],
      ["1::", "1::/64"],
      ["::1", "::/64"],
      ["::", "::/64"],
      // ::a.b.c.d (IPv4-compatible, deprecated) is IPv6: the /64 of ::.
      ["::1.2.3.4", "::/64"],
      ["fd00:77:1:2:3:4:5:6", "fd00:77:1:2::/64"]
    ])
  })

  it("another prefix length, as the issuer's --ipv6-source-prefix gives it: the bits past it are zero, printed as RFC 5952 would", () => {
    const pairs: ReadonlyArray<readonly [string, number, string]> = [
      // EKS: a node's /80 in the subnet's /64; two nodes, two keys.
      ["2001:db8:1:2:aaaa:1:2:3", 80, "2001:db8:1:2:aaaa::/80"],
      ["2001:db8:1:2:bbbb:1:2:3", 80, "2001:db8:1:2:bbbb::/80"],
      // Calico's /122 and Cilium's /120: a cut inside a hextet keeps only its high bits.
      ["fd00:10:20:30:40:50:60:7fff", 122, "fd00:10:20:30:40:50:60:7fc0/122"],
      ["fd00:10:20:30:40:50:60:7fff", 120, "fd00:10:20:30:40:50:60:7f00/120"],
      // The whole address: itself, in its RFC 5952 form (the longest run of zeros, the first of equal ones).
      ["2001:0DB8:0:0:1:0:0:1", 128, "2001:db8::1:0:0:1/128"],
      ["2001:db8:0:1:0:0:0:1", 128, "2001:db8:0:1::1/128"],
      ["2001:db8:1:2:3:4:5:6", 128, "2001:db8:1:2:3:4:5:6/128"],
      ["2001:db8:ffff::1", 40, "2001:db8:ff00::/40"],
      ["fe80::1%eth0", 128, "fe80::1%eth0/128"]
    ]
    for (const [address, bits, key] of pairs) expect(sourceKeyOf(address, bits), `${address} /${bits}`).toBe(key)
    // IPv4 and IPv4-mapped addresses are their IPv4 address whatever the length.
    expect(sourceKeyOf("::ffff:10.0.0.1", 128)).toBe("10.0.0.1")
    expect(sourceKeyOf("10.0.0.1", 80)).toBe("10.0.0.1")
  })

  it("addresses of two /64s have two keys", () => {
    expect(sourceKeyOf("2001:db8:1:2::1")).not.toBe(sourceKeyOf("2001:db8:1:3::1"))
    expect(sourceKeyOf("2001:db8:1:2::1")).not.toBe(sourceKeyOf("2001:db9:1:2::1"))
  })

  it("a link-local address keeps its zone id (fe80::/64 on two interfaces is two links); the address before it is read as any other", () => {
    keys([
      ["fe80::1%eth0", "fe80::%eth0/64"],
      ["FE80::2%eth0", "fe80::%eth0/64"],
      ["fe80::1%eth1", "fe80::%eth1/64"],
      ["fe80::1%2", "fe80::%2/64"],
      ["febf:0:0:1::1%eth0", "febf:0:0:1::%eth0/64"],
      ["fe80::1", "fe80::/64"]
    ])
  })

  it("a zone on a wider scope names nothing and is dropped", () => {
    keys([["2001:db8:1:2::1%eth0", "2001:db8:1:2::/64"], ["fec0::1%eth0", "fec0::/64"]])
  })

  it("text that is no address is its own key, and nothing throws", () => {
    const notAddresses = ["unknown", "", "1:2:3", "1::2::3", "12345::1", "1:2:3:4:5:6:7:8:9", "1:2:3:4:5:6:7::8", "::ffff:1.2.3", "::ffff:1.2.3.256", "::ffff:01.2.3.4", "1.2.3.4::", ":1:2:3:4:5:6:7", "g::1", "::%", "x".repeat(10_000)]
    for (const text of notAddresses) expect(sourceKeyOf(text), text.slice(0, 40)).toBe(text)
  })
})
