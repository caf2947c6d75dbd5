// parseTraceparent (propagation.ts) against the reader it replaced (issue 14: a 55-character value
// checked in one pass over a table, the last answer kept): for valid values of every version and
// flag, values breaking each W3C Trace Context rule one at a time (version ff, all-zero ids,
// upper-case or non-hex digits, code units past ASCII, misplaced dashes, a version 00 with more
// after it, a later version with more after it, spaces around it) and random mutations of them, the
// two give exactly the same answer, also when a value is read again right after itself or after
// another (the kept answer). Seeded, replayable with TRACEPARENT_DIFF_SEED.
import { describe, expect, it } from "vitest"
import { parseTraceparent, type TraceParent } from "../../src/telemetry/propagation.ts"
import { type Prng, prng } from "../helpers/prng.ts"

const SEED = Number(process.env.TRACEPARENT_DIFF_SEED ?? 0xd1ff)

// The reader before issue 14's one-pass check, as it was (main's src/telemetry/propagation.ts).
const isHexId = (text: string, start: number, length: number): boolean => {
  let nonZero = false
  for (let i = start; i < start + length; i++) {
    const c = text.charCodeAt(i)
    if (c === 0x30) continue
    if (!((c > 0x30 && c <= 0x39) || (c >= 0x61 && c <= 0x66))) return false
    nonZero = true
  }
  return nonZero
}
const hexValue = (c: number): number => (c >= 0x30 && c <= 0x39 ? c - 0x30 : c >= 0x61 && c <= 0x66 ? c - 0x57 : -1)
const isSpace = (c: number): boolean => c === 0x20 || c === 0x09 || c === 0x0a || c === 0x0d || c === 0x0b || c === 0x0c
const oldParse = (value: string): TraceParent | undefined => {
  let start = 0
  let end = value.length
  if (end > 0 && isSpace(value.charCodeAt(0))) start++
  if (end > start && isSpace(value.charCodeAt(end - 1))) end--
  if (end - start < 55) return undefined
  const v0 = hexValue(value.charCodeAt(start))
  const v1 = hexValue(value.charCodeAt(start + 1))
  if (v0 < 0 || v1 < 0 || (v0 === 15 && v1 === 15)) return undefined
  if (value.charCodeAt(start + 2) !== 0x2d || value.charCodeAt(start + 35) !== 0x2d || value.charCodeAt(start + 52) !== 0x2d) return undefined
  if (!isHexId(value, start + 3, 32) || !isHexId(value, start + 36, 16)) return undefined
  const f0 = hexValue(value.charCodeAt(start + 53))
  const f1 = hexValue(value.charCodeAt(start + 54))
  if (f0 < 0 || f1 < 0) return undefined
  if (end - start > 55 && (value.charCodeAt(start + 55) !== 0x2d || (v0 === 0 && v1 === 0))) return undefined
  return { traceId: value.slice(start + 3, start + 35), spanId: value.slice(start + 36, start + 52), sampled: (f1 & 1) === 1 }
}

const HEX = "0123456789abcdef"
const hex = (rng: Prng, n: number): string => {
  let text = ""
  for (let i = 0; i < n; i++) text += HEX[rng.int(0, 15)]
  return text
}
/** An id mostly of random digits, sometimes nearly all zeros (one digit set), to reach the zero check's edges. */
const id = (rng: Prng, n: number): string => {
  if (rng.next() < 0.8) return hex(rng, n)
  const at = rng.int(0, n - 1)
  return "0".repeat(at) + HEX[rng.int(1, 15)] + "0".repeat(n - at - 1)
}
const valid = (rng: Prng): string => {
  const version = rng.next() < 0.6 ? "00" : hex(rng, 2).replace("ff", "fe")
  return `${version}-${id(rng, 32)}-${id(rng, 16)}-${hex(rng, 2)}`
}
/** Code units that are not lower-case hex digits, some of them one bit (0x80, 0x20) away from one. */
const notHex = ["g", "G", "A", "F", "x", "-", " ", "\t", "/", ":", "`", "@", "\u00b0", "\u00e1", "\u0130", "\uff10", "\ud800", "\u0000", "\u007f"]

