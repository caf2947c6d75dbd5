// The framing fuzz's generator (test/sidecar/framing-fuzz.test.ts): one HTTP/1.1 request built from
// a seeded PRNG out of the known smuggling material (RFC 9112 §6 message body length, §7.1 chunked,
// §5 field syntax): Content-Length and Transfer-Encoding in their conflicting and malformed forms,
// chunk sizes, extensions and line ends, trailers, bytes a field must not hold, obs-fold, request
// targets and versions, Expect and Connection, and requests hidden in bodies. Each case names the
// mutations it drew (`tags`), so a disagreement can be grouped by class.
import type { Prng } from "./prng.ts"

export interface FramingCase {
  readonly bytes: Buffer
  readonly tags: ReadonlyArray<string>
}

/** A request that rides in a body: a real request only if the framing says the body ended before it. */
const hidden = (id: number): string => `GET /hidden${id} HTTP/1.1\r\nHost: catalog\r\n\r\n`

const METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "CONNECT", "TRACE", "QUERY", "get", "G\x00T", "PO ST"]
const VERSIONS = ["HTTP/1.0", "HTTP/0.9", "HTTP/2.0", "HTTP/1.2", "HTTP/1.10", "http/1.1", "HTTP/1.1 ", "HTTP/1.1\t", "HTTP/ 1.1", "HTTP/3"]
const TARGETS = ["http://catalog/f", "http://other/f", "http://catalog:80/f?x=1", "http://catalog/a/../f", "https://catalog/f", "*", "/f#frag", "/f?x=%0d%0a", "//catalog/f", "/f\x7f", "/f\x80", "catalog/f", "/f /g", "http://catalog@evil/f"]
const CL_FORMS = (n: number): ReadonlyArray<string> => [`0${n}`, `+${n}`, ` ${n}`, `${n} `, `\t${n}`, `${n}, ${n}`, `${n},${n + 1}`, `${n} ${n}`, `-${n}`, `0x${n.toString(16)}`, `${n}.0`, "", "99999999999999999999", "18446744073709551616", `${n}\x0b`, `${n}\x00`]
const TE_FORMS = ["chunked, chunked", "chunked, identity", "identity, chunked", "identity", "gzip, chunked", "chunked, gzip", "CHUNKED", "Chunked", " chunked", "chunked ", "\tchunked", "\x0bchunked", "chunked\x0b", "xchunked", "chunkedx", "chunked;q=1", "chunked,", ",chunked", "\"chunked\"", "chunk ed", "compress"]
const SIZE_FORMS = (n: number): ReadonlyArray<string> => [`0${n.toString(16)}`, n.toString(16).toUpperCase(), `0x${n.toString(16)}`, `-${n.toString(16)}`, `${n.toString(16)} `, ` ${n.toString(16)}`, `${n.toString(16)}\t`, `ffffffffffffffff${n.toString(16)}`, `10000000000000000${n.toString(16)}`, `${n.toString(16)};`, `${n.toString(16)};a=b`, `${n.toString(16)};a="x;y\r\nz"`, `${n.toString(16)};a="q"`, `${n.toString(16)} ;a`, `${n.toString(16)};a=\x00`, `${n.toString(16)}g`, ""]
const TRAILERS = ["x-t: 1", "content-length: 5", "Content-Length: 0", "host: evil", "transfer-encoding: chunked", "connection: close", "x-t:\x00", "x-t: a\rb", " folded", "x t: 1", "expect: 100-continue", "te: trailers", "trailer: x-t"]
const FIELD_BYTES = ["\x00", "\r", "\n", "\x7f", "\x80", "\xff", "\x0b", "\x0c", "\x1b", "\t", " "]
const CONNECTION = ["close", "keep-alive", "upgrade", "Upgrade, close", "keep-alive, close", "close, keep-alive", "te", "content-length", "transfer-encoding", "host"]
const UPGRADE = ["websocket", "h2c", "h2c, websocket", "HTTP/2.0", "tls/1.0", "x y"]
const EXPECT = ["100-continue", "100-Continue", "200-ok", "100-continue, x", ""]
/** Bytes a random flip puts in: framing's own characters above all. */
const FLIP_BYTES = [0x00, 0x0a, 0x0d, 0x20, 0x09, 0x3a, 0x3b, 0x2c, 0x30, 0x31, 0x46, 0x7f, 0x80, 0xff, 0x22]

/**
 * How hostile a case is: the chance of each mutation is scaled by it, so that some cases are plain
 * (their bodies forwarded for B to frame) and others pile mutations up.
 */
const HEATS = [0.2, 0.5, 1, 1.5]
let heat = 1

/** Draws true with probability `p`, scaled by the case's heat. */
const chance = (rng: Prng, p: number): boolean => rng.next() < p * heat

