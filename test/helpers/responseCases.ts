// Generated HTTP/1.1 answers for the response-direction framing fuzz (test/sidecar/response-fuzz.test.ts):
// what a hostile raw app writes back to sidecar B for one request, from a seeded PRNG, by class
// (length fields, transfer codings, chunk sizes, trailers, header bytes, interim and bodiless
// statuses, status lines, bodies to close, a smuggled second answer, a cut answer, random byte
// mutations), and the strict reading of those bytes by llhttp that the fuzz holds A's answer to.
import * as nodeHttp from "node:http"
import { HTTPParser } from "../../src/sidecar/llhttp.ts"
import type { Prng } from "./prng.ts"

export type Method = "GET" | "HEAD" | "POST"

export interface ResponseCase {
  readonly id: number
  readonly cls: string
  readonly method: Method
  /** A POST's body length (the early class sends one large enough to still be in flight). */
  readonly requestBody: number
  /** Answered as soon as the request head is read, before its body. */
  readonly early: boolean
  /** The bytes the app writes (in pieces: splitPoints). */
  readonly answer: Buffer
  /** Written on the same app connection when it carries its next request (the rest of a second answer begun after this one). */
  readonly later: Buffer | undefined
}

/** The answer nobody asked for: its body must never reach a client. */
export const INJECTED = "INJECTED-ANSWER"
export const injected = `HTTP/1.1 200 OK\r\ncontent-length: ${INJECTED.length}\r\nx-injected: 1\r\n\r\n${INJECTED}`

export const canaryBody = (id: number): string => `canary-${id}`
export const canaryAnswer = (id: number): string => `HTTP/1.1 200 OK\r\ncontent-length: ${canaryBody(id).length}\r\nx-canary: ${id}\r\n\r\n${canaryBody(id)}`

const CLASSES = [
  "cl-dup",
  "cl-value",
  "te-variant",
  "cl-te",
  "chunk-size",
  "trailers",
  "header-bytes",
  "obs-fold",
  "interim",
  "switch-101",
  "bodiless-with-body",
  "status-line",
  "body-to-close",
  "smuggled-second",
  "cut",
  "early",
  "large",
  "mutated"
] as const

const head = (status: string, fields: ReadonlyArray<string>): string => `${status}\r\n${fields.map((f) => `${f}\r\n`).join("")}\r\n`

const chunked = (body: string, ext = "", trailers = ""): string => `${body.length.toString(16)}${ext}\r\n${body}\r\n0\r\n${trailers}\r\n`

