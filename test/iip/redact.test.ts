// Values made safe to show (src/iip/redact.ts): escaped so they cannot forge or hide log lines,
// clamped, and URLs without their credentials.
import { describe, expect, it } from "vitest"
import { loggable, quoted, redactUrl } from "../../src/iip/redact.ts"
import { prng } from "../helpers/prng.ts"

describe("quoted and loggable", () => {
  it("escape C0 and C1 controls, DEL, line separators and bidi overrides", () => {
    expect(quoted("a\r\nb\u0000\u001b[1m\u007f\u0085\u2028\u2029\u202e\u2066\"\\")).toBe(
      String.raw`"a\r\nb\u0000\u001b[1m\u007f\u0085\u2028\u2029\u202e\u2066\"\\"`
    )
    expect(loggable("plain text, é and 日本")).toBe("plain text, é and 日本")
  })

  it("clamp long values, saying how much was cut, without splitting a surrogate pair", () => {
    expect(loggable("x".repeat(300), 10)).toBe("xxxxxxxxxx...(290 more)")
    expect(loggable(`${"x".repeat(9)}😀tail`, 10)).toBe("xxxxxxxxx...(6 more)")
  })

  it("always give one JSON string of bounded length without raw control or separator characters (random input)", () => {
    const rng = prng(7)
    for (let i = 0; i < 2000; i++) {
      const text = String.fromCharCode(...Array.from({ length: rng.int(0, 400) }, () => rng.pick([rng.int(0, 0x3ff), rng.int(0x2000, 0x206f), rng.int(0xd800, 0xdfff)])))
      const out = quoted(text, 100)
      expect(JSON.parse(out)).toBe(JSON.parse(out))
      expect(out).not.toMatch(/[\u0000-\u001f\u007f-\u009f\u2028\u2029\u202a-\u202e\u2066-\u2069]/)
      expect(out.length).toBeLessThanOrEqual(2 + 6 * 100 + 20)
    }
  })
})

describe("redactUrl", () => {
  it("blanks userinfo, credential-like query values and the fragment, and keeps the rest as written", () => {
    expect(redactUrl("https://user:pa%40ss@collector.example:4318/v1/traces")).toBe("https://***@collector.example:4318/v1/traces")
    expect(redactUrl("http://collector:4318/v1/traces?api_key=abc&region=eu%20west&Token=t&x-auth=1#frag")).toBe(
      "http://collector:4318/v1/traces?api_key=***&region=eu%20west&Token=***&x-auth=***#***"
    )
    expect(redactUrl("user:pw@host:4317")).toBe("***@host:4317")
    expect(redactUrl("not a url @ all")).toBe("***@ all")
    expect(redactUrl("http://collector:4318/a@b")).toBe("http://collector:4318/a@b")
    expect(redactUrl("http://collector:4318")).toBe("http://collector:4318")
  })
})