/** A valid value with one rule of the format broken. */
const broken = (rng: Prng): string => {
  const value = valid(rng)
  switch (rng.int(0, 11)) {
    case 0: return `ff${value.slice(2)}`
    case 1: return `${value.slice(0, 3)}${"0".repeat(32)}${value.slice(35)}`
    case 2: return `${value.slice(0, 36)}${"0".repeat(16)}${value.slice(52)}`
    case 3: {
      const at = rng.pick([0, 1, rng.int(3, 34), rng.int(36, 51), 53, 54])
      return value.slice(0, at) + value[at]!.toUpperCase() + value.slice(at + 1)
    }
    case 4: {
      const at = rng.int(0, 54)
      return value.slice(0, at) + rng.pick(notHex) + value.slice(at + 1)
    }
    case 5: return `00${value.slice(2)}${rng.pick(["-", "-00", "-extra", "x", "0", " x"])}`
    case 6: return `${rng.pick(["01", "0a", "cc", "fe"])}${value.slice(2)}${rng.pick(["-", "-00", "-extra", "x", "0", "--", "-\u00e9"])}`
    case 7: return `${rng.pick([" ", "\t", "  ", "\n", "\u00a0"])}${value}${rng.pick(["", " ", "\t", "  ", "\r"])}`
    case 8: return value.slice(0, rng.int(0, 54))
    case 9: {
      // A dash moved: the fields' lengths change, the total does not.
      const at = rng.pick([2, 35, 52])
      const to = rng.int(0, 54)
      const without = value.slice(0, at) + "0" + value.slice(at + 1)
      return without.slice(0, to) + "-" + without.slice(to + 1)
    }
    case 10: return value.slice(0, 54) + rng.pick(notHex)
    default: return value.slice(0, rng.int(0, 54)) + value.slice(rng.int(0, 55))
  }
}

const mutated = (rng: Prng): string => {
  let value = rng.next() < 0.5 ? valid(rng) : broken(rng)
  for (let edits = rng.int(1, 3); edits > 0; edits--) {
    const at = rng.int(0, value.length)
    const unit = rng.next() < 0.5 ? HEX[rng.int(0, 15)]! : rng.pick(notHex)
    const roll = rng.next()
    if (roll < 0.5) value = value.slice(0, at) + unit + value.slice(at + 1)
    else if (roll < 0.75) value = value.slice(0, at) + unit + value.slice(at)
    else value = value.slice(0, at) + value.slice(at + 1)
  }
  return value
}

describe("parseTraceparent against the reader it replaced", () => {
  it("the same answer for valid values, each rule broken and random mutations, read once or again", () => {
    const rng = prng(SEED)
    let previous = ""
    let accepted = 0
    let refused55 = 0
    for (let i = 0; i < 60_000; i++) {
      const roll = rng.next()
      // Now and then the value just read again, or the one before it after another: the kept answer.
      const value = roll < 0.25 ? valid(rng) : roll < 0.6 ? broken(rng) : roll < 0.9 ? mutated(rng) : previous
      const expected = oldParse(value)
      expect(parseTraceparent(value), `seed ${SEED}, case ${i}: ${JSON.stringify(value)}`).toStrictEqual(expected)
      expect(parseTraceparent(value), `seed ${SEED}, case ${i} read again: ${JSON.stringify(value)}`).toStrictEqual(expected)
      if (expected !== undefined) accepted++
      else if (value.length === 55) refused55++
      if (rng.next() < 0.5) previous = value
    }
    // Both sides of the 55-character path are reached often, not only the general one.
    expect(accepted).toBeGreaterThan(10_000)
    expect(refused55).toBeGreaterThan(5_000)
  })

  it("W3C Trace Context level 1's cases, as the old reader answered them", () => {
    const t = "4bf92f3577b34da6a3ce929d0e0e4736"
    const p = "00f067aa0ba902b7"
    const cases: ReadonlyArray<readonly [string, TraceParent | undefined]> = [
      [`00-${t}-${p}-01`, { traceId: t, spanId: p, sampled: true }],
      [`00-${t}-${p}-00`, { traceId: t, spanId: p, sampled: false }],
      // Flags other than 00/01: only the sampled bit is read.
      [`00-${t}-${p}-03`, { traceId: t, spanId: p, sampled: true }],
      [`00-${t}-${p}-fe`, { traceId: t, spanId: p, sampled: false }],
      [`ff-${t}-${p}-01`, undefined],
      [`00-${"0".repeat(32)}-${p}-01`, undefined],
      [`00-${t}-${"0".repeat(16)}-01`, undefined],
      [`00-${t.toUpperCase()}-${p}-01`, undefined],
      [`00-${t}-${p}-0A`, undefined],
      [`0A-${t}-${p}-01`, undefined],
      // A later version: read by its first 55 characters when a dash follows them.
      [`cc-${t}-${p}-01-what-the-future-will-be-like`, { traceId: t, spanId: p, sampled: true }],
      [`cc-${t}-${p}-01`, { traceId: t, spanId: p, sampled: true }],
      [`cc-${t}-${p}-01what`, undefined],
      // Version 00: nothing after its 55 characters.
      [`00-${t}-${p}-01-`, undefined],
      [`00-${t}-${p}-01-extra`, undefined],
      // A code unit past ASCII whose low 7 bits are a hex digit ("0" + 0x80).
      [`00-${t.slice(0, 31)}\u00b0-${p}-01`, undefined]
    ]
    for (const [value, expected] of cases) {
      expect(oldParse(value), value).toStrictEqual(expected)
      expect(parseTraceparent(value), value).toStrictEqual(expected)
    }
  })
})