/** One case's answer bytes for its class (as latin1 text: every byte 0-255 stands for itself). */
const generate = (rng: Prng, cls: (typeof CLASSES)[number], method: Method, id: number): string => {
  const body = `body-${id}-${"x".repeat(rng.int(0, 20))}`
  const n = body.length
  const ok = "HTTP/1.1 200 OK"
  switch (cls) {
    case "cl-dup": {
      const pair = rng.pick([
        [`content-length: ${n}`, `content-length: ${n}`],
        [`content-length: ${n}, ${n}`],
        [`content-length: ${n},${n}`],
        [`content-length: ${n}`, `content-length: ${n + 1}`],
        [`content-length: ${n}, ${n + 1}`],
        [`Content-Length: ${n}`, `content-LENGTH: 0`],
        [`content-length: ${n}`, "content-length: "]
      ])
      return head(ok, pair) + body
    }
    case "cl-value": {
      const value = rng.pick([`0${n}`, `000${n}`, `+${n}`, ` ${n} `, `\t${n}`, `${n} ${n}`, `-${n}`, `0x${n.toString(16)}`, "99999999999999999999", "18446744073709551616", `${n}.0`, "", `${n}\x0b`, `${n}a`])
      return head(ok, [`content-length:${value}`]) + body
    }
    case "te-variant": {
      const te = rng.pick([
        ["transfer-encoding: chunked", "transfer-encoding: chunked"],
        ["transfer-encoding: chunked, chunked"],
        ["transfer-encoding: chunked, identity"],
        ["transfer-encoding: identity, chunked"],
        ["transfer-encoding: identity"],
        ["transfer-encoding: CHUNKED"],
        ["Transfer-Encoding: Chunked"],
        ["transfer-encoding:\r\n chunked"],
        ["transfer-encoding:\tchunked"],
        ["transfer-encoding: \x0bchunked"],
        ["transfer-encoding: chunked "],
        ["transfer-encoding: xchunked"],
        ["transfer-encoding: chunked;q=1"],
        ["transfer-encoding: gzip"],
        ["transfer-encoding: "],
        ["transfer-encoding : chunked"],
        ["transfer_encoding: chunked"]
      ])
      return head(ok, te) + chunked(body)
    }
    case "cl-te": {
      const fields = rng.pick([
        [`content-length: ${n}`, "transfer-encoding: chunked"],
        ["transfer-encoding: chunked", `content-length: ${n}`],
        ["transfer-encoding: chunked", "content-length: 3"],
        [`content-length: ${n + 4}`, "transfer-encoding: identity, chunked"]
      ])
      return head(ok, fields) + chunked(body)
    }
    case "chunk-size": {
      const size = rng.pick([
        "1ffffffffffffffff",
        "ffffffffffffffff",
        `-${n.toString(16)}`,
        `0x${n.toString(16)}`,
        `${n.toString(16).toUpperCase()}`,
        `000${n.toString(16)}`,
        `${n.toString(16)} `,
        `${n.toString(16)};ext=1`,
        `${n.toString(16)} ; a="b"`,
        `${n.toString(16)};a\x00`,
        `${(n + 1).toString(16)}`,
        `${(n - 1).toString(16)}`,
        ""
      ])
      const eol = rng.pick(["\r\n", "\r\n", "\n", "\r"])
      return `${head(ok, ["transfer-encoding: chunked"])}${size}${eol}${body}\r\n0\r\n\r\n`
    }
    case "trailers": {
      const trailer = rng.pick(["x-trailer: 1\r\n", "content-length: 5\r\n", "transfer-encoding: chunked\r\n", "transfer-encoding: gzip\r\n", "transfer-encoding: identity\r\n", "host: evil\r\n", "x-t: a\r\n b\r\n", "x-t\x00: 1\r\n", "x-t: 1\n", ": empty\r\n", "connection: close\r\n", "proxy-connection: close\r\n", "connection: keep-alive\r\n", "keep-alive: timeout=0\r\n"])
      return head(ok, ["transfer-encoding: chunked", "trailer: x-trailer"]) + chunked(body, "", trailer)
    }
    case "header-bytes": {
      const field = rng.pick(["x-a\x00: v", "x-a: v\x00w", "x-a: v\rw", "x-a: v\nw", "x-a: v\x7fw", "x-a: \xff\xfe", "x-a\xff: v", "x a: v", ": v", "x-(a): v", "x-a:: v", "x-a\x7f: v", " x-a: v"])
      return head(ok, [`content-length: ${n}`, field]) + body
    }
    case "obs-fold": {
      const fields = rng.pick([[`content-length: ${n}`, "x-a: v", " folded"], [`content-length:`, ` ${n}`], [`content-length: ${n}`, "x-a: v", "\tfolded"]])
      return head(ok, fields) + body
    }
    case "interim": {
      const interim = rng.pick([
        "HTTP/1.1 100 Continue\r\n\r\n",
        "HTTP/1.1 102 Processing\r\n\r\n",
        "HTTP/1.1 103 Early Hints\r\nlink: </a.css>; rel=preload\r\n\r\n",
        "HTTP/1.1 100 Continue\r\ncontent-length: 5\r\n\r\n",
        "HTTP/1.1 100 Continue\r\ncontent-length: 5\r\n\r\nhello",
        "HTTP/1.1 103 Early Hints\r\ntransfer-encoding: chunked\r\n\r\n",
        "HTTP/1.1 199 Whatever\r\n\r\n",
        "HTTP/1.1 103 Early Hints\r\nconnection: close\r\n\r\n",
        "HTTP/1.1 100 Continue\r\n\r\n".repeat(6)
      ])
      return interim + head(ok, [`content-length: ${n}`]) + body
    }
    case "switch-101":
      return head("HTTP/1.1 101 Switching Protocols", rng.pick([["upgrade: websocket", "connection: upgrade"], [], ["content-length: 3"]])) + rng.pick(["", injected, "abc"])
    case "bodiless-with-body": {
      const status = rng.pick(["HTTP/1.1 204 No Content", "HTTP/1.1 304 Not Modified", "HTTP/1.1 205 Reset Content"])
      const framing = rng.pick([[`content-length: ${n}`], ["transfer-encoding: chunked"], []])
      const payload = framing[0]?.startsWith("transfer") ? chunked(body) : framing.length > 0 ? body : ""
      return head(status, framing) + payload
    }
    case "status-line": {
      const line = rng.pick(["HTTP/1.1 20 OK", "HTTP/1.1 2000 OK", "HTTP/1.1 200", "HTTP/1.1 200 ", "HTTP/1.1 999 X", "HTTP/1.1 099 X", "HTTP/1.0 200 OK", "HTTP/2 200 OK", "HTTP/1.2 200 OK", "http/1.1 200 OK", "HTTP/1.1  200 OK", "HTTP/1.1 200 OK\x00", "HTTP/1.1 200 \xffK", "ICY 200 OK", "HTTP/1.1 -200 OK"])
      return head(line, [`content-length: ${n}`]) + body
    }
    case "body-to-close": {
      const status = rng.pick(["HTTP/1.0 200 OK", "HTTP/1.1 200 OK"])
      const fields = rng.pick([[], ["connection: close"], ["connection: keep-alive"]])
      return head(status, fields) + body
    }
    case "smuggled-second": {
      const first = rng.pick([head(ok, [`content-length: ${n}`]) + body, head(ok, ["transfer-encoding: chunked"]) + chunked(body), head("HTTP/1.1 204 No Content", []), head("HTTP/1.1 304 Not Modified", [])])
      return first
    }
    case "cut": {
      const whole = rng.next() < 0.5 ? head(ok, [`content-length: ${n}`]) + body : head(ok, ["transfer-encoding: chunked"]) + chunked(body)
      return whole.slice(0, rng.int(1, whole.length - 1))
    }
    case "large": {
      // Past the 64 KiB B gathers whole: the answer streams, so a defect at its end comes after A wrote its head.
      const big = "L".repeat(rng.int(64 * 1024, 200 * 1024))
      const tail = rng.pick(["", "", injected, "garbage", "\r\n"])
      if (rng.next() < 0.5) return head(ok, [`content-length: ${big.length + rng.pick([0, 0, 0, 1, -1])}`]) + big + tail
      return head(ok, ["transfer-encoding: chunked"]) + `${big.length.toString(16)}\r\n${big}\r\n` + rng.pick(["0\r\n\r\n", "0\r\n\r\n", "0\r\nx-t: 1\r\n\r\n", "0\r\ncontent-length: 1\r\n\r\n", "zz\r\n", "0\r\n"]) + tail
    }
    case "early":
      return head(ok, [`content-length: ${n}`]) + (method === "HEAD" ? "" : body)
    case "mutated": {
      const whole = rng.next() < 0.5 ? head(ok, [`content-length: ${n}`]) + body : head(ok, ["transfer-encoding: chunked"]) + chunked(body)
      const at = rng.int(0, whole.length - 1)
      const byte = String.fromCharCode(rng.pick([0, 9, 10, 11, 13, 32, 43, 44, 45, 48, 58, 59, 127, 255, rng.int(0, 255)]))
      const edit = rng.int(0, 2)
      return edit === 0 ? whole.slice(0, at) + byte + whole.slice(at + 1) : edit === 1 ? whole.slice(0, at) + byte + whole.slice(at) : whole.slice(0, at) + whole.slice(at + 1)
    }
  }
}