/** A body of `n` bytes, sometimes holding a request or chunked-looking bytes. */
const bodyBytes = (rng: Prng, id: number, n: number, tags: Array<string>): string => {
  const pieces = ["a", "b", "\r\n", "0\r\n\r\n", hidden(id), "5\r\nhello\r\n", ":"]
  let out = chance(rng, 0.3) ? ((tags.push("hidden-request"), hidden(id))) : ""
  while (out.length < n) out += rng.pick(pieces)
  return out.slice(0, n)
}

/** A chunked body (RFC 9112 §7.1), with mutations of sizes, extensions, line ends and trailers. */
const chunkedBody = (rng: Prng, id: number, tags: Array<string>): string => {
  let out = ""
  const count = rng.int(0, 3)
  for (let i = 0; i < count; i++) {
    const data = bodyBytes(rng, id, chance(rng, 0.02) ? ((tags.push("large-chunk"), rng.int(1000, 70_000))) : rng.int(1, 40), tags)
    let size = data.length.toString(16)
    if (chance(rng, 0.15)) {
      size = rng.pick(SIZE_FORMS(data.length))
      tags.push("chunk-size")
    }
    let end = "\r\n"
    if (chance(rng, 0.05)) {
      end = rng.pick(["\n", "\r", "\r\r\n", " \r\n"])
      tags.push("chunk-line-end")
    }
    let dataEnd = "\r\n"
    if (chance(rng, 0.05)) {
      dataEnd = rng.pick(["", "\n", "xx\r\n", "\r"])
      tags.push("chunk-data-end")
    }
    // The size's length may lie about the data (too long, too short).
    let sent = data
    if (chance(rng, 0.05)) {
      sent = chance(rng, 0.5) ? data.slice(0, Math.max(0, data.length - rng.int(1, 3))) : `${data}${bodyBytes(rng, id, rng.int(1, 3), tags)}`
      tags.push("chunk-length-lie")
    }
    out += `${size}${end}${sent}${dataEnd}`
  }
  let last = "0"
  if (chance(rng, 0.1)) {
    last = rng.pick(["00", "0;x=y", "0 ", "0x0", "000000000000000000000", "-0", "0;"])
    tags.push("last-chunk")
  }
  out += `${last}\r\n`
  if (chance(rng, 0.25)) {
    const trailer = rng.pick(TRAILERS)
    out += `${trailer}\r\n`
    tags.push(`trailer:${trailer.split(":")[0]!.trim().toLowerCase() || "fold"}`)
  }
  if (chance(rng, 0.05)) {
    out += rng.pick(["", "\n", "\r"])
    tags.push("last-line-end")
  } else out += "\r\n"
  return out
}

/**
 * One request, then whatever the case's framing makes of the bytes after it. `service` is the one
 * its Host names (a service with no endpoint has A refuse it before reading its body).
 */
