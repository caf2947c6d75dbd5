// Outbound, the bodies: the app's request body gathered whole (up to a limit), a streamed answer
// piped back to the app held to its declared length, and a plain IIP service's in-band error
// bodies read as statuses. The steps of outbound.ts that move bytes rather than choose.
import type { IncomingStream } from "../mux/streams.ts"
import { parseSystemAnswer } from "../protocol/systemMessages.ts"
import type { OutboundRequest, OutboundResponse } from "./outboundCall.ts"
import type { OnInvalidHeader } from "./headerFilter.ts"
import { trailersOf } from "./httpEnvelope.ts"
import { ProxyError } from "./proxyError.ts"

/** Gathers a body of at most `limit` bytes; past it, the request is cut off and the answer is 413 (where it can still be given). */
export const readBody = async (req: OutboundRequest, limit: number): Promise<Buffer> => {
  const body = await req.readBody(limit)
  if (body === undefined) throw new ProxyError({ status: 413, reason: "body_too_large", hop: "outbound", message: `a plain IIP service takes at most ${limit} bytes` })
  return body
}

/**
 * Writes a streamed body to the app, waiting for it to drain; stops when the app goes away. With a
 * declared `length` (-1 for none), a body that does not match it is cut off: the connection
 * closes rather than carry a byte past it. The stream's trailers go after the body. Returns the bytes written.
 */
export const pipeToResponse = async (res: OutboundResponse, body: IncomingStream, length: number, onInvalid: OnInvalidHeader | undefined): Promise<number> => {
  let bytes = 0
  for await (const chunk of body) {
    if (res.destroyed) return bytes
    if (length >= 0 && bytes + chunk.length > length) {
      res.destroy()
      return bytes
    }
    bytes += chunk.length
    if (!res.write(chunk)) await res.drained()
  }
  if (length >= 0 && bytes !== length) res.destroy()
  else res.end(undefined, body.trailers === undefined ? undefined : trailersOf(body.trailers, onInvalid))
  return bytes
}

/** A plain IIP service's in-band error bodies (PROTOCOL.md §6) become HTTP statuses, not 200. */
export const plainStatus = (data: Buffer): { readonly status: number; readonly error: ProxyError | undefined } => {
  if (data.length > 200 || data[0] !== 0x7b) return { status: 200, error: undefined }
  const answer = parseSystemAnswer(data)
  if (answer === undefined || !(answer.code === 102 || answer.code === 101 || answer.code === -1)) return { status: 200, error: undefined }
  if (answer.code === 102) return { status: 404, error: undefined }
  return { status: 502, error: new ProxyError({ status: 502, reason: answer.code === 101 ? "no_response" : "handler_failed", hop: "app", message: answer.message }) }
}
