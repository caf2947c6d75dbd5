// Outbound, the bodies: the app's request body gathered whole (up to a limit, by the deadline), a streamed answer
// piped back to the app held to its declared length, and a plain IIP service's in-band error
// bodies read as statuses. The steps of outbound.ts that move bytes rather than choose.
import { Deadlines, type Expiring } from "../mux/deadlines.ts"
import type { IncomingStream } from "../mux/streams.ts"
import { parseSystemAnswer } from "../protocol/systemMessages.ts"
import type { OutboundRequest, OutboundResponse } from "./outboundCall.ts"
import type { OnInvalidHeader } from "./headerFilter.ts"
import { trailersOf } from "./httpEnvelope.ts"
import { ProxyError } from "./proxyError.ts"

/** A gather whose body is awaited (the exchange itself: no object per gather), on its handler's deadline heap (bodyDeadlines). */
export interface BodyGather extends Expiring {
  readonly req: OutboundRequest
  /** Set when the deadline passed before the body came whole. */
  bodyLate: boolean
}

/** A gather's deadline passed: the body is given up, which ends readBody's reading (stopBody), and the gather knows why. */
const bodyLate = (gather: BodyGather): void => {
  gather.bodyLate = true
  gather.req.stopBody()
}

/** One heap of gathers' deadlines for an outbound handler: one timer for all of them, none per body. */
export const bodyDeadlines = (): Deadlines<BodyGather> => new Deadlines(bodyLate)

/**
 * Gathers `gather.req`'s body of at most `limit` bytes within `leftMs`, what the request's deadline
 * of `deadlineMs` leaves: past the limit the answer is 413 `body_too_large`, past the time 408
 * `body_timeout`, and either way no more of the body is read (OutboundRequest.stopBody). A caller
 * trickling its body (a byte a second) held the exchange, and its place, until the listener's
 * request timeout (HTTP/1.1, 300 s) or for ever (HTTP/2). The deadline is an entry on `deadlines`
 * (its expiry stops the reading, which ends it): a setTimeout and a Promise.race per gather cost
 * a Timeout, three promises and a closure.
 */
export const readBody = async (gather: BodyGather, deadlines: Deadlines<BodyGather>, limit: number, leftMs: number, deadlineMs: number): Promise<Buffer> => {
  gather.bodyLate = false
  deadlines.add(gather, Math.max(1, leftMs))
  let body: Buffer | undefined
  try {
    body = await gather.req.readBody(limit)
  } finally {
    deadlines.remove(gather)
  }
  if (gather.bodyLate) throw new ProxyError({ status: 408, reason: "body_timeout", hop: "outbound", message: `the request's body did not come whole within its deadline of ${deadlineMs} ms` })
  if (body === undefined) throw new ProxyError({ status: 413, reason: "body_too_large", hop: "outbound", message: `a plain IIP service takes at most ${limit} bytes` })
  return body
}

/**
 * Writes a streamed body to the app, waiting for it to drain; stops when the app goes away. With a
 * declared `length` (-1 for none), a body that does not match it is cut off: the connection
 * closes rather than carry a byte past it. The stream's trailers go after the body. A failure of the body while
 * the app does not read (a deadline under a paused caller) drops what it holds and throws at once. Returns the bytes written.
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
    // A failure while the caller does not read ends the wait: the pipe throws it, nothing is kept for a caller that will not get it.
    if (!res.write(chunk)) await body.drainedOrFailed(res.drained())
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
