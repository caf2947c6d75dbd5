// A traced request's header list is decoded in two parts at the far sidecar (httpEnvelope.ts's
// headersOf): the part before its trace headers, filtered once while it repeats, and the tail the
// outbound side writes per call. These tests hold it to the whole text's decode: the same pairs and
// the same invalid count for every text, whether it splits or not (seeded, replayable with
// TRACED_HEADERS_SEED), and a part seen before reused without changing what a caller gets. The
// outbound side's text for such a list (httpEnvelope.ts's requestMeta, its part before the tail kept)
// is held to the list's JSON.stringify.
import { describe, expect, it } from "vitest"
import { endToEndPairs } from "../../src/sidecar/headerFilter.ts"
import { headersOf, HttpMeta, requestMeta } from "../../src/sidecar/httpEnvelope.ts"
import { replaceTraceHeaders } from "../../src/telemetry/propagation.ts"
import { type Prng, prng } from "../helpers/prng.ts"

const SEED = Number(process.env.TRACED_HEADERS_SEED ?? 0x7eaced)

/** What decoding the whole text gives: the oracle. */
const wholeDecode = (text: string): { readonly pairs: ReadonlyArray<readonly [string, string]>; readonly invalid: number } => {
  let parsed: unknown
  try {
    parsed = JSON.parse(text)
  } catch {
    parsed = []
  }
  let invalid = 0
  const pairs = endToEndPairs(Array.isArray(parsed) ? parsed : [], (n) => (invalid += n))
  return { pairs, invalid }
}

const decode = (text: string): { readonly pairs: ReadonlyArray<readonly [string, string]>; readonly invalid: number } => {
  let invalid = 0
  const pairs = headersOf(new Map([[HttpMeta.headers, text]]), (n) => (invalid += n))
  return { pairs, invalid }
}

const traceparent = (rng: Prng) => `00-${rng.bytes(16).toString("hex")}-${rng.bytes(8).toString("hex")}-01`

const atoms: ReadonlyArray<unknown> = [
  ["content-type", "application/grpc"],
  ["x-a", "1"],
  ["X-Upper", "v"],
  ["connection", "x-a"],
  ["connection", "keep-alive"],
  ["bad name", "x"],
  ["x-b", "a\r\nb"],
  ["x-c", ',["traceparent","'],
  ["x-d", "]"],
  ["traceparent", "00-inside-01"],
  ["tracestate", "k=v"],
  "not a pair",
  ["x-e"],
  [1, 2],
  [["traceparent", "nested"]],
  ["x-f", ["traceparent", "nested"]]
]

/** A text as a peer might send it: mostly the outbound side's own JSON, sometimes bent out of shape. */
const randomText = (rng: Prng, head: ReadonlyArray<unknown>): string => {
  const tail: Array<unknown> = [["traceparent", traceparent(rng)]]
  for (let n = rng.int(0, 2); n > 0; n--) tail.push(rng.pick(atoms))
  const text = JSON.stringify([...head, ...tail])
  const roll = rng.next()
  if (roll < 0.6) return text
  const at = rng.int(0, text.length)
  if (roll < 0.7) return text.slice(0, at)
  if (roll < 0.8) return `${text.slice(0, at)} ${text.slice(at)}`
  if (roll < 0.9) return `${text.slice(0, at)}${rng.pick(["[", "]", ",", '"', '\\"', ',["traceparent",'])}${text.slice(at)}`
  return text.replace('],["traceparent",', rng.pick(['] ,["traceparent",', '],,["traceparent",', '],["traceparent",["x"],']))
}