export const responseCase = (rng: Prng, id: number): ResponseCase => {
  const cls = rng.pick(CLASSES)
  const method: Method = cls === "early" ? "POST" : rng.pick(["GET", "GET", "HEAD", "POST"])
  const requestBody = method !== "POST" ? 0 : cls === "early" ? rng.pick([10, 100_000, 1_000_000]) : rng.int(0, 64)
  let text = generate(rng, cls, method, id)
  let later: Buffer | undefined
  if (cls === "smuggled-second" && rng.next() < 0.3) {
    // A second answer begun after this one, cut: its rest comes with the connection's next request.
    const cut = rng.int(1, injected.length - 1)
    text += injected.slice(0, cut)
    later = Buffer.from(injected.slice(cut), "latin1")
  } else if (cls === "smuggled-second") text += rng.pick([injected, "\r\n" + injected, "\r\n\r\n", " "])
  const answer = Buffer.from(text, "latin1")
  return { id, cls, method, requestBody, early: cls === "early", answer, later }
}

/**
 * Where the app may cut its answer into writes: only within the final answer a strict reader
 * finds (`consumed` bytes), so whatever follows it arrives in the same read as its end, as B
 * could not otherwise tell it from the next request's answer (no HTTP/1.1 reader can).
 */
export const splitPoints = (rng: Prng, consumed: number): Array<number> => {
  const count = consumed < 2 ? 0 : rng.int(0, 3)
  const points = new Set<number>()
  for (let i = 0; i < count; i++) points.add(rng.int(1, consumed - 1))
  return [...points].sort((a, b) => a - b)
}

