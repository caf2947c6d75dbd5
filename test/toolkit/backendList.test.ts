// The reference's `host:port#weight` backend list (iip-protocol.md §8.1): good lists read as the
// reference reads them (trimmed, weights 1-100, IPv6 in brackets); every entry the reference would
// silently skip (no weight, weight 0 or 101, no port, empty) is an error that names it.
import { describe, expect, it } from "vitest"
import { InvalidBackendList, parseBackend, parseBackendList } from "../../src/toolkit/backendList.ts"

const problem = (text: string): string => {
  try {
    parseBackendList(text)
  } catch (error) {
    expect(error).toBeInstanceOf(InvalidBackendList)
    return (error as InvalidBackendList).message
  }
  throw new Error(`expected ${JSON.stringify(text)} to be rejected`)
}

describe("backend list", () => {
  it("reads host:port#weight entries, trimmed, in order, IPv6 in brackets", () => {
    expect(parseBackendList(" 127.0.0.1:9090#2 , backend.local:80#1,[::1]:7000#100")).toStrictEqual([
      { host: "127.0.0.1", port: 9090, address: "127.0.0.1:9090", weight: 2 },
      { host: "backend.local", port: 80, address: "backend.local:80", weight: 1 },
      { host: "::1", port: 7000, address: "[::1]:7000", weight: 100 }
    ])
  })

  it("rejects an entry without a weight, naming it and the expected form (the reference skips it silently)", () => {
    expect(problem("127.0.0.1:9090#1,127.0.0.1:9091")).toBe(
      `invalid backend list "127.0.0.1:9090#1,127.0.0.1:9091": "127.0.0.1:9091" has no weight (expected HOST:PORT#WEIGHT with WEIGHT an integer from 1 to 100)`
    )
  })

  it("rejects weights outside 1-100 and non-integers", () => {
    expect(problem("a:1#0")).toContain(`"a:1#0": weight "0" is not an integer from 1 to 100`)
    expect(problem("a:1#101")).toContain(`weight "101" is not an integer from 1 to 100`)
    expect(problem("a:1#1.5")).toContain(`weight "1.5" is not an integer`)
    expect(problem("a:1#")).toContain(`weight "" is not an integer`)
  })

  it("rejects addresses that are not HOST:PORT", () => {
    expect(problem("a#1")).toContain(`"a#1": "a" is not HOST:PORT`)
    expect(problem(":80#1")).toContain(`":80" is not HOST:PORT`)
    expect(problem("a:0#1")).toContain(`"a:0" is not HOST:PORT`)
    expect(problem("::1:80#1")).toContain(`"::1:80" is not HOST:PORT`)
  })

  it("lists every problem at once: empty entries, duplicates, bad entries", () => {
    const message = problem("a:1#1,,b:2,a:1#3")
    expect(message).toContain("entry 2 is empty")
    expect(message).toContain(`"b:2" has no weight`)
    expect(message).toContain("a:1 is listed twice")
  })

  it("rejects an empty list", () => {
    expect(problem("  ")).toBe("the backend list is empty (expected HOST:PORT#WEIGHT with WEIGHT an integer from 1 to 100, comma-separated)")
  })

  it("parseBackend reads one entry and rejects a bad one with the same message", () => {
    expect(parseBackend("10.0.0.7:4143#3")).toStrictEqual({ host: "10.0.0.7", port: 4143, address: "10.0.0.7:4143", weight: 3 })
    expect(() => parseBackend("10.0.0.7:4143")).toThrow(`invalid backend "10.0.0.7:4143" has no weight`)
  })
})
