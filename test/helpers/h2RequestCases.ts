// The h2 framing fuzz's requests (test/sidecar/h2-framing-fuzz.test.ts): one case is one raw h2c
// connection to sidecar A, a few streams interleaved frame by frame, each a request that is sound or
// broken in one known way, and what RFC 9113 says of it: sound (it reaches the app whole, as sent),
// malformed at its head (§8.1.1, §8.2, §8.3: it never reaches the app), malformed or cut at its end
// (a content-length the DATA disagrees with, trailers with a pseudo-header, a RST_STREAM mid-body:
// its head may have gone on, never its end), killed by a stream error that is no malformation
// (WINDOW_UPDATE 0, PRIORITY on itself: either way), or a connection error (§5.4.1: the canary then
// goes on a fresh connection). Every request's path names its case and stream, so the app's view
// maps back to what the client sent.
import { ErrorCode, Flag, frame, HpackEncoder, type FieldCoding, headFrames, priority, rst, settings, Type, windowUpdate } from "./h2Wire.ts"
import type { Prng } from "./prng.ts"

export type Verdict =
  /** Reaches the app whole, exactly as sent. */
  | "sound"
  /** Malformed at its head: never reaches the app (the client gets RST_STREAM or a 400). */
  | "refused"
  /** Broken or cut after its head: may reach the app, never whole. */
  | "cut"
  /** Anything but a whole request other than sent (a stream error that is no malformation, a reset after its END_STREAM). */
  | "either"

export interface PlannedStream {
  readonly id: number
  readonly verdict: Verdict
  readonly method: string
  readonly path: string
  /** Its regular fields as sent (no pseudo-headers), in order. */
  readonly fields: ReadonlyArray<readonly [string, string]>
  readonly body: Buffer
  readonly trailers: ReadonlyArray<readonly [string, string]> | undefined
  readonly tags: ReadonlyArray<string>
}

export interface H2Case {
  readonly id: number
  readonly frames: ReadonlyArray<Buffer>
  readonly streams: ReadonlyArray<PlannedStream>
  /** A connection error is sent (§5.4.1): A must end the connection; the canary goes on a fresh one. */
  readonly connectionError: boolean
  /** A connection error may follow (DATA on a closed stream: STREAM_CLOSED either way, §5.1): the canary goes on a fresh connection. */
  readonly mayEnd: boolean
  /** The canary's stream id on this connection (unused when the canary goes on a fresh one). */
  readonly canaryId: number
  readonly tags: ReadonlyArray<string>
}

export const casePath = (caseId: number, stream: number): string => `/h2f/${caseId}/${stream}`
export const canaryPath = (caseId: number): string => `/h2f/${caseId}/canary`

const TOKEN = "abcdefghijklmnopqrstuvwxyz0123456789-"
const token = (rng: Prng, min: number, max: number): string => Array.from({ length: rng.int(min, max) }, () => rng.pick([...TOKEN])).join("")

type Field = readonly [string, string]

/** One stream's request: its head fields (pseudo-headers included, as they go out), body parts, trailers, how it ends. */
interface Draft {
  id: number
  verdict: Verdict
  method: string
  path: string
  pseudo: Array<Field>
  fields: Array<Field>
  body: Buffer
  /** DATA frames' sizes (the body cut so); a padded DATA now and then. */
  parts: Array<number>
  /** Content-length sent, if any, in place of the body's own. */
  trailers: Array<Field> | undefined
  /** How the stream ends: END_STREAM; RST_STREAM after its head, after some DATA; never (open when the client goes). */
  end: "end" | "rst-head" | "rst-data" | "open"
  /** Its head split into HEADERS and CONTINUATION frames of at most this many bytes (0: one frame). */
  split: number
  /** Frames of other kinds sent right after its head (WINDOW_UPDATE 0, PRIORITY on itself). */
  after: Array<Buffer>
  /** Fields sent that must never reach the app (nghttp2 drops them). */
  dropped: Array<Field>
  /** A stream error the connection may not survive (§5.4: an endpoint may end the connection for one). */
  mayEnd: boolean
  tags: Array<string>
}

const CONNECTION_FIELDS: ReadonlyArray<Field> = [["connection", "close"], ["keep-alive", "timeout=5"], ["proxy-connection", "keep-alive"], ["transfer-encoding", "chunked"], ["upgrade", "websocket"], ["te", "gzip"]]
/** Trailers that make a request malformed (§8.1: pseudo-headers; §8.2.1: upper case). */
const MALFORMED_TRAILERS: ReadonlyArray<Field> = [[":path", "/x"], [":method", "GET"], ["Upper-Trailer", "x"]]
/** Trailers RFC 9110 §6.5.1 forbids, which an intermediary must not pass on as trailers (no malformation in HTTP/2). */
const FRAMING_TRAILERS: ReadonlyArray<Field> = [["content-length", "0"], ["transfer-encoding", "chunked"], ["host", "elsewhere"]]