export const framingCase = (rng: Prng, id: number, service = "catalog"): FramingCase => {
  heat = rng.pick(HEATS)
  const tags: Array<string> = []
  let method = rng.pick(["GET", "POST", "POST", "PUT"])
  if (chance(rng, 0.1)) {
    method = rng.pick(METHODS)
    tags.push(`method:${method}`)
  }
  let target = `/f${id}`
  if (chance(rng, 0.08)) {
    target = rng.pick(TARGETS).replace("/f", `/f${id}`)
    tags.push("target")
  }
  let version = "HTTP/1.1"
  if (chance(rng, 0.08)) {
    version = rng.pick(VERSIONS)
    tags.push(`version:${version.trim()}`)
  }
  const fields: Array<string> = []
  if (chance(rng, 0.05)) tags.push("no-host")
  else fields.push(`${rng.pick(["Host", "host", "HOST"])}: ${service}`)
  if (chance(rng, 0.04)) {
    fields.push(rng.pick(["Host: catalog", "Host: other", "Host: catalog, other", "Host:", "Host: cat alog"]))
    tags.push("host-2")
  }
  // The body's framing.
  // Malformed or conflicting framing, or plain (a body A forwards, for B to frame).
  const framing = chance(rng, 0.4) ? rng.pick(["cl-form", "cl-form", "cl-2", "te-form", "te-form", "te-2", "cl+te", "te+cl"]) : rng.pick(["none", "cl", "cl", "te", "te"])
  if (framing !== "none") tags.push(`framing:${framing}`)
  let body = ""
  // Mostly small bodies (gathered whole by A); now and then one past A's whole-body limit (64 KiB), which streams.
  const length = chance(rng, 0.03) ? ((tags.push("large-body"), rng.int(65_000, 70_000))) : rng.int(0, 48)
  const chunked = framing.startsWith("te") || framing === "cl+te"
  if (chunked) body = chunkedBody(rng, id, tags)
  else if (framing !== "none") body = bodyBytes(rng, id, length, tags)
  if (framing === "cl" || framing === "cl+te" || framing === "te+cl") fields.push(`Content-Length: ${framing === "cl" ? length : rng.int(0, body.length + 4)}`)
  if (framing === "cl-form") fields.push(`Content-Length: ${rng.pick(CL_FORMS(length))}`)
  if (framing === "cl-2") fields.push(`Content-Length: ${length}`, `Content-Length: ${rng.pick([length, length + 1, 0])}`)
  if (framing === "te" || framing === "cl+te" || framing === "te+cl") fields.push(rng.pick(["Transfer-Encoding: chunked", "transfer-encoding: chunked"]))
  if (framing === "te-form") fields.push(`Transfer-Encoding: ${rng.pick(TE_FORMS)}`)
  if (framing === "te-2") fields.push("Transfer-Encoding: chunked", `Transfer-Encoding: ${rng.pick(["chunked", "identity", "gzip"])}`)
  if (framing === "te+cl") fields.reverse()
  // A length that lies about the body (the bytes after it are the next request's).
  if (framing === "cl" && chance(rng, 0.1)) {
    body = body.slice(0, rng.int(0, body.length)) + (chance(rng, 0.5) ? hidden(id) : "")
    tags.push("cl-lie")
  }
  // Fields the request's meaning turns on.
  if (chance(rng, 0.1)) {
    const value = rng.pick(CONNECTION)
    fields.push(`Connection: ${value}`)
    tags.push(`connection:${value}`)
  }
  if (chance(rng, 0.06)) {
    const value = rng.pick(UPGRADE)
    fields.push(`Upgrade: ${value}`)
    tags.push(`upgrade:${value}`)
  }
  if (chance(rng, 0.06)) {
    const value = rng.pick(EXPECT)
    fields.push(`Expect: ${value}`)
    tags.push(`expect:${value}`)
  }
  // Field syntax (RFC 9112 §5): bytes a field must not hold, space before the colon, obs-fold.
  if (chance(rng, 0.12)) {
    const kind = rng.pick(["value-byte", "name-byte", "space-before-colon", "obs-fold", "empty-name", "no-colon", "long-value", "te-fold", "cl-fold", "many-fields"])
    tags.push(`field:${kind}`)
    const byte = rng.pick(FIELD_BYTES)
    if (kind === "value-byte") fields.push(`X-V: a${byte}b`)
    else if (kind === "name-byte") fields.push(`X${byte}N: 1`)
    else if (kind === "space-before-colon") fields.push(rng.pick(["X-S : 1", "Content-Length : 0", "Transfer-Encoding : chunked", "Host : catalog"]))
    else if (kind === "obs-fold") fields.push("X-F: a", rng.pick([" b", "\tb", " Transfer-Encoding: chunked", " Content-Length: 0"]))
    else if (kind === "empty-name") fields.push(": x")
    else if (kind === "no-colon") fields.push("X-No-Colon")
    else if (kind === "long-value") fields.push(`X-L: ${"l".repeat(rng.pick([100, 8000, 17_000]))}`)
    // Past 32 fields llhttp hands a head over in parts (kOnHeaders); past 1,000 the sidecar keeps the first 1,000.
    else if (kind === "many-fields") for (let i = rng.pick([33, 64, 1001]); i > 1; i--) fields.push(`X-M${i}: ${i}`)
    else if (kind === "te-fold") fields.push("Transfer-Encoding:", " chunked")
    else fields.push("Content-Length:", " 0")
    // At any place among the others.
    const moved = fields.pop()!
    fields.splice(rng.int(0, fields.length), 0, moved)
  }
  let lineEnd = "\r\n"
  const head = [`${method} ${target} ${version}`, ...fields]
  let text = head.map((line) => line + lineEnd).join("") + lineEnd
  if (chance(rng, 0.04)) {
    // One line of the head ends in a bare LF or CR.
    lineEnd = rng.pick(["\n", "\r"])
    const at = rng.int(0, head.length)
    text = head.map((line, i) => line + (i === at ? lineEnd : "\r\n")).join("") + (at === head.length ? lineEnd : "\r\n")
    tags.push(`head-line-end:${JSON.stringify(lineEnd)}`)
  }
  if (chance(rng, 0.03)) {
    text = "\r\n" + text
    tags.push("leading-crlf")
  }
  const bytes = Buffer.from(text + body, "latin1")
  // A few random bytes of framing's alphabet anywhere: what no list foresees.
  if (chance(rng, 0.1)) {
    const flips = rng.int(1, 2)
    for (let i = 0; i < flips; i++) bytes[rng.int(0, bytes.length - 1)] = rng.pick(FLIP_BYTES)
    tags.push("flip")
  }
  return { bytes, tags }
}

/** The request behind every case on its connection: a plain one, answered on its own or not at all. */
export const canary = (id: number): Buffer => Buffer.from(`GET /canary${id} HTTP/1.1\r\nHost: catalog\r\n\r\n`, "latin1")
