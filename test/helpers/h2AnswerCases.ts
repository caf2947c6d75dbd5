// The h2 answer fuzz's answers (test/sidecar/h2-answer-fuzz.test.ts): one case is 1 to 4 concurrent
// calls from a node:http2 caller through A and B to the raw h2c app (h2AnswerApp.ts), each call's
// answer written frame by frame, sound or broken in one labelled way, the streams' frames
// interleaved, now and then a connection-level act of the app's among them (GOAWAY, a window
// overflow, bad SETTINGS, a PING flood, an answer on a stream B never opened). Each answer carries
// what a caller must get if it passes (`expect`) and whether it may (`verdict`), by RFC 9113.
import { ErrorCode, Flag, type FieldCoding, frame, headFrames, HpackEncoder, rst, settings, Type, windowUpdate } from "./h2Wire.ts"
import { type Prng, prng } from "./prng.ts"

export type Field = readonly [string, string]

export type AnswerVerdict =
  /** The app's answer, whole: its status, fields (less hop-by-hop ones), body bytes, trailers. */
  | "whole"
  /** Malformed or broken off (§8.1, §8.1.1, §8.3.2): a clean error, never passed on. */
  | "error"
  /** Either, and whole only as `expect` says (a field the peer may drop never arrives as sent). */
  | "either"

/** What writing a stream's frames needs: the stream id B gave the call, the connection's encoder and the ids B opened there. */
export interface WriteContext {
  readonly id: number
  readonly encoder: HpackEncoder
  readonly coding: () => FieldCoding
  /** B's stream ids of this case's calls on this connection (lowest first). */
  readonly caseIds: ReadonlyArray<number>
  /** The highest stream id B opened on this connection so far. */
  readonly highest: number
}

export interface PlannedAnswer {
  readonly k: number
  readonly grpc: boolean
  verdict: AnswerVerdict
  readonly expect: { readonly status: number; readonly fields: ReadonlyArray<Field>; readonly body: Buffer; readonly trailers: ReadonlyArray<Field> | undefined }
  /** Fields written that must never reach the caller as written (nghttp2 drops them; hop-by-hop). */
  readonly dropped: ReadonlyArray<Field>
  /** Groups of frames in the order they go out (a head with its CONTINUATION frames is one group). */
  readonly groups: ReadonlyArray<(ctx: WriteContext) => Array<Buffer>>
  /** The answer as a sound one, for a retry of its call (a stream the app's GOAWAY left unprocessed). */
  readonly sound: (ctx: WriteContext) => Array<Buffer>
  readonly tags: Array<string>
  /** Not processed by the app (above its GOAWAY's last stream id, §6.8): if not whole (retried elsewhere), a clean error saying so (app_unavailable). */
  readonly unprocessed?: boolean
}

/** A connection-level act among the answers' frames. */
export interface ConnectionAct {
  readonly tag: string
  readonly frames: (ctx: WriteContext) => Array<Buffer>
  /** B must end the session (a connection error, §5.4.1) and open no stream on it again. */
  readonly fatal: boolean
  /** A GOAWAY of the app's: streams above `lastStream` get no more frames (then retried, or refused); the app closes after the case. */
  readonly goaway?: { readonly code: number }
}

export interface AnswerCase {
  readonly id: number
  readonly answers: ReadonlyArray<PlannedAnswer>
  /** Where the act goes among the groups: after this many of them. */
  readonly act: { readonly at: number; readonly act: ConnectionAct } | undefined
  /** Interleaving: for each group written, which answer's next group (the act's place aside). */
  readonly order: ReadonlyArray<number>
  readonly huffman: boolean
  readonly indexed: boolean
  /** A call's answer may end the connection before the act (MAY_END): what follows may never be read. */
  readonly mayEnd: boolean
  /** The app pauses between groups now and then (a few ms): answers B streams to A, head first, not held whole. */
  readonly paced: boolean
  readonly tags: ReadonlyArray<string>
}

/** A call's request body: names its case and call, so the app maps B's stream to its plan. */
export const callTag = (caseId: number, k: number): string => `h2a/${caseId}/${k}`
export const canaryTag = (caseId: number): string => `h2a/${caseId}/canary`

const TOKEN = "abcdefghijklmnopqrstuvwxyz0123456789-"
const token = (rng: Prng, min: number, max: number): string => Array.from({ length: rng.int(min, max) }, () => rng.pick([...TOKEN])).join("")