const grpcMessage = (rng: Prng, lie: boolean): Buffer => {
  const message = Buffer.from(token(rng, 0, 40), "latin1")
  const prefix = Buffer.alloc(5)
  prefix[0] = 0
  prefix.writeUInt32BE(lie ? message.length + rng.pick([-1, 1, 7, 1000, 0x7fffffff - message.length]) : message.length, 1)
  return Buffer.concat([prefix, message])
}

/** A sound request, then one mutation (now and then two) that decides its verdict. */
const draft = (rng: Prng, caseId: number, id: number, grpcApp: boolean): Draft => {
  const path = casePath(caseId, id)
  const grpc = grpcApp && rng.next() < 0.3
  const method = grpc ? "POST" : rng.pick(["GET", "GET", "POST", "POST", "PUT", "DELETE"])
  const withBody = method === "POST" || method === "PUT"
  const body = !withBody ? Buffer.alloc(0) : grpc ? Buffer.concat(Array.from({ length: rng.int(1, 2) }, () => grpcMessage(rng, false))) : Buffer.from(rng.next() < 0.2 ? rng.bytes(rng.int(0, 3000)) : Buffer.from(token(rng, 0, 60)))
  const fields: Array<Field> = []
  for (let i = rng.int(0, 4); i > 0; i--) fields.push([`x-f-${token(rng, 1, 6)}`, token(rng, 0, 30)])
  if (grpc) fields.push(["content-type", "application/grpc"], ["te", "trailers"])
  else if (withBody && rng.next() < 0.5) fields.push(["content-length", String(body.length)])
  const d: Draft = {
    id, verdict: "sound", method, path,
    pseudo: [[":method", method], [":scheme", "http"], [":authority", "catalog"], [":path", path]],
    fields, body, parts: [], trailers: undefined, end: "end", split: 0, after: [], dropped: [], mayEnd: false, tags: grpc ? ["grpc"] : []
  }
  const mutations = rng.next() < 0.15 ? 2 : 1
  for (let m = 0; m < mutations; m++) mutate(rng, d, withBody, grpc)
  // The body in DATA frames of random sizes.
  let left = d.body.length
  while (left > 0) {
    const size = Math.min(left, rng.int(1, 4000))
    d.parts.push(size)
    left -= size
  }
  return d
}

/** A verdict only worsens: a sound request with a mutation that refuses it is refused, one already refused stays so. */
const worse = (d: Draft, verdict: Verdict): void => {
  const rank: Record<Verdict, number> = { sound: 0, either: 1, cut: 2, refused: 3 }
  if (rank[verdict] > rank[d.verdict]) d.verdict = verdict
}

