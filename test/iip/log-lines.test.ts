// The library's log lines (src/iip/log.ts stderrLog: one JSON line per event on stderr) carry
// values from the network (an mDNS instance name, a peer's path, a TLS reason). JSON.stringify
// escapes U+0000-U+001F only: DEL, the C1 controls U+0080-U+009F (U+009B is CSI, an ANSI escape
// for a terminal that shows the line), U+2028/U+2029 (line breaks to some log readers) and the bidi
// overrides went out raw. They must be escaped (as redact.ts's quoted does), and the line still
// read back as the same fields.
import { afterEach, describe, expect, it } from "vitest"
import { stderrLog } from "../../src/iip/log.ts"

describe("stderrLog", () => {
  const original = process.stderr.write
  afterEach(() => {
    process.stderr.write = original
  })

  it("escapes DEL, C1 controls, U+2028/U+2029 and bidi overrides in its JSON line; the line parses back to the fields", () => {
    const written: Array<string> = []
    process.stderr.write = ((chunk: string) => {
      written.push(chunk)
      return true
    }) as typeof process.stderr.write
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