/** A gRPC message: its 5-byte prefix, then the bytes. */
export const grpcMessage = (bytes: Buffer): Buffer => {
  const prefix = Buffer.alloc(5)
  prefix.writeUInt32BE(bytes.length, 1)
  return Buffer.concat([prefix, bytes])
}

/** The most B takes in a frame (its SETTINGS_MAX_FRAME_SIZE, RFC 9113's default): a longer head goes on in CONTINUATION frames. */
const MAX_FRAME = 16_384

/** What paddedHead adds to the block: the pad length (1), the PRIORITY fields (5), the padding (7). */
const PADDED_HEAD_EXTRA = 13
/** A head in one HEADERS frame, PADDED and with PRIORITY (§6.2): pad length, dependency, weight, the block, padding. */
const paddedHead = (id: number, encoded: Buffer, endStream: boolean): Buffer =>
  frame(Type.headers, Flag.endHeaders | Flag.padded | Flag.priority | (endStream ? Flag.endStream : 0), id, Buffer.concat([Buffer.from([7, 0, 0, 0, 0, 15]), encoded, Buffer.alloc(7)]))

const block = (ctx: WriteContext, fields: ReadonlyArray<Field>): Buffer => ctx.encoder.block(fields, ctx.coding)

/** Connection-specific fields (§8.2.2) an answer must not carry, nor the mesh pass on. */
const CONNECTION_FIELDS: ReadonlyArray<Field> = [["connection", "close"], ["transfer-encoding", "chunked"], ["keep-alive", "timeout=5"], ["upgrade", "h2c"], ["proxy-connection", "keep-alive"]]
/** Trailers RFC 9110 §6.5.1 forbids (framing, routing): never passed on as trailers. */
const FORBIDDEN_TRAILERS: ReadonlyArray<Field> = [["content-length", "3"], ["transfer-encoding", "chunked"], ["host", "elsewhere"], ["connection", "close"], ["te", "trailers"], ["trailer", "x"]]

/** Draft of one answer before its frames: mutations change it. */
interface Draft {
  k: number
  grpc: boolean
  verdict: AnswerVerdict
  /** Pseudo-headers and fields of the final head, in order as written. */
  head: Array<Field>
  /** Informational heads before it. */
  informational: Array<Array<Field>>
  body: Buffer
  trailers: Array<Field> | undefined
  /** What reaches a caller of a whole answer, when it differs from the head's fields. */
  expectFields: Array<Field> | undefined
  expectTrailers: Array<Field> | undefined
  dropped: Array<Field>
  /** How it ends: END_STREAM; RST_STREAM(code) after some DATA. */
  rstCode: number | undefined
  /** Frames after its END_STREAM. */
  afterEnd: Array<(ctx: WriteContext) => Array<Buffer>>
  /** Right after its head. */
  afterHead: Array<(ctx: WriteContext) => Array<Buffer>>
  /** Frames before its head (DATA, a 1xx head ending the stream). */
  beforeHead: Array<(ctx: WriteContext) => Array<Buffer>>
  /** Its trailers without END_STREAM (an empty DATA frame ends it after them). */
  trailersOpen: boolean
  /** Its head's HEADERS frame PADDED and PRIORITY-flagged (neither part of the block). */
  headPadded: boolean
  tags: Array<string>
}

const worse = (d: Draft, verdict: AnswerVerdict): void => {
  const rank: Record<AnswerVerdict, number> = { whole: 0, either: 1, error: 2 }
  if (rank[verdict] > rank[d.verdict]) d.verdict = verdict
}