const mutate = (rng: Prng, d: Draft, withBody: boolean, grpc: boolean): void => {
  const kind = rng.int(0, 29)
  const tag = (name: string, verdict: Verdict): void => {
    d.tags.push(name)
    worse(d, verdict)
  }
  switch (kind) {
    case 0: case 1: case 2: return tag("plain", "sound")
    case 3: {
      // No :authority (nor Host) is no malformation (§8.3.1), only a request A cannot route.
      const [gone] = d.pseudo.splice(rng.int(0, d.pseudo.length - 1), 1)
      // Every copy of it (a duplicated one would otherwise be whole again).
      d.pseudo = d.pseudo.filter(([n]) => n !== gone![0])
      return tag(`pseudo-missing${gone![0]}`, gone![0] === ":authority" ? "either" : "refused")
    }
    case 4: { const p = rng.pick(d.pseudo); d.pseudo.push([p[0], p[0] === ":path" ? "/other" : p[1]]); return tag("pseudo-duplicated", "refused") }
    case 5: d.fields.push(["x-before", "1"], ...d.pseudo.splice(rng.int(0, d.pseudo.length - 1), 1)); return tag("pseudo-after-field", "refused")
    case 6: d.pseudo.push([rng.pick([":foo", ":status", ":protocol"]), "x"]); return tag("pseudo-unknown", "refused")
    case 7: d.fields.push([rng.pick(["X-Upper", "Content-Type", "x-mIxed"]), "v"]); return tag("uppercase-name", "refused")
    case 8: d.fields.push(rng.pick(CONNECTION_FIELDS)); return tag("connection-field", "refused")
    case 9: d.fields.push(["te", "trailers"]); return tag("te-trailers", "sound")
    case 10: {
      const at = rng.int(0, 1)
      const bad = rng.pick(["\0", "\r", "\n", "\r\n"])
      // RFC 9113 §8.2.1 makes the request malformed; node's nghttp2 drops the field instead (its
      // invalid-header callback) and the request goes on: either, so long as the field never arrives.
      d.dropped.push(at === 0 ? [`x-bad${bad}name`, "v"] : ["x-bad-value", `a${bad}b`])
      return tag("ctl-in-field", "either")
    }
    case 11: d.dropped.push(["x-lead", rng.pick([" v", "v ", "\tv"])]); return tag("ws-in-value", "either")
    case 12: {
      if (!withBody) return tag("plain", "sound")
      removeField(d, "content-length")
      d.fields.push(["content-length", String(d.body.length + rng.pick([1, 5, 100]))])
      return tag("content-length-more", "cut")
    }
    case 13: {
      if (!withBody || d.body.length === 0) return tag("plain", "sound")
      removeField(d, "content-length")
      d.fields.push(["content-length", String(rng.int(0, d.body.length - 1))])
      // node's nghttp2 ends the whole connection for DATA past the content-length (GOAWAY INTERNAL_ERROR), not the stream alone.
      d.mayEnd = true
      return tag("content-length-less", "cut")
    }
    case 14: {
      removeField(d, "content-length")
      d.fields.push(["content-length", String(d.body.length)], ["content-length", String(d.body.length + 1)])
      return tag("content-length-two", "refused")
    }
    case 15: d.trailers ??= [["x-trailer", token(rng, 0, 10)]]; return tag("trailers", "sound")
    case 16: {
      if (rng.next() < 0.5) {
        d.trailers = [["x-t", "1"], rng.pick(MALFORMED_TRAILERS)]
        return tag("trailers-malformed", "cut")
      }
      d.trailers = [["x-t", "1"], rng.pick(FRAMING_TRAILERS)]
      // Refused (nghttp2 resets a stream whose trailers carry content-length) or passed on without them.
      return tag("trailers-framing", "either")
    }
    case 17: d.split = rng.int(1, 40); return tag("continuation", "sound")
    case 18: {
      // A head larger than a frame (16 KiB), over CONTINUATION: within or past what A takes.
      for (let i = rng.int(1, 6); i > 0; i--) d.fields.push([`x-big-${i}`, "v".repeat(rng.int(1000, 9000))])
      d.split = 16384
      return tag("huge-head", "either")
    }
    case 19: d.end = "rst-head"; return tag("rst-after-headers", withBody ? "cut" : "either")
    case 20: {
      if (!withBody || d.body.length < 2) return tag("plain", "sound")
      d.end = "rst-data"
      return tag("rst-after-data", "cut")
    }
    case 21: {
      if (!withBody) return tag("plain", "sound")
      d.end = "open"
      return tag("left-open", "cut")
    }
    // Stream errors (§6.9, §6.9.1, §5.3.1) that are no malformation; nghttp2 makes the first two connection errors, as §5.4 allows.
    case 22: d.after.push(windowUpdate(d.id, 0)); d.mayEnd = true; return tag("window-update-zero", "either")
    case 23: d.after.push(windowUpdate(d.id, 0x7fffffff), windowUpdate(d.id, 0x7fffffff)); d.mayEnd = true; return tag("window-overflow", "either")
    case 24: d.after.push(priority(d.id, d.id)); d.mayEnd = true; return tag("priority-self", "either")
    case 25: {
      if (!grpc) return tag("plain", "sound")
      d.body = grpcMessage(rng, true)
      return tag("grpc-prefix-lies", "sound")
    }
    case 26: d.fields.push(["host", "elsewhere.example"]); return tag("host-differs", "refused")
    case 27: d.fields.push(["cookie", "a=1"], ["x-mid", "m"], ["cookie", "b=2"]); return tag("cookie-crumbs", "sound")
    case 28: d.pseudo = d.pseudo.map(([n, v]) => (n === ":path" ? [n, rng.pick(["", "x/no-slash", `${v} HTTP/1.1\r\nHost: x`])] : [n, v])); return tag("path-invalid", "refused")
    default: d.fields.push(["x-dup", "1"], ["x-dup", "2"], ["x-empty", ""]); return tag("repeated-fields", "sound")
  }
}

