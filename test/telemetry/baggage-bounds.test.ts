// Baggage from an app's head or a peer's header pairs is read within W3C's limits (8192
// characters, 180 members) before @opentelemetry/core parses it (src/telemetry/propagation.ts
// passedBaggage): that parser stops at 180 members it accepts, but reads on through every member it
// skips, and each malformed escape (`k=%ZZ`) costs a thrown URIError. A 16 KiB head of such
// members was read whole, ~1,600 exceptions per request on the sidecar's loop.
import { describe, expect, it } from "vitest"
import { MAX_BAGGAGE_CHARS, MAX_BAGGAGE_MEMBERS, passedBaggage } from "../../src/telemetry/propagation.ts"

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