const draft = (rng: Prng, caseId: number, k: number, grpc: boolean, mutated = true): Draft => {
  // Now and then past what B holds to send back whole (64 KiB): it streams, head first, under flow control.
  const large = mutated && rng.next() < 0.15
  const text = `${callTag(caseId, k)} ${token(rng, 0, 40)}`
  const payload = large ? Buffer.concat([Buffer.from(text), rng.bytes(rng.int(70_000, 250_000))]) : grpc ? Buffer.from(text) : rng.next() < 0.15 ? rng.bytes(rng.int(0, 3000)) : Buffer.from(`${text}${token(rng, 0, 20)}`)
  const body = grpc ? grpcMessage(payload) : payload
  const head: Array<Field> = [[":status", grpc ? "200" : rng.pick(["200", "200", "201", "404", "500", "299"])]]
  head.push(["x-answer-of", callTag(caseId, k)])
  for (let i = rng.int(0, 3); i > 0; i--) head.push([`x-a-${token(rng, 1, 6)}`, token(rng, 0, 30)])
  if (grpc) head.push(["content-type", "application/grpc"])
  else if (rng.next() < 0.5) head.push(["content-length", String(body.length)])
  const trailers: Array<Field> | undefined = grpc ? [["grpc-status", "0"]] : rng.next() < 0.2 ? [["x-t-answer", token(rng, 0, 10)]] : undefined
  const d: Draft = { k, grpc, verdict: "whole", head, informational: [], body, trailers, expectFields: undefined, expectTrailers: undefined, dropped: [], rstCode: undefined, afterEnd: [], afterHead: [], beforeHead: [], trailersOpen: false, headPadded: false, tags: grpc ? ["grpc"] : [] }
  if (large) d.tags.push("large")
  if (mutated) mutate(rng, d, grpc)
  else d.tags.push("sound")
  return d
}

const setStatus = (d: Draft, value: string): void => {
  d.head = d.head.map(([n, v]) => (n === ":status" ? [n, value] : [n, v]))
}

const withoutField = (fields: Array<Field>, name: string): Array<Field> => fields.filter(([n]) => n !== name)

