// The library's log lines (src/iip/log.ts stderrLog: one JSON line per event on stderr) carry
// values from the network (an mDNS instance name, a peer's path, a TLS reason). JSON.stringify
// escapes U+0000-U+001F only: DEL, the C1 controls U+0080-U+009F (U+009B is CSI, an ANSI escape
// for a terminal that shows the line), U+2028/U+2029 (line breaks to some log readers) and the bidi
// overrides went out raw. They must be escaped (as redact.ts's quoted does), and the line still
// read back as the same fields.
import { afterEach, describe, expect, it } from "vitest"
import { messageOf, neverThrowing, stderrLog, throttledEvents } from "../../src/iip/log.ts"

const original = process.stderr.write
afterEach(() => {
  process.stderr.write = original
})

/** What is written to stderr from now on (until the test's end), kept instead of written (as text: lines go out as UTF-8 buffers, src/iip/outputLines.ts). */
const captureStderr = (): Array<string> => {
  const written: Array<string> = []
  process.stderr.write = ((chunk: string | Uint8Array) => {
    written.push(typeof chunk === "string" ? chunk : Buffer.from(chunk).toString("utf8"))
    return true
  }) as typeof process.stderr.write
  return written
}

describe("stderrLog", () => {
  it("escapes DEL, C1 controls, U+2028/U+2029 and bidi overrides in its JSON line; the line parses back to the fields", () => {
    const written = captureStderr()
    const fqdn = "evil\u009b2J\u009b31mowned\u007f\u0085\u2028\u2029\u202elacol._iip-mesh._tcp.local"
    stderrLog("mdns-ignored", { fqdn, reason: "mesh" })
    process.stderr.write = original
    expect(written).toHaveLength(1)
    const line = written[0]!
    expect(line.endsWith("\n")).toBe(true)
    expect(line.slice(0, -1).match(/[\u007f-\u009f\u2028\u2029\u202a-\u202e\u2066-\u2069\n\r]/g) ?? []).toStrictEqual([])
    expect(JSON.parse(line)).toMatchObject({ event: "mdns-ignored", fqdn, reason: "mesh" })
  })
})

describe("neverThrowing", () => {
  // Its fallback ran messageOf on what the sink threw and JSON.stringify on the fields, both of
  // which throw on some values (an object with no prototype, a getter that throws; a BigInt, a
  // cycle: often the very reason the sink threw), so the throw went out of the wrapper after all.
  it("does not throw whatever the sink throws and whatever the fields hold; it still writes a line", () => {
    const written = captureStderr()
    const cyclic: Record<string, unknown> = {}
    cyclic["self"] = cyclic
    const sinks: Array<() => never> = [
      () => {
        throw Object.create(null)
      },
      () => {
        throw {
          get message(): string {
            throw new Error("no message")
          }
        }
      },
      () => {
        throw new Error("sink down")
      }
    ]
    for (const sink of sinks) {
      expect(() => neverThrowing(sink)("discovery.listener-failed", { service: "web" })).not.toThrow()
      expect(() => neverThrowing(sink)("discovery.listener-failed", { service: "web", count: 1n })).not.toThrow()
      expect(() => neverThrowing(sink)("discovery.listener-failed", { service: "web", cyclic })).not.toThrow()
    }
    // stderr itself throwing: nothing left to tell, and nothing thrown.
    process.stderr.write = (() => {
      throw new Error("EPIPE")
    }) as typeof process.stderr.write
    expect(() => neverThrowing(sinks[2]!)("discovery.listener-failed", { service: "web" })).not.toThrow()
    process.stderr.write = original
    expect(written).toHaveLength(9)
    for (const line of written) expect(JSON.parse(line)).toMatchObject({ event: "discovery.listener-failed", logFailed: expect.any(String) })
    // The fields as given when they can be written; else the line says they could not be.
    expect(JSON.parse(written[6]!)).toMatchObject({ service: "web", logFailed: "sink down" })
    expect(JSON.parse(written[8]!)).toMatchObject({ logFailed: "sink down", fieldsUnwritable: true })
  })

  it("messageOf gives a text for anything thrown", () => {
    expect(messageOf(Object.create(null))).toEqual(expect.any(String))
    expect(messageOf({ get message(): string { throw new Error("no") } })).toEqual(expect.any(String))
    expect(messageOf(new Error("plain"))).toBe("plain")
  })
})

describe("throttledEvents' log-lines-suppressed line on stderrLog", () => {
  // Its fields named the event held back `event`, which stderrLog's line spreads over its own: the
  // line read {"event":"protocol-violation","suppressed":4}, one more protocol-violation to a reader.
  it("keeps its own event name; the event held back is named in another field", () => {
    const written = captureStderr()
    const events = throttledEvents(stderrLog, ["protocol-violation"], 2, 60_000)
    for (let i = 0; i < 5; i++) events.log("protocol-violation", { rule: "bad-status" })
    events.close()
    process.stderr.write = original
    const lines = written.map((line) => JSON.parse(line) as Record<string, unknown>)
    expect(lines.map((line) => line.event)).toStrictEqual(["protocol-violation", "log-lines-suppressed"])
    expect(lines[1]).toMatchObject({ event: "log-lines-suppressed", of: "protocol-violation", suppressed: 4 })
  })
})
