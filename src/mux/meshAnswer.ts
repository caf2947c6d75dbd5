// The head of an answer to a request the peer sent in mesh mode (PROTOCOL.md §10, §12-§13), for
// a MeshSession serving one of the peer's channels (meshServing.ts): a handler's outcome becomes
// a response envelope (its body whole, compressed when it pays) or an error envelope, or the first
// packet of a streamed answer whose body the session then sends (meshStreamOut.ts). An answer that
// cannot be written still answers, with an error, so the channel's pairing holds.
import type { Compression } from "../protocol/compression.ts"
import { Status } from "../protocol/constants.ts"
import { emptyMeta, encodeErrorBody, EnvelopeFlag, EnvelopeKind, MeshDefaults, MeshErrorCode, type Meta } from "../protocol/mesh.ts"
import type { Connection } from "./connection.ts"
import { Cancelled, type Served } from "./meshChannels.ts"
import { failure, type Failure, type Outcome } from "./request.ts"

export const noBody = new Uint8Array(0)

/**
 * The path `served`'s answer packets carry: the parsed path (PROTOCOL.md §5), or the path as it came
 * when the parsed one holds a NUL ("%00"), which no packet may carry (NUL-free, it arrived
 * NUL-terminated; a mesh caller pairs by request id, never by path). Failing the answer instead
 * lost one the handler (a sidecar's app) had made.
 */
export const answerPath = (served: Served): string => {
  const path = served.request.path
  return path.includes("\0") ? served.request.rawPath : path
}

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
      // One too long still closes, as the reference does.
      connection.writer.sendEnvelope(Status.ResponseWhole, path, channelId, EnvelopeKind.error, 0, served.requestId, emptyMeta, maxMetaBytes, 0, encodeErrorBody(fallback))
    } catch (failed) {
      // Not even the error fits (the write queue is over its hard limit): pairing cannot hold.
      connection.close(`cannot answer request ${served.requestId} on channel ${channelId}: ${String(failed)}`, false)
    }
    return undefined
  }
  return whole ? undefined : body
}
