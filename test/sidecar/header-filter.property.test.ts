// Property tests of the end-to-end header filter (src/sidecar/headerFilter.ts), seeded so a failing
// seed replays. Random header lists mix framing and hop-by-hop names in any case, duplicate and
// conflicting content-lengths, Connection lists naming other headers, names and values with CR,
// LF, NUL, other controls, DEL, Latin-1 and wider characters, and pairs that are not pairs.
// Unit level: the filter never throws, keeps exactly the valid end-to-end pairs in order, their
// values without leading or trailing spaces and tabs (checked
// against an oracle written here and against node's own header validators). Through a real
// inbound side: whatever a peer puts in the envelope (mesh mode, whole or streamed body) or in
// `__http_hdr__` (plain IIP), the raw-socket app parses exactly one request, with the body sent,
// without a forbidden header or an invalid character.
import * as http from "node:http"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import type { IipClient } from "../../src/iip/client.ts"
import { endToEndHeaders, endToEndPairs } from "../../src/sidecar/headerFilter.ts"
import { type Prng, prng } from "../helpers/prng.ts"
import { Cleanup } from "../support/iipRaw.ts"
import type { RawApp } from "../support/rawHttp.ts"
import { startInboundOverRawApp } from "../support/inboundOverRawApp.ts"

const SEED = Number(process.env.HEADER_FILTER_SEED ?? 0x5eed13)

/** Never crosses a hop (lower case); `proxy-*` too. */
const forbidden = new Set(["connection", "keep-alive", "te", "trailer", "transfer-encoding", "upgrade", "http2-settings", "content-length", "host", "expect", "iip-timeout", "x-iip-mesh-error", "x-iip-mesh-client-id", "__proto__"])
const isForbidden = (name: string) => forbidden.has(name) || name.startsWith("proxy-")

const randomCase = (rng: Prng, text: string) => [...text].map((c) => (rng.next() < 0.5 ? c.toUpperCase() : c)).join("")

const nameAtoms = ["x-a", "x-b", "accept", "set-cookie", "x-forwarded-for", "proxy-authorization", "proxy-foo", ...forbidden]
const badNameAtoms = ["", "x a", "x:a", "x\r\ny", "x\ny", "x\u0000", "x\u007f", "caf\u00e9", "x\u0100", "(x)", "x/y", "x\"", "@x"]
const valueChars = ["a", "Z", "0", "9", " ", "\t", ",", ";", "=", "\"", "\r", "\n", "\u0000", "\u0001", "\u007f", "\u00e9", "\u00ff", "\u0100", "\u2028", "\ud83d\ude00", "GET / HTTP/1.1", "\r\n\r\n"]

const randomName = (rng: Prng): string => {
  const roll = rng.next()
  if (roll < 0.55) return randomCase(rng, rng.pick(nameAtoms))
  if (roll < 0.75) return `x-${rng.int(0, 9999)}`
  return rng.pick(badNameAtoms)
}

const randomValue = (rng: Prng, names: ReadonlyArray<string>): string => {
  const roll = rng.next()
  if (roll < 0.15) return String(rng.int(0, 100_000))
  if (roll < 0.25) return names.length === 0 ? "close" : `${rng.pick(["close", "keep-alive", ""])}, ${rng.pick(names)}`
  let value = ""
  for (let i = rng.int(0, 8); i > 0; i--) value += rng.pick(valueChars)
  return value
}

/** A random header list; sometimes with entries that are not [string, string] pairs. */
const randomHeaders = (rng: Prng, withJunk: boolean): Array<unknown> => {
  const out: Array<unknown> = []
  const names: Array<string> = []
  for (let i = rng.int(0, 14); i > 0; i--) {
    const name = randomName(rng)
    names.push(name)
    out.push([name, randomValue(rng, names)])
    if (rng.next() < 0.1) out.push([randomCase(rng, "content-length"), String(rng.int(0, 50))])
  }
  if (withJunk && rng.next() < 0.3) out.splice(rng.int(0, out.length), 0, rng.pick<unknown>([["x"], ["x", 1], "x", null, ["a", "b", "c"], [1, "x"]]))
  return out
}