const mutate = (rng: Prng, d: Draft, grpc: boolean): void => {
  const tag = (name: string, verdict: AnswerVerdict): void => {
    d.tags.push(name)
    worse(d, verdict)
  }
  switch (rng.int(0, 32)) {
    case 0: case 1: case 2: case 3: return tag("sound", "whole")
    case 4: d.head = d.head.filter(([n]) => n !== ":status"); return tag("status-missing", "error")
    case 5: {
      // Informational heads before the final one (§8.1: any number; a 103 with fields). Never passed on as the answer.
      for (let i = rng.int(1, 3); i > 0; i--) d.informational.push([[":status", rng.pick(["100", "103", "102"])], ["link", "</x>; rel=preload"]])
      return tag("status-1xx-repeated", "whole")
    }
    case 6: setStatus(d, "101"); return tag("status-101", "error")
    case 7: setStatus(d, rng.pick(["abc", "2OO", "20", " 200", "200 ", "+20", "0x1"])); return tag("status-non-numeric", "error")
    case 8: setStatus(d, rng.pick(["600", "999", "099", "1000", "000", "99"])); return tag("status-out-of-range", "error")
    case 9: {
      const [status] = d.head.splice(0, 1)
      d.head.splice(rng.int(1, d.head.length), 0, status!)
      return tag("pseudo-after-field", "error")
    }
    case 10: d.head.push([rng.pick([":path", ":method", ":authority", ":foo"]), "/x"]); return tag("pseudo-in-answer", "error")
    case 11: {
      if (d.trailers === undefined) d.trailers = [["x-t", "1"]]
      d.trailers.splice(rng.int(0, d.trailers.length), 0, [rng.pick([":status", ":path", ":foo"]), "200"])
      return tag("pseudo-in-trailers", "error")
    }
    case 12: {
      const field: Field = [rng.pick(["X-Upper", "Content-Language", "x-mIxed"]), "v"]
      d.head.push(field)
      d.dropped.push(field)
      return tag("uppercase-name", "either")
    }
    case 13: {
      const field = rng.pick(CONNECTION_FIELDS)
      d.head.push(field)
      d.dropped.push(field)
      return tag("connection-field", "either")
    }
    case 14: {
      // Frames after END_STREAM (§5.1: STREAM_CLOSED, a stream error or, once closed, a connection error): the answer before them stands or fails cleanly.
      const extra = rng.int(0, 2)
      d.afterEnd.push((ctx) => [extra === 0 ? frame(Type.data, 0, ctx.id, Buffer.from("after the end")) : extra === 1 ? frame(Type.data, Flag.endStream, ctx.id, Buffer.from("x")) : frame(Type.headers, Flag.endHeaders | Flag.endStream, ctx.id, block(ctx, [["x-after", "end"]]))])
      return tag(extra === 2 ? "fields-after-end-stream" : "data-after-end-stream", "either")
    }
    case 15: {
      d.head = withoutField(d.head, "content-length")
      d.head.push(["content-length", String(Math.max(0, d.body.length - rng.int(1, 5)))])
      if (d.body.length === 0) d.body = Buffer.from("xyz")
      return tag("data-beyond-content-length", "error")
    }
    case 16: {
      d.head = withoutField(d.head, "content-length")
      d.head.push(["content-length", String(d.body.length + rng.pick([1, 7, 1000]))])
      return tag("data-short-of-content-length", "error")
    }
    case 17: {
      const forbidden = rng.pick(FORBIDDEN_TRAILERS)
      d.trailers = [...(d.trailers ?? [["x-t", "1"]]), forbidden]
      d.dropped.push(forbidden)
      d.expectTrailers = d.trailers.filter((f) => f !== forbidden)
      return tag("trailers-forbidden-field", "either")
    }
    case 18: {
      d.rstCode = rng.pick([ErrorCode.noError, ErrorCode.protocol, ErrorCode.internal, ErrorCode.flowControl, 4, ErrorCode.streamClosed, ErrorCode.frameSize, ErrorCode.refusedStream, ErrorCode.cancel, ErrorCode.compression, 10, ErrorCode.enhanceYourCalm, 12, 13, 0xff])
      return tag(`rst-mid-answer-${d.rstCode}`, "error")
    }
    case 19: {
      const total = rng.pick([20_000, 40_000, 70_000, 100_000])
      for (let i = 0, size = 0; size < total; i++, size += 4000) d.head.push([`x-big-${i}`, "v".repeat(4000)])
      return tag(total > 64 * 1024 ? "huge-head-over-64k" : "huge-head-over-16k", "either")
    }
    case 20: {
      if (!grpc) return tag("sound", "whole")
      const status: Field = ["grpc-status", rng.pick(["17", "99", "-1", "4294967296", "abc", "", "0x0", " 0", "0 "])]
      d.trailers = [status]
      // Edge whitespace: nghttp2 drops the field (§8.2.1 says malformed), the trailers come empty.
      if (status[1].trim() !== status[1]) {
        d.dropped.push(status)
        d.expectTrailers = []
      }
      return tag("grpc-status-bad", "either")
    }
    case 21: {
      if (!grpc) return tag("sound", "whole")
      d.trailers = rng.next() < 0.5 ? [["x-t", "1"]] : undefined
      return tag("grpc-status-missing", "either")
    }
    case 22: {
      if (!grpc) return tag("sound", "whole")
      const bad: Field = ["grpc-message", `bad${rng.pick(["\r", "\n", "\0", "\r\n"])}message`]
      d.trailers = [["grpc-status", "13"], bad]
      d.dropped.push(bad)
      d.expectTrailers = [["grpc-status", "13"]]
      return tag("grpc-message-ctl", "either")
    }
    case 23: {
      if (!grpc) return tag("sound", "whole")
      d.trailers = [["grpc-status", rng.pick(["3", "13", "5"])], ["grpc-message", rng.pick(["caf%C3%A9", "100%25", "%0D%0Ainjected: x", "%", "%zz", "%00"])]]
      return tag("grpc-message-percent", "whole")
    }
    case 24: {
      // A stream window past 2^31-1 (§6.9.1: a stream error FLOW_CONTROL_ERROR; nghttp2 may end the connection).
      d.afterHead.push((ctx) => [windowUpdate(ctx.id, 0x7fffffff), windowUpdate(ctx.id, 0x7fffffff)])
      return tag("window-overflow-stream", "error")
    }
    case 25: {
      // A DATA frame padded, and one empty: no part of the body.
      return tag("padded-and-empty-data", "whole")
    }
    case 26: {
      if (!grpc) return tag("sound", "whole")
      // Trailers-only: the status in the head, no DATA (gRPC's error answer).
      d.head.push(["grpc-status", rng.pick(["5", "7", "14"])], ["grpc-message", "gone"])
      d.body = Buffer.alloc(0)
      d.trailers = undefined
      return tag("grpc-trailers-only", "whole")
    }
    // §8.1: DATA before the head, an informational head ending the stream, trailers not ending it: malformed.
    case 28: d.beforeHead.push((ctx) => [frame(Type.data, 0, ctx.id, Buffer.from("early"))]); return tag("data-before-head", "error")
    case 29: d.beforeHead.push((ctx) => [frame(Type.headers, Flag.endHeaders | Flag.endStream, ctx.id, block(ctx, [[":status", "103"]]))]); return tag("status-1xx-end-stream", "error")
    case 30: d.trailers = [...(d.trailers ?? [["x-t", "1"]])]; d.trailersOpen = true; return tag("trailers-no-end-stream", "error")
    case 31: d.headPadded = true; return tag("head-padded-priority", "whole")
    case 32: {
      for (let i = rng.int(120, 300); i > 0; i--) d.head.push([`x-m-${i}`, token(rng, 0, 8)])
      return tag("many-fields", "either")
    }
    default: d.head.push(["x-dup", "1"], ["x-dup", "2"], ["x-empty", ""]); return tag("repeated-fields", "whole")
  }
}