const removeField = (d: Draft, name: string): void => {
  d.fields = d.fields.filter(([n]) => n !== name)
}

/** DATA, padded now and then (the padding is no part of the body). */
const dataFrame = (rng: Prng, id: number, bytes: Buffer, end: boolean): Buffer => {
  const flags = end ? Flag.endStream : 0
  if (rng.next() < 0.8) return frame(Type.data, flags, id, bytes)
  const pad = rng.int(0, 20)
  return frame(Type.data, flags | Flag.padded, id, Buffer.concat([Buffer.from([pad]), bytes, Buffer.alloc(pad)]))
}

/** Every stream's frames in order, interleaved among streams at random (a head's frames stay together, §6.10). */
const streamFrames = (rng: Prng, d: Draft, encoder: HpackEncoder, coding: () => FieldCoding): Array<() => Array<Buffer>> => {
  const noBody = d.body.length === 0 && d.trailers === undefined && d.end === "end"
  // Header blocks are encoded as they go out: the dynamic table follows the order the sidecar decodes them in.
  const groups: Array<() => Array<Buffer>> = [() => [...headFrames(d.id, encoder.block([...d.pseudo, ...d.fields, ...d.dropped], coding), d.split, noBody), ...d.after]]
  if (d.end === "rst-head") {
    groups.push(() => [rst(d.id, ErrorCode.cancel)])
    return groups
  }
  let at = 0
  const cutAt = d.end === "rst-data" ? rng.int(1, d.body.length - 1) : Infinity
  for (const size of d.parts) {
    if (at >= cutAt) break
    const bytes = d.body.subarray(at, Math.min(at + size, cutAt))
    at += bytes.length
    const last = at === d.body.length && d.trailers === undefined && d.end === "end"
    const data = dataFrame(rng, d.id, bytes, last)
    groups.push(() => [data])
  }
  if (d.end === "rst-data") groups.push(() => [rst(d.id, ErrorCode.cancel)])
  else if (d.end === "end" && d.trailers !== undefined) groups.push(() => headFrames(d.id, encoder.block(d.trailers!, coding), 0, true))
  else if (d.end === "end" && d.body.length === 0 && !noBody) groups.push(() => [frame(Type.data, Flag.endStream, d.id)])
  return groups
}

/** A GET of `path` in literals (no dynamic table entry: its place in the table's order does not matter). */
const literalGet = (path: string): Buffer => new HpackEncoder().block([[":method", "GET"], [":scheme", "http"], [":authority", "catalog"], [":path", path]], () => ({ index: false, huffman: false }))

/** The connection errors a case may end with (§5.4.1), each as the frames that make it. */
const connectionError = (rng: Prng, caseId: number, nextId: number, lastId: number): { frames: Array<Buffer>; tag: string; sent?: Array<readonly [number, Verdict]>; lenient?: boolean } => {
  const get = (id: number): Buffer => literalGet(casePath(caseId, id))
  switch (rng.int(0, 7)) {
    case 0: return { frames: [frame(Type.data, 0, nextId + 10, Buffer.from("idle"))], tag: "data-on-idle-stream" }
    // A stream opened past the next id, then the id skipped: lower than one opened, never used (§5.1.1).
    case 1: return { frames: [frame(Type.headers, Flag.endStream | Flag.endHeaders, nextId + 2, get(nextId + 2)), frame(Type.headers, Flag.endStream | Flag.endHeaders, nextId, get(nextId))], tag: "stream-id-backwards", sent: [[nextId + 2, "either"], [nextId, "refused"]], lenient: true }
    case 2: return { frames: [frame(Type.headers, Flag.endStream | Flag.endHeaders, nextId + 1, get(nextId + 1))], tag: "stream-id-even", sent: [[nextId + 1, "refused"]] }
    case 3: return { frames: [windowUpdate(0, 0)], tag: "window-update-zero-connection" }
    case 4: return { frames: [windowUpdate(0, 0x7fffffff), windowUpdate(0, 0x7fffffff)], tag: "window-overflow-connection" }
    case 5: return { frames: [settings([rng.pick([[2, 2], [4, 0x80000000], [5, 100], [5, 0x1000000]] as const)])], tag: "settings-bad-value" }
    case 6: return { frames: [frame(Type.headers, 0, nextId, Buffer.from([0x82, 0x86])), frame(Type.data, 0, lastId, Buffer.from("x"))], tag: "continuation-interrupted" }
    // Index 254: past the static table and any dynamic table a case fills (§2.3.3: a COMPRESSION_ERROR).
    default: return { frames: [frame(Type.headers, Flag.endHeaders, nextId, Buffer.from([0xff, 0x7f]))], tag: "hpack-index-unknown" }
  }
}

