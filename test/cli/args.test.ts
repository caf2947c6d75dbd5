// The CLI's size and duration arguments (src/cli/args.ts): binary units, bare bytes, time units, and a clear
// error for anything else.
import { describe, expect, it } from "vitest"
import { parseDuration, parseHostPort, parseSize } from "../../src/cli/args.ts"

describe("parseSize", () => {
  it("reads bytes and binary units, any case, with or without a space", () => {
    expect(parseSize("123")).toBe(123)
    expect(parseSize("64KiB")).toBe(65_536)
    expect(parseSize("1.5 MiB")).toBe(1_572_864)
    expect(parseSize("4gib")).toBe(4 * 2 ** 30)
    expect(parseSize("1TiB")).toBe(2 ** 40)
    expect(parseSize("0")).toBe(0)
  })

  it("refuses other units, negative and unsafe numbers", () => {
    for (const text of ["4GB", "-1", "lots", "", "1e3", "99999999999TiB"]) {
      expect(() => parseSize(text), text).toThrow(`expected a size like 4GiB, 512MiB or a number of bytes, got ${JSON.stringify(text)}`)
    }
  })
})

describe("parseDuration", () => {
  it("reads ms, s, m and h (the issuer's 24h leaf lifetime), a bare number as seconds", () => {
    expect(parseDuration("500ms")).toBe(500)
    expect(parseDuration("2")).toBe(2_000)
    expect(parseDuration("90m")).toBe(5_400_000)
    expect(parseDuration("24h")).toBe(86_400_000)
    expect(() => parseDuration("1d")).toThrow(/expected a duration/)
  })

  it("refuses a duration a timer cannot take (over 2^31-1 ms it fires after 1 ms), unless the caller allows longer", () => {
    expect(parseDuration("596h")).toBe(2_145_600_000)
    for (const text of ["597h", "2147483648ms", `${"9".repeat(400)}h`]) {
      expect(() => parseDuration(text), text).toThrow(`expected a duration of at most 2147483647 ms (24.8 days), got ${JSON.stringify(text.slice(0, 80))}`)
    }
    expect(parseDuration("8784h", 366 * 86_400_000)).toBe(366 * 86_400_000)
    expect(() => parseDuration("8785h", 366 * 86_400_000)).toThrow(`expected a duration of at most 31622400000 ms (366 days), got "8785h"`)
  })
})

describe("parseHostPort", () => {
  it("reads a name, an IPv4 or a bracketed IPv6 address and a port; an empty host is loopback", () => {
    expect(parseHostPort("localhost:80")).toStrictEqual({ host: "localhost", port: 80 })
    expect(parseHostPort("my_app.internal:8080")).toStrictEqual({ host: "my_app.internal", port: 8080 })
    expect(parseHostPort("[::1]:0")).toStrictEqual({ host: "::1", port: 0 })
    expect(parseHostPort(":9091")).toStrictEqual({ host: "127.0.0.1", port: 9091 })
  })

  it("refuses a host with characters no host has (controls, quotes, separators) or longer than a DNS name, echoing at most 80 characters", () => {
    for (const text of ["a\u0000b:80", "a\u001b[2J:80", "evil;rm:80", "a'b:80", "[::1\u0000]:80", "[fe80::1%eth0;x]:80", "localhost:65536", `${"a".repeat(254)}:80`]) {
      expect(() => parseHostPort(text), JSON.stringify(text)).toThrow(`expected HOST:PORT, got ${JSON.stringify(text.slice(0, 80))}`)
    }
  })
})
