// The head of an answer to a request the peer sent in mesh mode (PROTOCOL.md §10, §12-§13), for
// a MeshSession serving one of the peer's channels (meshServing.ts): a handler's outcome becomes
// a response envelope (its body whole, compressed when it pays) or an error envelope, or the first
// packet of a streamed answer whose body the session then sends (meshStreamOut.ts). An answer that
// cannot be written still answers, with an error, so the channel's pairing holds.
import type { Compression } from "../protocol/compression.ts"
import { Limits, Status } from "../protocol/constants.ts"
import { pathByteLength } from "../protocol/packet.ts"
import { emptyMeta, encodeErrorBody, EnvelopeFlag, EnvelopeKind, MeshDefaults, MeshErrorCode, type Meta } from "../protocol/mesh.ts"
import type { Connection } from "./connection.ts"
import { Cancelled, type Served } from "./meshChannels.ts"
import { failure, type Failure, type Outcome } from "./request.ts"

export const noBody = new Uint8Array(0)

/** The path an answer carries when the request's is longer than any packet may carry: the caller pairs by request id. */
const LONG_PATH_ANSWER = "/"

/** Past this many UTF-16 units a path may be over Limits.maxSendPathBytes (each is at most 3 UTF-8 bytes): only then are its bytes counted. */
const SHORT_PATH_UNITS = Math.floor(Limits.maxSendPathBytes / 3)

/** The path `served`'s answer would carry as it came: the parsed one, or the raw one when the parsed one holds a NUL. */
const pathAnswered = (served: Served): string => {
  const path = served.request.path
  return path.includes("\0") ? served.request.rawPath : path
}

/**
 * Whether the path `served`'s answer would carry is longer than any packet may carry (over
 * Limits.maxSendPathBytes): such a request is refused unread (meshServing.ts, longPathRefusal), its
 * answer on LONG_PATH_ANSWER. Building the answer on it failed, and the connection closed without a
 * word after the handler (a sidecar's app) had run.
 */
export const longPath = (served: Served): boolean => {
  // Two lengths compared: the usual request's whole cost, no scan of its path.
  if (served.request.path.length <= SHORT_PATH_UNITS && served.request.rawPath.length <= SHORT_PATH_UNITS) return false
  const path = pathAnswered(served)
  return path.length > SHORT_PATH_UNITS && pathByteLength(path) > Limits.maxSendPathBytes
}

/** The refusal of a request whose path is too long (longPath): bad_request, not processed. */
export const longPathRefusal = (served: Served): Failure =>
  failure(MeshErrorCode.badRequest, `a path of ${pathByteLength(pathAnswered(served))} bytes: an answer carries at most ${Limits.maxSendPathBytes}`, false)

/**
 * The path `served`'s answer packets carry: the parsed path (PROTOCOL.md §5), or the path as it came
 * when the parsed one holds a NUL ("%00"), which no packet may carry (NUL-free, it arrived
 * NUL-terminated; a mesh caller pairs by request id, never by path). Failing the answer instead
 * lost one the handler (a sidecar's app) had made. One too long for a packet: LONG_PATH_ANSWER.
 */
export const answerPath = (served: Served): string => (longPath(served) ? LONG_PATH_ANSWER : pathAnswered(served))

/**
 * Writes the head of `served`'s answer on `channelId`. Returns the body still to stream after it,
 * or undefined when the answer is whole (written, or replaced by an error it could not be sent as).
 */
export const writeAnswerHead = (
  connection: Connection,
  compression: Compression | undefined,
  maxMetaBytes: number,
  channelId: number,
  served: Served,
  outcome: Outcome
): Uint8Array | AsyncIterable<Uint8Array> | undefined => {
  const path = answerPath(served)
  let kind: number = EnvelopeKind.response
  let meta: Meta = emptyMeta
  let body: Uint8Array | AsyncIterable<Uint8Array>
  if (outcome instanceof Uint8Array) body = outcome
  else if (outcome._tag === "Failure") {
    kind = EnvelopeKind.error
    body = encodeErrorBody(outcome)
  } else {
    meta = outcome.meta
    body = outcome.body
  }
  const whole = body instanceof Uint8Array && body.length <= MeshDefaults.chunkBytes
  const packed = whole && kind === EnvelopeKind.response ? compression?.pack(body as Uint8Array) : undefined
  const status = whole ? Status.ResponseWhole : Status.ResponseFirstMore
  const flags = packed !== undefined ? EnvelopeFlag.compressed : 0
  const data = packed ?? (whole ? (body as Uint8Array) : noBody)
  try {
    connection.writer.sendEnvelope(status, path, channelId, kind, flags, served.requestId, meta, maxMetaBytes, 0, data)
  } catch (error) {
    const fallback: Failure = failure(MeshErrorCode.handlerFailed, `answer cannot be sent: ${String(error)}`, true)
    // A streamed body is never read now: what feeds it (an RPC's stream, a relayed answer) is
    // cancelled, as on a connection's close, rather than left waiting for a reader.
    if (!(body instanceof Uint8Array)) served.abort(new Cancelled({ message: fallback.message }))
    try {
      connection.writer.sendEnvelope(Status.ResponseWhole, path, channelId, EnvelopeKind.error, 0, served.requestId, emptyMeta, maxMetaBytes, 0, encodeErrorBody(fallback))
    } catch (failed) {
      // Not even the error fits (the write queue is over its hard limit): pairing cannot hold.
      connection.close(`cannot answer request ${served.requestId} on channel ${channelId}: ${String(failed)}`, false)
    }
    return undefined
  }
  return whole ? undefined : body
}
