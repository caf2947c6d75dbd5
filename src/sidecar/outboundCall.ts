// What outbound.ts and outboundUpgrade.ts need of the app's side of one request: the request as
// it came, and the way back to the app. The outbound listener provides it for HTTP/1.1
// (http1Listener.ts: one object per request, no node:http stream objects) and outboundH2Call.ts for
// each HTTP/2 stream (over node's core stream API).
import type { IncomingHttpHeaders } from "node:http"

export interface OutboundRequest {
  readonly method: string
  /** The request target as sent: a path and query, or an absolute URI (HTTP_PROXY). */
  readonly url: string
  /** 1 or 2. */
  readonly httpVersionMajor: number
  /** Lower-case names, repeated ones joined as node:http joins them (`set-cookie` a list). */
  readonly headers: IncomingHttpHeaders
  /** Name, value, name, value... as received (HTTP/2: with its pseudo-headers, which the header filter leaves out). */
  readonly rawHeaders: ReadonlyArray<string>
  readonly remoteAddress: string
  /**
   * When its exchange starts (performance.now()), read once per request: an HTTP/2 stream's arrival
   * (its lifetime's start for the premature-reset rule too), an HTTP/1.1 request's turn on its connection.
   */
  readonly startedAt: number
  /** A body follows the head (HTTP/1.1: a content-length above 0 or a transfer-encoding; HTTP/2: the head did not end the stream). */
  readonly hasBody: boolean
  /** The body as it arrives, read once; the app is held back while the reader is behind. Fails if the app goes away before its end. */
  body(): AsyncIterable<Buffer>
  /**
   * The body whole; undefined when it runs past `limit` bytes (or declares a length past it): the
   * rest is not gathered (as stopBody), the exchange answers 413. HTTP/1.1 makes that answer the
   * connection's last, the rest dropped by its lingering close (http1Call.ts); HTTP/2 keeps the stream
   * for it, then resets it NO_ERROR if the caller is still sending and drops what came past the cut (outboundH2Call.ts).
   */
  readBody(limit: number): Promise<Buffer | undefined>
  /**
   * The body is not wanted any more (it came too slowly: outboundBody.ts): the rest is not read on,
   * and the answer ends the exchange as past readBody's limit (HTTP/1.1: the connection's last,
   * then its lingering close; HTTP/2: the stream reset NO_ERROR once answered if the caller still sends).
   */
  stopBody(): void
  /**
   * HTTP/1.1: the caller sent `Expect: 100-continue` and waits for the 100, which goes when its body
   * is first read (body's iteration, readBody): a request refused before is answered without it.
   */
  readonly awaitsContinue?: boolean
  /**
   * HTTP/1.1: the body whole when all of it is here already (it came with the head) and within
   * `limit` bytes, taken at once without a promise; otherwise undefined and nothing taken (readBody then).
   */
  readonly bodyIfHere?: (limit: number) => Buffer | undefined
  /**
   * HTTP/2 only (its body declares no length): gives `receiver` the body whole when it ends, at most
   * `limit` bytes, within the event loop's turn its head came in (a unary gRPC call's); otherwise
   * what came so far and then the rest, as a stream. Once, by a call (no promise per request).
   */
  readonly heldBody?: (limit: number, receiver: HeldBodyReceiver) => void
  /**
   * HTTP/2 only: a request whose END_STREAM came (bodyless, or its body whole) is about to go on
   * with `body`: true when it is kept to the end of the read it came in instead (of the event loop's
   * turn, outside a read), and then handed
   * back to `receiver` (bodyHeld), or not if the caller reset it within the read it came in (bodyReset).
   * False (a body still streaming, or handed back already): it goes now.
   */
  readonly sendsAtReadEnd?: (receiver: HeldBodyReceiver, body: Uint8Array | AsyncIterable<Buffer>) => boolean
  /**
   * HTTP/2 only: the head limit the request's field section is past (its names, values and 32
   * octets a field, pseudo-headers too: RFC 9113 §6.5.2's count), else 0. HTTP/1.1's llhttp
   * refuses such a head before any request is made of it.
   */
  readonly headPastLimit?: number
}

/** Told once of a held body (OutboundRequest.heldBody, sendsAtReadEnd): the body, or that the caller reset the request while it was held. */
export interface HeldBodyReceiver {
  bodyHeld(body: Uint8Array | AsyncIterable<Buffer>): void
  /** The caller reset the request while it was held (before its body's end, or within the read its END_STREAM came in): nothing of it went anywhere. */
  bodyReset(): void
}

export interface OutboundResponse {
  /** writeHead was called. */
  readonly headersSent: boolean
  /**
   * The head went out (with the body's first bytes, or the end). Until then writeHead replaces it:
   * an answer that breaks before its first byte can still become an error (proxyError.ts).
   */
  readonly headWritten: boolean
  /** end was called. */
  readonly writableEnded: boolean
  /** The exchange is over before its end: the app went away or the answer was cut off. */
  readonly destroyed: boolean
  /** Why this side cut the answer off, if it did (HTTP/2: `answer_stalled`, outboundH2Call.ts); undefined when the app went away. */
  readonly cutReason?: string | undefined
  /** The gRPC status this side sent the caller in place of the app's, if it did (HTTP/2: RESOURCE_EXHAUSTED for an answer past the caller's header list limit). */
  readonly grpcStatusSent?: number | undefined
  /** Once, when the exchange is over (one listener per call): `finished` when the whole answer was handed to the socket, false when it was cut off. */
  onClose(listener: (finished: boolean) => void): void
  /** The answer's head, sent with the first bytes of the body (or the end); framing: a content-length among `headers`, else chunked (or to the close). */
  writeHead(status: number, headers: ReadonlyArray<readonly [string, string]>): void
  /** False: wait for drained() before writing more. */
  write(chunk: Uint8Array): boolean
  /** Resolves when more may be written, or when the exchange is over. */
  drained(): Promise<void>
  /** The last of the body (if any), and trailers (HTTP/2; HTTP/1.1 after a chunked body: an answer held whole carries a content-length, no trailers). */
  end(data?: Uint8Array | string, trailers?: ReadonlyArray<readonly [string, string]>): void
  /**
   * The request's deadline passed after the answer's head: `trailers` (gRPC's status) end it, unless
   * answer bytes wait before them for the caller's window (HTTP/2 sends trailers only after the DATA
   * queued first) and stay still: then the stream is reset CANCEL and they are dropped
   * (outboundH2Call.ts). Absent: end with them.
   */
  endPastDeadline?(trailers: ReadonlyArray<readonly [string, string]>): void
  /** Cuts the answer off (and the app's connection, for HTTP/1.1). */
  destroy(): void
}

/** One request from the app and the way back to it. */
export type OutboundCall = OutboundRequest & OutboundResponse