describe("a traced request's header list decoded in two parts", () => {
  it("gives what decoding the whole text gives, for any text, the part before the trace tail new or repeated", () => {
    const rng = prng(SEED)
    let heads: ReadonlyArray<unknown> = []
    for (let i = 0; i < 4000; i++) {
      // A head kept for a while (the cache's case), then another.
      if (i % 8 === 0) heads = Array.from({ length: rng.int(0, 6) }, () => rng.pick(atoms))
      const text = randomText(rng, heads)
      const expected = wholeDecode(text)
      const got = decode(text)
      expect(got.pairs, `seed ${SEED}, text ${text}`).toStrictEqual(expected.pairs)
      expect(got.invalid, `seed ${SEED}, text ${text}`).toBe(expected.invalid)
    }
  })

  it("the outbound side's own lists: the tail changes every call, each caller gets the right pairs in an array of its own", () => {
    const incoming = { parent: undefined, traceState: "vendor=1", baggage: undefined } as unknown as Parameters<typeof replaceTraceHeaders>[2]
    const listWith = (parent: string): Array<[string, string]> => {
      const list: Array<[string, string]> = [["content-type", "application/grpc"], ["user-agent", "grpc-node-js/1.14"], ["x-forwarded-for", "127.0.0.1"]]
      replaceTraceHeaders(list, parent, incoming)
      return list
    }
    const first = headersOf(requestMeta("POST", "echo", listWith("00-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-bbbbbbbbbbbbbbbb-01")))
    expect(first).toStrictEqual([
      ["content-type", "application/grpc"],
      ["user-agent", "grpc-node-js/1.14"],
      ["x-forwarded-for", "127.0.0.1"],
      ["traceparent", "00-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-bbbbbbbbbbbbbbbb-01"],
      ["tracestate", "vendor=1"]
    ])
    // A caller changes its array (the inbound side adds its own headers): the next call's is not changed.
    first.length = 1
    first.push(["x-iip-mesh-client-id", "spiffe://x"])
    const second = headersOf(requestMeta("POST", "echo", listWith("00-cccccccccccccccccccccccccccccccc-dddddddddddddddd-01")))
    expect(second).toStrictEqual([
      ["content-type", "application/grpc"],
      ["user-agent", "grpc-node-js/1.14"],
      ["x-forwarded-for", "127.0.0.1"],
      ["traceparent", "00-cccccccccccccccccccccccccccccccc-dddddddddddddddd-01"],
      ["tracestate", "vendor=1"]
    ])
  })

  it("the outbound side writes a list as its JSON, the part before the trace tail kept while it repeats, whatever the tail's values", () => {
    const rng = prng(SEED)
    const values = ["v", 'quote " and \\ backslash', "line\nbreak", "caf\u00e9", "\u0000", "traceparent", ',["traceparent",']
    let head: Array<readonly [string, string]> = []
    for (let i = 0; i < 2000; i++) {
      if (i % 8 === 0) head = Array.from({ length: rng.int(0, 5) }, () => [rng.pick(["x-a", "traceparent", "tracestate", "baggage", "content-type"]), rng.pick(values)] as const)
      const list: Array<readonly [string, string]> = [...head]
      if (rng.next() < 0.8) list.push(["traceparent", rng.next() < 0.8 ? traceparent(rng) : rng.pick(values)])
      for (let n = rng.int(0, 3); n > 0; n--) list.push([rng.pick(["tracestate", "baggage", "x-b"]), rng.pick(values)])
      expect(requestMeta("POST", "echo", list).get(HttpMeta.headers), `seed ${SEED}, list ${JSON.stringify(list)}`).toBe(JSON.stringify(list))
    }
  })

  it("texts that split into two valid arrays only where the whole is not one decode to no headers, as the whole does", () => {
    for (const text of ['[,["traceparent","00-1-2-01"]]', '[ ,["traceparent","00-1-2-01"]]', '[["x-a","1"],,["traceparent","00-1-2-01"]]', '[["x-a","1",["traceparent","00-1-2-01"]]']) {
      expect(decode(text), text).toStrictEqual({ pairs: [], invalid: 0 })
    }
  })

  it("a Connection header in one part naming a header in the other drops it, as in the whole list", () => {
    const text = JSON.stringify([["x-a", "1"], ["connection", "x-late"], ["traceparent", "00-1-2-01"], ["x-late", "2"]])
    expect(decode(text)).toStrictEqual({ pairs: [["x-a", "1"], ["traceparent", "00-1-2-01"]], invalid: 0 })
    const other = JSON.stringify([["x-early", "1"], ["x-b", "1"], ["traceparent", "00-3-4-01"], ["connection", "x-early"]])
    expect(decode(other)).toStrictEqual({ pairs: [["x-b", "1"], ["traceparent", "00-3-4-01"]], invalid: 0 })
  })
})

/** A hostile trace tail value: near a traceparent (case, length, version, ids, fields) or any code units. */
const hostileValue = (rng: Prng): string => {
  const valid = traceparent(rng)
  switch (rng.int(0, 9)) {
    case 0: return valid
    case 1: return valid.toUpperCase()
    case 2: return valid.slice(0, rng.int(0, valid.length))
    case 3: return `ff${valid.slice(2)}`
    case 4: return `00-${"0".repeat(32)}-${"0".repeat(16)}-01`
    case 5: return `${valid}-${rng.pick(["00", "ab", "x", ""])}`
    case 6: return rng.pick(["", "-", "--", "0", "f", "g", " ", `${valid} `, `\t${valid}`])
    default: {
      const units = ["0", "a", "f", "-", "A", "g", " ", "\t", "\r", "\n", "\u0000", "\u007f", '"', "\\", "\u00e9", "\u2028", "\ud800", "\udc00", "]", ","]
      let value = ""
      for (let n = rng.int(0, 12); n > 0; n--) value += rng.pick(units)
      return value
    }
  }
}

/** A value as JSON text: mostly JSON.stringify's, sometimes with a character written as a \u escape (JSON.parse reads both alike). */
const encoded = (rng: Prng, value: string): string => {
  const text = JSON.stringify(value)
  if (value.length === 0 || rng.next() < 0.7) return text
  const at = rng.int(0, value.length - 1)
  return JSON.stringify(value.slice(0, at)).slice(0, -1) + `\\u${value.charCodeAt(at).toString(16).padStart(4, "0")}` + JSON.stringify(value.slice(at + 1)).slice(1)
}