/** The answer's frames, a group each (written interleaved with other streams'). */
const answerGroups = (rng: Prng, d: Draft): Array<(ctx: WriteContext) => Array<Buffer>> => {
  const groups: Array<(ctx: WriteContext) => Array<Buffer>> = []
  const head = [...d.head, ...d.dropped.filter((f) => !(d.trailers ?? []).includes(f) && !d.head.includes(f))]
  groups.push(...d.beforeHead)
  for (const info of d.informational) groups.push((ctx) => headFrames(ctx.id, block(ctx, info), MAX_FRAME, false))
  const headOnly = d.body.length === 0 && d.trailers === undefined && d.rstCode === undefined
  groups.push((ctx) => {
    const encoded = block(ctx, head)
    const frames = d.headPadded && encoded.length + PADDED_HEAD_EXTRA <= MAX_FRAME ? [paddedHead(ctx.id, encoded, headOnly)] : headFrames(ctx.id, encoded, MAX_FRAME, headOnly)
    return [...frames, ...d.afterHead.flatMap((f) => f(ctx))]
  })
  if (headOnly) {
    groups.push(...d.afterEnd)
    return groups
  }
  const padded = d.tags.includes("padded-and-empty-data")
  let at = 0
  const cut = d.rstCode === undefined ? d.body.length : rng.int(0, d.body.length)
  while (at < cut) {
    const size = Math.min(cut - at, rng.int(1, d.body.length > 65_536 ? 16_384 : 4000))
    const bytes = d.body.subarray(at, at + size)
    at += size
    const last = at === d.body.length && d.trailers === undefined && d.rstCode === undefined
    const pad = padded && rng.next() < 0.5 ? rng.int(0, 30) : -1
    groups.push((ctx) => [pad < 0 ? frame(Type.data, last ? Flag.endStream : 0, ctx.id, bytes) : frame(Type.data, (last ? Flag.endStream : 0) | Flag.padded, ctx.id, Buffer.concat([Buffer.from([pad]), bytes, Buffer.alloc(pad)]))])
    if (padded && !last) groups.push((ctx) => [frame(Type.data, 0, ctx.id)])
  }
  if (d.rstCode !== undefined) groups.push((ctx) => [rst(ctx.id, d.rstCode!)])
  else if (d.trailers !== undefined) {
    const trailers = d.trailers
    groups.push((ctx) => headFrames(ctx.id, block(ctx, trailers), MAX_FRAME, !d.trailersOpen))
    if (d.trailersOpen) groups.push((ctx) => [frame(Type.data, Flag.endStream, ctx.id)])
  } else if (d.body.length === 0) groups.push((ctx) => [frame(Type.data, Flag.endStream, ctx.id)])
  groups.push(...d.afterEnd)
  return groups
}

const planned = (rng: Prng, d: Draft): PlannedAnswer => {
  const head = d.head.filter(([n]) => !n.startsWith(":"))
  const fields = d.expectFields ?? head.filter((f) => !d.dropped.includes(f))
  return {
    k: d.k, grpc: d.grpc, verdict: d.verdict,
    expect: { status: Number(d.head.find(([n]) => n === ":status")?.[1]), fields, body: d.body, trailers: d.expectTrailers ?? d.trailers },
    dropped: d.dropped, groups: answerGroups(rng, d), sound: soundFrames(d), tags: d.tags
  }
}