/**
 * One case: 1 to 4 requests (the grpc app's cases now and then gRPC calls), now and then a burst of
 * requests each reset right after its head (CVE-2023-44487's shape), now and then DATA on a stream
 * its END_STREAM closed, now and then a connection error at the end. `grpcApp`: the app behind B
 * speaks h2c.
 */
export const h2Case = (rng: Prng, caseId: number, grpcApp: boolean): H2Case => {
  const encoder = new HpackEncoder()
  const huffmanCase = rng.next() < 0.3
  const indexCase = rng.next() < 0.3
  const coding = (): FieldCoding => ({ index: indexCase && rng.next() < 0.7, huffman: huffmanCase && rng.next() < 0.7 })
  const tags: Array<string> = []
  if (huffmanCase) tags.push("huffman")
  if (indexCase) tags.push("indexed")
  const drafts: Array<Draft> = []
  let id = 1
  for (let n = rng.int(1, 4); n > 0; n--, id += 2) drafts.push(draft(rng, caseId, id, grpcApp))
  const planned: Array<PlannedStream> = []
  // Each stream's frames, interleaved: a random stream's next group each time.
  const queues = drafts.map((d) => streamFrames(rng, d, encoder, coding))
  const frames: Array<Buffer> = []
  if (rng.next() < 0.1) frames.push(settings([[4, rng.int(1024, 100_000)], [3, rng.int(1, 200)], [1, rng.int(0, 8192)]]))
  // Streams open in the order of their ids (§5.1.1: a lower one after a higher is a connection error).
  let started = 0
  while (queues.some((q) => q.length > 0)) {
    const open = queues.filter((q, i) => q.length > 0 && i <= started)
    const at = queues.indexOf(rng.pick(open))
    if (at === started) started++
    frames.push(...queues[at]!.shift()!())
  }
  for (const d of drafts) planned.push({ id: d.id, verdict: d.verdict, method: d.method, path: d.path, fields: d.fields, body: d.body, trailers: d.trailers, tags: d.tags })
  // Rapid reset: HEADERS with END_STREAM and RST_STREAM at once, again and again.
  if (rng.next() < 0.1) {
    tags.push("rapid-reset")
    for (let n = rng.int(20, 200); n > 0; n--, id += 2) {
      const path = casePath(caseId, id)
      frames.push(frame(Type.headers, Flag.endStream | Flag.endHeaders, id, encoder.block([[":method", "GET"], [":scheme", "http"], [":authority", "catalog"], [":path", path]], coding)), rst(id, ErrorCode.cancel))
      planned.push({ id, verdict: "either", method: "GET", path, fields: [], body: Buffer.alloc(0), trailers: undefined, tags: ["rapid-reset"] })
    }
  }
  let mayEnd = drafts.some((d) => d.mayEnd)
  const ended = drafts.filter((d) => d.end === "end")
  if (ended.length > 0 && rng.next() < 0.08) {
    tags.push("data-on-closed-stream")
    mayEnd = true
    frames.push(frame(Type.data, Flag.endStream, rng.pick(ended).id, Buffer.from("late")))
  }
  let connError = false
  if (rng.next() < 0.15) {
    const made = connectionError(rng, caseId, id, id - 2)
    tags.push(made.tag)
    frames.push(...made.frames)
    for (const [sid, verdict] of made.sent ?? []) planned.push({ id: sid, verdict, method: "GET", path: casePath(caseId, sid), fields: [], body: Buffer.alloc(0), trailers: undefined, tags: [made.tag] })
    // nghttp2 cannot tell a stream id below the highest from a closed stream it forgot: it ignores the HEADERS (§5.1.1 asks for a connection error).
    if (made.lenient === true) mayEnd = true
    else connError = true
  }
  for (const d of drafts) for (const t of d.tags) tags.push(`${d.id}:${t}`)
  return { id: caseId, frames, streams: planned, connectionError: connError, mayEnd, canaryId: id, tags }
}

/** The canary's head on a connection whose encoder state is unknown to it: literals only, never indexed. */
export const canaryHead = (caseId: number, id: number): Buffer =>
  frame(Type.headers, Flag.endStream | Flag.endHeaders, id, new HpackEncoder().block([[":method", "GET"], [":scheme", "http"], [":authority", "catalog"], [":path", canaryPath(caseId)]], () => ({ index: false, huffman: false })))