/** What the filter must keep, written from the rules rather than from src. */
const oracle = (pairs: ReadonlyArray<unknown>): Array<[string, string]> => {
  const valid = pairs.filter(
    (p): p is [string, string] =>
      Array.isArray(p) && p.length === 2 && typeof p[0] === "string" && typeof p[1] === "string" &&
      /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/.test(p[0]) && /^[\t\u0020-\u007e\u0080-\u00ff]*$/.test(p[1])
  )
  const named = new Set(
    valid.filter(([n]) => n.toLowerCase() === "connection").flatMap(([, v]) => v.split(",").map((t) => t.trim().toLowerCase()))
  )
  // Leading and trailing spaces and tabs are no part of a value (RFC 9110 §5.5; HTTP/2 forbids them).
  return valid.map(([n, v]): [string, string] => [n.toLowerCase(), v.replace(/^[ \t]+|[ \t]+$/g, "")]).filter(([n]) => !isForbidden(n) && !named.has(n))
}

describe("end-to-end header filter, property", () => {
  it("never throws, keeps exactly the valid end-to-end pairs in order, and node accepts every one it keeps", () => {
    const rng = prng(SEED)
    let invalidCounted = 0
    for (let run = 0; run < 5000; run++) {
      const pairs = randomHeaders(rng, true)
      const kept = endToEndPairs(pairs, (count) => (invalidCounted += count))
      expect(kept, `seed ${SEED} run ${run}: ${JSON.stringify(pairs)}`).toStrictEqual(oracle(pairs))
      for (const [name, value] of kept) {
        expect(isForbidden(name)).toBe(false)
        expect(() => http.validateHeaderName(name)).not.toThrow()
        expect(() => http.validateHeaderValue(name, value)).not.toThrow()
      }
      // node's and llhttp's flat form (the app pool's answer headers) gives the same answer for the same (string) pairs.
      const strings = pairs.filter((p): p is [string, string] => Array.isArray(p) && p.length === 2 && typeof p[0] === "string" && typeof p[1] === "string")
      expect(endToEndHeaders(strings.flat())).toStrictEqual(oracle(strings))
      // node:http2's raw field list (appH2Exchange.ts): its pseudo-headers are left out, not counted as invalid.
      let fieldsInvalid = 0
      let stringsInvalid = 0
      endToEndHeaders(strings.flat(), (count) => (stringsInvalid += count))
      const fields = endToEndHeaders([":status", "200", ":path", "/x", ...strings.flat()], (count) => (fieldsInvalid += count))
      expect(fields).toStrictEqual(oracle(strings))
      expect(fieldsInvalid).toBe(stringsInvalid)
    }
    expect(invalidCounted).toBeGreaterThan(0)
  })

  it("a raw list equal to the last one gives the kept pairs in an array of the caller's own, which it may extend and cut", () => {
    const raw = ["Accept", "*/*", "Connection", "keep-alive", "X-Trace", "1"]
    const first = endToEndHeaders(raw)
    expect(first).toEqual([["accept", "*/*"], ["x-trace", "1"]])
    first.push(["x-forwarded-for", "127.0.0.1"])
    const second = endToEndHeaders(raw.slice())
    expect(second).toEqual([["accept", "*/*"], ["x-trace", "1"]])
    expect(second).not.toBe(first)
    second.length = 0
    expect(endToEndHeaders(raw.slice())).toEqual([["accept", "*/*"], ["x-trace", "1"]])
  })
})