describe("a trace tail that is a lone traceparent, read by hand", () => {
  it("gives what decoding the whole text gives, for any tail value and spelling, the part before it new or repeated", () => {
    const rng = prng(SEED ^ 0x51ed)
    let head: ReadonlyArray<unknown> = []
    for (let i = 0; i < 6000; i++) {
      if (i % 6 === 0) head = Array.from({ length: rng.int(0, 4) }, () => rng.pick(atoms))
      const open = JSON.stringify(head).slice(0, -1)
      const value = encoded(rng, hostileValue(rng))
      const tail = rng.pick([
        `,["traceparent",${value}]]`,
        `,["traceparent",${value}]]`,
        `,["traceparent", ${value}]]`,
        `,["traceparent",${value} ]]`,
        `,["traceparent",${value}] ]`,
        `,["traceparent",${value}]]\n`,
        `,["traceparent",${value},"x"]]`,
        `,["traceparent",${value}],["tracestate","k=v"]]`,
        `,["traceparent",${value}],["traceparent","${traceparent(rng)}"]]`,
        `,["traceparent",${value}]]]`
      ])
      // Cut short by a few characters now and then: a tail whose end a peer left off.
      const text = rng.next() < 0.1 ? (open + tail).slice(0, -rng.int(1, 4)) : open + tail
      const expected = wholeDecode(text)
      const got = decode(text)
      expect(got.pairs, `seed ${SEED}, case ${i}, text ${JSON.stringify(text)}`).toStrictEqual(expected.pairs)
      expect(got.invalid, `seed ${SEED}, case ${i}, text ${JSON.stringify(text)}`).toBe(expected.invalid)
    }
  })

  it("a list the outbound side writes is its JSON, and the far side reads back what the filter keeps of it, whatever its code units", () => {
    const rng = prng(SEED ^ 0xa11)
    const names = ["x-a", "content-type", "traceparent", "tracestate", "baggage", "TraceParent", "connection", "bad name"]
    let head: Array<readonly [string, string]> = []
    for (let i = 0; i < 4000; i++) {
      if (i % 5 === 0) head = Array.from({ length: rng.int(0, 4) }, () => [rng.pick(names), hostileValue(rng)] as const)
      const list: Array<readonly [string, string]> = [...head]
      if (rng.next() < 0.85) list.push(["traceparent", rng.next() < 0.7 ? traceparent(rng) : hostileValue(rng)])
      for (let n = rng.int(0, 2); n > 0; n--) list.push([rng.pick(["tracestate", "baggage", "traceparent", "x-b"]), hostileValue(rng)])
      const text = requestMeta("POST", "echo", list).get(HttpMeta.headers)!
      expect(text, `seed ${SEED}, case ${i}, list ${JSON.stringify(list)}`).toBe(JSON.stringify(list))
      expect(decode(text), `seed ${SEED}, case ${i}, text ${JSON.stringify(text)}`).toStrictEqual(wholeDecode(text))
    }
  })
})

describe("hostile header lists at the far side's shortcuts (the head compared by equality, a lone traceparent read by hand)", () => {
  it("each gives what decoding the whole text gives, read after the head it shares a prefix with", () => {
    const v = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    const w = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    const head = '[["x-a","1"]'
    const texts = [
      // The shortcut's own case, then the same head with other tails.
      `${head},["traceparent","${v}"]]`,
      `${head},["traceparent","${v}"],["x-b","2"]]`,
      `${head},["traceparent","${v}"],["traceparent","${w}"]]`,
      `${head},["TraceParent","${v}"]]`,
      `${head},["traceparent"," ${v}"]]`,
      `${head},["traceparent","${v} "]]`,
      `${head},["traceparent","${v.slice(0, 54)}\\u0031"]]`,
      `${head},["traceparent","${v.slice(0, 40)}\\u002d${v.slice(41, 50)}"]]`,
      `${head},["traceparent","${v.toUpperCase()}"]]`,
      `${head},["traceparent","00-${"0".repeat(32)}-00f067aa0ba902b7-01"]]`,
      `${head},["traceparent","ff${v.slice(2)}"]]`,
      `${head},["traceparent","cc${v.slice(2)}-x"]]`,
      `${head},["traceparent","${v}-x"]]`,
      `${head},["traceparent","${v.slice(0, 54)}"]]`,
      // The last head a prefix of a different one: its text ends inside the next list's first pair or value.
      `${head.slice(0, -1)},["traceparent","${v}"]]`,
      `[["x-a","1"],["x-a2","1"],["traceparent","${v}"]]`,
      `[["x-a","1"],["traceparent","${w}"],["x-c","3"],["traceparent","${v}"]]`,
      `[["x-a","1,[\\"traceparent\\",\\"${v}\\"]"],["traceparent","${v}"]]`,
      `[["x-a","1"],["connection","traceparent"],["traceparent","${v}"]]`
    ]
    for (const text of texts) {
      for (const before of [`${head},["traceparent","${w}"]]`, text]) {
        // The head seen just before (the cache's case), then the text itself again.
        decode(before)
        expect(decode(text), `after ${before}: ${text}`).toStrictEqual(wholeDecode(text))
      }
    }
  })
})