/** A strict reading of an answer: what a correct client takes from these bytes (for a request of `method`). */
export type Reading =
  | { readonly kind: "answer"; readonly status: number; readonly body: Buffer; readonly keepAlive: boolean; readonly extra: number; readonly toClose: boolean }
  | { readonly kind: "invalid"; readonly why: string }
  | { readonly kind: "cut" }

/**
 * llhttp (strict, node's limits), so the end of the final answer is known to the byte: interim 1xx
 * answers are passed over, a 101 to a request that asked none is invalid, what follows the final
 * answer is `extra`, and the connection's end (the app closes after bytes that leave an answer
 * open) ends an answer read to the close or leaves it cut. Fed in pieces of STEP bytes to find
 * the piece where the answer ends, then again with that piece byte by byte.
 */
export const strictReading = (bytes: Buffer, method: Method): Reading => {
  const first = readIn(bytes, method, -1)
  const reading = first.endPiece === -1 ? first.reading : readIn(bytes, method, first.endPiece).reading
  if (reading.kind !== "answer" || !reading.keepAlive) return reading
  return { ...reading, keepAlive: takesMore(bytes.subarray(0, bytes.length - reading.extra), method) }
}

/**
 * Whether llhttp reads another answer after this one on the connection: its keep-alive view at the
 * END of the answer, after trailers (a `connection: close` trailer ends it there, which the head's
 * view, taken at the head, does not show).
 */
const takesMore = (answer: Buffer, method: Method): boolean => {
  const parser = new HTTPParser()
  parser.initialize(HTTPParser.RESPONSE, {}, nodeHttp.maxHeaderSize, HTTPParser.kLenientNone)
  parser[HTTPParser.kOnHeadersComplete] = (_ma: number, _mi: number, _h: unknown, _m: unknown, _u: unknown, code: number) => (method === "HEAD" && code >= 200 ? 1 : 0)
  try {
    parser.execute(answer)
    const result = parser.execute(Buffer.from("HTTP/1.1 204 No Content\r\n\r\n"))
    return !(result instanceof Error)
  } finally {
    parser.close()
  }
}

const STEP = 4096

const readIn = (bytes: Buffer, method: Method, bytewisePiece: number): { reading: Reading; endPiece: number } => {
  const parser = new HTTPParser()
  parser.initialize(HTTPParser.RESPONSE, {}, nodeHttp.maxHeaderSize, HTTPParser.kLenientNone)
  let status = 0
  let keepAlive = true
  const body: Array<Buffer> = []
  let done = false
  let switched = false
  parser[HTTPParser.kOnHeadersComplete] = (_ma: number, _mi: number, _h: unknown, _m: unknown, _u: unknown, code: number, _s: unknown, _up: unknown, alive: boolean) => {
    status = code
    keepAlive = alive
    if (code === 101) switched = true
    return method === "HEAD" && code >= 200 ? 1 : 0
  }
  parser[HTTPParser.kOnBody] = (chunk: Buffer) => void body.push(Buffer.from(chunk))
  parser[HTTPParser.kOnMessageComplete] = () => {
    if (done) return
    if (status >= 200 || status === 101) done = true
    else body.length = 0
  }
  try {
    for (let piece = 0; piece * STEP < bytes.length; piece++) {
      const start = piece * STEP
      const end = Math.min(bytes.length, start + STEP)
      const step = piece === bytewisePiece ? 1 : end - start
      for (let i = start; i < end; i += step) {
        const result = parser.execute(bytes.subarray(i, i + step))
        if (switched) return { reading: { kind: "invalid", why: "101 to a request that asked no upgrade" }, endPiece: -1 }
        if (done && step !== 1) return { reading: { kind: "cut" }, endPiece: piece }
        if (result instanceof Error) return { reading: { kind: "invalid", why: String((result as { code?: string }).code) }, endPiece: -1 }
        if (done) return { reading: { kind: "answer", status, body: Buffer.concat(body), keepAlive, extra: bytes.length - i - 1, toClose: false }, endPiece: -1 }
      }
    }
    if (bytes.length === 0) return { reading: { kind: "cut" }, endPiece: -1 }
    const result = parser.finish()
    if (result instanceof Error || !done) return { reading: { kind: "cut" }, endPiece: -1 }
    return { reading: { kind: "answer", status, body: Buffer.concat(body), keepAlive: false, extra: 0, toClose: true }, endPiece: -1 }
  } finally {
    parser.close()
  }
}