describe("end-to-end header filter, through a real inbound side to a raw-socket app", () => {
  const cleanup = new Cleanup()
  let app: RawApp
  let mesh: IipClient
  let plain: IipClient

  beforeAll(async () => {
    ;({ app, mesh, plain } = await startInboundOverRawApp(cleanup))
  })
  afterAll(() => cleanup.run())

  it("whatever the peer sends, the app parses exactly one request with the body sent and only valid end-to-end headers", { timeout: 60_000 }, async () => {
    const rng = prng(SEED + 1)
    let checked = 0
    for (let run = 0; run < 300; run++) {
      const headers = randomHeaders(rng, true)
      const body = rng.next() < 0.3 ? Buffer.alloc(0) : Buffer.from(`GET /smuggled-${run} HTTP/1.1\r\nhost: x\r\n\r\n${"b".repeat(rng.int(0, 200))}`, "latin1")
      const mode = rng.pick(["whole", "streamed", "plain"] as const)
      const method = rng.pick(["GET", "POST", "PUT", "DELETE", "PATCH"])
      const what = `seed ${SEED + 1} run ${run} ${mode} ${method}: ${JSON.stringify(headers)}`
      const before = app.requests.length
      if (mode === "plain") {
        // Go's http.Header JSON: canonical-ish names to value lists (only string pairs can be expressed).
        // No prototype: a "__proto__" name is a key like any other.
        const header: Record<string, Array<string>> = Object.create(null) as Record<string, Array<string>>
        for (const p of headers) if (Array.isArray(p) && typeof p[0] === "string" && typeof p[1] === "string") (header[p[0]] ??= []).push(p[1])
        const arg = Buffer.from(JSON.stringify(header), "utf8").toString("base64url")
        await plain.call(`/run/${run}?__http_hdr__=${arg}`, body.length === 0 ? "{}" : body, { timeoutMs: 5000 })
      } else {
        const meta = new Map([[":method", method], [":authority", "catalog"], ["http-headers", JSON.stringify(headers)]])
        const source = mode === "whole" ? body : (async function*() {
          yield body.subarray(0, body.length >> 1)
          yield body.subarray(body.length >> 1)
        })()
        // A streamed body with a declared length that does not match is refused (and cut off at the app): also fine.
        const reply = await mesh.stream(`/run/${run}`, source, { meta, timeoutMs: 5000 }).catch((error: unknown) => error)
        if (reply instanceof Error) {
          expect((reply as { code?: string }).code, what).toBe("bad_request")
          continue
        }
        for await (const _ of (reply as { stream?: AsyncIterable<Uint8Array> }).stream ?? []) void _
      }
      await app.untilRequests(before + 1)
      checked++
      const seen = app.requests.slice(before)
      expect(seen.length, what).toBe(1)
      const [request] = seen
      expect(request!.startLine, what).toBe(`${mode === "plain" ? (body.length === 0 ? "GET" : "POST") : method} /run/${run} HTTP/1.1`)
      expect(request!.ambiguous, what).toBe(false)
      expect(request!.body.equals(body), what).toBe(true)
      for (const [name, value] of request!.headers) {
        const lower = name.toLowerCase()
        expect(/^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/.test(name), what).toBe(true)
        expect(/^[\t\u0020-\u007e\u0080-\u00ff]*$/.test(value), what).toBe(true)
        // B's own: host (the authority), connection (its keep-alive), framing from the body it sent, the time left.
        if (isForbidden(lower)) expect(["host", "connection", "content-length", "transfer-encoding", "iip-timeout"], `${what}: ${name}`).toContain(lower)
      }
      const framing = request!.headers.filter(([n]) => /^(content-length|transfer-encoding)$/i.test(n))
      expect(framing.length, what).toBeLessThanOrEqual(1)
      expect(request!.headers.filter(([n]) => n.toLowerCase() === "iip-timeout").length, what).toBeLessThanOrEqual(mode === "plain" ? 0 : 1)
      const hosts = request!.headers.filter(([n]) => n.toLowerCase() === "host").map(([, v]) => v)
      expect(hosts, what).toStrictEqual(mode === "plain" ? [app.address] : ["catalog"])
    }
    expect(checked).toBeGreaterThan(200)
    // Nothing smuggled over the whole run.
    expect(app.requests.filter((r) => r.startLine.includes("/smuggled"))).toStrictEqual([])
  })
})