/** The sound form of an answer (status 200, its fields and body): what a retried call gets. */
const soundFrames = (d: Draft) => (ctx: WriteContext): Array<Buffer> => {
  const head: Array<Field> = [[":status", "200"], ["x-answer-of", d.head.find(([n]) => n === "x-answer-of")?.[1] ?? "?"]]
  if (d.grpc) head.push(["content-type", "application/grpc"])
  return [frame(Type.headers, Flag.endHeaders, ctx.id, block(ctx, head)), frame(Type.data, d.grpc ? 0 : Flag.endStream, ctx.id, d.body), ...(d.grpc ? [frame(Type.headers, Flag.endHeaders | Flag.endStream, ctx.id, block(ctx, [["grpc-status", "0"]]))] : [])]
}

/** The app's connection-level acts (§5.4.1 connection errors, and some that are none). */
const connectionAct = (rng: Prng): ConnectionAct => {
  switch (rng.int(0, 13)) {
    case 0: case 1: {
      const code = rng.pick([ErrorCode.noError, ErrorCode.noError, ErrorCode.protocol, ErrorCode.internal, ErrorCode.enhanceYourCalm])
      return {
        tag: `goaway-mid-answer-${code}`,
        fatal: true,
        goaway: { code },
        frames: (ctx) => {
          // Below some of the case's open streams: those above it were not processed (§6.8).
          const last = ctx.caseIds.length === 0 ? 0 : ctx.caseIds[rng.int(0, ctx.caseIds.length - 1)]! - 2
          const payload = Buffer.alloc(8 + 5)
          payload.writeUInt32BE(Math.max(0, last), 0)
          payload.writeUInt32BE(code, 4)
          payload.write("fuzz!", 8, "latin1")
          return [frame(Type.goaway, 0, 0, payload)]
        }
      }
    }
    case 2: return { tag: "window-overflow-connection", fatal: true, frames: () => [windowUpdate(0, 0x7fffffff), windowUpdate(0, 0x7fffffff)] }
    case 3: {
      const [id, value] = rng.pick([[2, 2], [4, 0x80000000], [5, 100], [5, 0x1000000]] as const)
      return { tag: `settings-bad-${id}-${value}`, fatal: true, frames: () => [settings([[id, value]])] }
    }
    case 4: return { tag: "settings-bad-length", fatal: true, frames: () => [frame(Type.settings, 0, 0, Buffer.alloc(5))] }
    case 5: return { tag: "settings-on-a-stream", fatal: true, frames: (ctx) => [frame(Type.settings, 0, ctx.caseIds[0] ?? 1, Buffer.alloc(0))] }
    // Unknown settings are ignored (§6.5.2); a larger frame size and table within bounds taken.
    case 6: return { tag: "settings-unknown-and-sound", fatal: false, frames: () => [settings([[0x99, 7], [0x4242, 0xffffffff], [5, 32_768], [1, 8192]])] }
    case 7: return { tag: "ping-flood", fatal: false, frames: () => Array.from({ length: rng.int(200, 900) }, (_, i) => frame(Type.ping, 0, 0, Buffer.from(`ping${String(i).padStart(4, "0")}`))) }
    // RFC 9113 6.7 names no error for a PING ACK nobody sent: B's own HTTP/2 drops it (within its
    // PING budget), where node's client ended the session on it.
    case 8: return { tag: "ping-ack-unsolicited", fatal: false, frames: () => Array.from({ length: rng.int(1, 50) }, () => frame(Type.ping, Flag.ack, 0, Buffer.alloc(8))) }
    case 9: return { tag: "answer-on-even-stream", fatal: true, frames: () => [frame(Type.headers, Flag.endHeaders, 2, Buffer.from([0x88]))] }
    case 10: return { tag: "answer-on-idle-stream", fatal: true, frames: (ctx) => [frame(Type.headers, Flag.endHeaders | Flag.endStream, ctx.highest + 20, Buffer.from([0x88]))] }
    // HPACK the decoder must refuse (RFC 7541 §2.3.3, §4.2, §5.2): a COMPRESSION_ERROR ends the connection.
    case 11: {
      const [tag, bytes] = rng.pick([
        ["hpack-index-unknown", [0xff, 0x7f]],
        ["hpack-table-size-past-settings", [0x3f, 0xe1, 0xff, 0x03]],
        ["hpack-huffman-eos-padding", [0x00, 0x81, 0x00, 0x81, 0x61]]
      ] as const)
      return { tag, fatal: true, frames: (ctx) => [frame(Type.headers, Flag.endHeaders | Flag.endStream, ctx.caseIds[0] ?? 1, Buffer.from(bytes))] }
    }
    case 12: return { tag: "settings-header-table-zero", fatal: false, frames: () => [settings([[1, 0]])] }
    default: return { tag: "continuation-interrupted", fatal: true, frames: (ctx) => [frame(Type.headers, 0, ctx.caseIds[0] ?? 1, Buffer.from([0x88])), frame(Type.ping, 0, 0, Buffer.alloc(8))] }
  }
}

