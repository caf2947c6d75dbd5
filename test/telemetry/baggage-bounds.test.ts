// Baggage from an app's head or a peer's header pairs is read within W3C's limits (8192
// characters, 180 members) before @opentelemetry/core parses it (src/telemetry/propagation.ts
// passedBaggage): that parser stops at 180 members it accepts, but reads on through every member it
// skips, and each malformed escape (`k=%ZZ`) costs a thrown URIError. A 16 KiB head of such
// members was read whole, ~1,600 exceptions per request on the sidecar's loop.
import { describe, expect, it } from "vitest"
import { isDecodable, MAX_BAGGAGE_CHARS, MAX_BAGGAGE_MEMBERS, passedBaggage } from "../../src/telemetry/propagation.ts"

describe("baggage is read within W3C's limits", () => {
  it(`a member past the first ${MAX_BAGGAGE_MEMBERS}, valid or not, is not read`, () => {
    const invalid = Array.from({ length: MAX_BAGGAGE_MEMBERS }, (_, i) => `k${i}=%ZZ`)
    expect(passedBaggage([...invalid, "late=1"].join(","))).toBeUndefined()
    expect(passedBaggage(["first=1", ...invalid.slice(1), "late=1"].join(","))).toBe("first=1")
  })

  it(`a member past the first ${MAX_BAGGAGE_CHARS} characters is not read; one cut there is left out`, () => {
    const filler = `pad=${"%".repeat(MAX_BAGGAGE_CHARS)}`
    expect(passedBaggage(`a=1,${filler},late=2`)).toBe("a=1")
    const cut = `a=1,b=${"x".repeat(MAX_BAGGAGE_CHARS)}`
    expect(passedBaggage(cut)).toBe("a=1")
  })

  it("a header within the limits passes as before (held)", () => {
    expect(passedBaggage("user=alice%20smith,id=42;meta")).toBe("user=alice%20smith,id=42;meta")
    expect(passedBaggage(Array.from({ length: 10 }, (_, i) => `k${i}=v`).join(", "))).toBe(Array.from({ length: 10 }, (_, i) => `k${i}=v`).join(","))
  })
})

describe("members whose escapes would not decode are left out before the W3C propagator throws on them", () => {
  it("isDecodable agrees with decodeURIComponent on 200,000 random texts of escapes and odd characters", () => {
    const pieces = ["a", "=", " ", "\ud800", "é", "%", "%4", "%41", "%7f", "%80", "%bf", "%c0", "%c2", "%C3", "%df", "%e0", "%E0", "%a0", "%9f", "%ed", "%ee", "%ef", "%f0", "%90", "%f4", "%8f", "%f5", "%ff", "%zz", "%2", "%g1"]
    let seed = 42
    const next = () => (seed = (seed * 1_103_515_245 + 12_345) % 2 ** 31)
    for (let i = 0; i < 200_000; i++) {
      let text = ""
      for (let n = next() % 7; n >= 0; n--) text += pieces[next() % pieces.length]
      let decodes = true
      try {
        decodeURIComponent(text)
      } catch {
        decodes = false
      }
      if (isDecodable(text) !== decodes) expect.fail(`isDecodable(${JSON.stringify(text)}) is ${!decodes}, decodeURIComponent ${decodes ? "decodes it" : "throws"}`)
    }
  })

  it("isDecodable agrees with decodeURIComponent on every lead and second byte, with the continuations after them", () => {
    const hex = (byte: number) => `%${byte.toString(16).padStart(2, "0")}`
    for (let lead = 0; lead < 256; lead++) {
      for (let second = 0; second < 256; second++) {
        for (const tail of ["", "%80", "%80%80", "%BF%bf%Bf", "x"]) {
          const text = `${hex(lead)}${hex(second)}${tail}`
          let decodes = true
          try {
            decodeURIComponent(text)
          } catch {
            decodes = false
          }
          if (isDecodable(text) !== decodes) expect.fail(`isDecodable(${text}) is ${!decodes}`)
        }
      }
    }
  })

  it("the others pass as before; one bad in its metadata only is kept, as the propagator keeps it", () => {
    expect(passedBaggage("bad=%ZZ,good=%C3%A9,utf=%F0%9F%98%80,lone=%ED%A0%80,meta=1;p=%ZZ")).toBe("good=%C3%A9,utf=%F0%9F%98%80,meta=1;p=%ZZ")
  })
})
