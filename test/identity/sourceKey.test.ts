// The key the issuer's per-source limits count a peer under (src/identity/sourceKey.ts): IPv4 per
// address, IPv6 per /64 in one printed form whatever form the address came in (compressed,
// expanded, upper case, an IPv4 tail), an IPv4-mapped address as its IPv4 address, a zone kept;
// text that is no address is its own key, and nothing throws.
import { describe, expect, it } from "vitest"
import { sourceKeyOf } from "../../src/identity/sourceKey.ts"

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

  it("the /64 is printed as RFC 5952 would: zero hextets that end it join the `::`, others stay 0", () => {
    expect(sourceKeyOf("2001:db8::1")).toBe("2001:db8::/64")
    expect(sourceKeyOf("2001:db8:0:0:1::")).toBe("2001:db8::/64")
    expect(sourceKeyOf("2001:0:0:1::5")).toBe("2001:0:0:1::/64")
    expect(sourceKeyOf("0:0:0:1::5")).toBe("0:0:0:1::/64")
    expect(sourceKeyOf("1::")).toBe("1::/64")
    expect(sourceKeyOf("::1")).toBe("::/64")
    expect(sourceKeyOf("::")).toBe("::/64")
    // ::a.b.c.d (IPv4-compatible, deprecated) is IPv6: the /64 of ::.
    expect(sourceKeyOf("::1.2.3.4")).toBe("::/64")
    expect(sourceKeyOf("fd00:77:1:2:3:4:5:6")).toBe("fd00:77:1:2::/64")
  })

  it("addresses of two /64s have two keys", () => {
    expect(sourceKeyOf("2001:db8:1:2::1")).not.toBe(sourceKeyOf("2001:db8:1:3::1"))
    expect(sourceKeyOf("2001:db8:1:2::1")).not.toBe(sourceKeyOf("2001:db9:1:2::1"))
  })

  it("a zone id stays in the key (the same link-local /64 on two interfaces is two links); the address before it is read as any other", () => {
    expect(sourceKeyOf("fe80::1%eth0")).toBe("fe80::%eth0/64")
    expect(sourceKeyOf("FE80::2%eth0")).toBe("fe80::%eth0/64")
    expect(sourceKeyOf("fe80::1%eth1")).toBe("fe80::%eth1/64")
    expect(sourceKeyOf("fe80::1%2")).toBe("fe80::%2/64")
  })

  it("text that is no address is its own key, and nothing throws", () => {
    const notAddresses = ["unknown", "", "1:2:3", "1::2::3", "12345::1", "1:2:3:4:5:6:7:8:9", "1:2:3:4:5:6:7::8", "::ffff:1.2.3", "::ffff:1.2.3.256", "::ffff:01.2.3.4", "1.2.3.4::", ":1:2:3:4:5:6:7", "g::1", "::%", "x".repeat(10_000)]
    for (const text of notAddresses) expect(sourceKeyOf(text), text.slice(0, 40)).toBe(text)
  })
})