/**
 * A stream's errors nghttp2 may make connection errors: DATA before the answer's head (nghttp2 ends
 * the session for it, where §8.1.1 says a stream error), frames on a closed stream, DATA past
 * content-length, a window overflow.
 */
const MAY_END = ["data-before-head", "status-1xx-end-stream", "data-after-end-stream", "fields-after-end-stream", "data-beyond-content-length", "window-overflow-stream"]

/** One case: 1 to 4 calls, some gRPC-shaped, their answers interleaved; now and then (1 in 4) a connection-level act. */
export const answerCase = (rng: Prng, caseId: number): AnswerCase => {
  const drafts = Array.from({ length: rng.int(1, 4) }, (_, k) => draft(rng, caseId, k, rng.next() < 0.3))
  const answers = drafts.map((d) => planned(rng, d))
  const counts = answers.map((a) => a.groups.length)
  const order: Array<number> = []
  // A random answer's next group each time (answers' own orders kept).
  while (counts.some((n) => n > 0)) {
    const open = counts.map((n, i) => (n > 0 ? i : -1)).filter((i) => i >= 0)
    const at = rng.pick(open)
    counts[at]!--
    order.push(at)
  }
  const act = rng.next() < 0.25 ? { at: rng.int(0, order.length), act: connectionAct(rng) } : undefined
  // A fatal act, or a stream's own error some peers make a connection error (§5.4: they may): every answer may fail; one whole is still exact.
  const mayEnd = answers.some((a) => a.tags.some((t) => MAY_END.some((m) => t.startsWith(m))))
  if ((act !== undefined && (act.act.fatal || act.act.tag === "ping-flood")) || mayEnd) for (const a of answers) if (a.verdict === "whole") a.verdict = "either"
  const huffman = rng.next() < 0.4
  const indexed = rng.next() < 0.4
  const paced = rng.next() < 0.4
  const tags = act === undefined ? [] : [act.act.tag]
  if (paced) tags.push("paced")
  return { id: caseId, answers, act, order, huffman, indexed, paced, mayEnd, tags }
}

/**
 * A fixed case: `calls` calls whose answers are all sound, and the app's GOAWAY (`code`) before any
 * of them, its last stream id below all of theirs: none was processed (§6.8), each may be retried;
 * the app answers a retry soundly (status 200, its tag); a call not retried ends in app_unavailable.
 */
export const goawayBeforeAnswers = (caseId: number, calls: number, code: number, grpc: boolean): AnswerCase => {
  const rng = prng(caseId)
  const answers = Array.from({ length: calls }, (_, k) => {
    const d = draft(rng, caseId, k, grpc, false)
    const plan = planned(rng, d)
    // Retried, the call is answered in its sound form (soundFrames): what the caller must get.
    const fields: Array<Field> = [["x-answer-of", callTag(caseId, k)], ...(grpc ? [["content-type", "application/grpc"] as Field] : [])]
    return { ...plan, verdict: "either" as const, unprocessed: true, expect: { status: 200, fields, body: d.body, trailers: grpc ? [["grpc-status", "0"] as Field] : undefined }, tags: [`goaway-${code}-before-answers`] }
  })
  const act: ConnectionAct = {
    tag: `goaway-${code}-below-every-call`,
    fatal: true,
    goaway: { code },
    frames: (ctx) => {
      const payload = Buffer.alloc(8)
      payload.writeUInt32BE(Math.max(0, ctx.caseIds[0]! - 2), 0)
      payload.writeUInt32BE(code, 4)
      return [frame(Type.goaway, 0, 0, payload)]
    }
  }
  const order = answers.flatMap((a, k) => a.groups.map(() => k))
  return { id: caseId, answers, act: { at: 0, act }, order, huffman: false, indexed: false, paced: false, mayEnd: false, tags: [act.tag] }
}
