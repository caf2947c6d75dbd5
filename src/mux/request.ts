// What a session hands to the code that serves a request, and what it takes back. Shared by the
// plain-IIP server session and the mesh session, so one router serves both kinds of peer.
import { type Meta, emptyMeta } from "../protocol/mesh.ts"
import type { CancelSignal } from "./cancellation.ts"
import { type ParsedRequestPath, parseQuery } from "../protocol/requestPath.ts"
import type { IncomingStream } from "./streams.ts"

export interface RequestContext {
  readonly remoteAddress: string
  /** The caller's identity as its TLS certificate proved it (a SPIFFE ID); undefined over plain TCP. */
  readonly peerIdentity: string | undefined
  /**
   * Aborted when the answer can no longer matter: connection closed, request cancelled or past its
   * deadline. In mesh mode it is made when first read: code on the hot path listens on `cancel`.
   */
  readonly signal: AbortSignal
  /** The same cancellation without an AbortSignal (cancellation.ts). */
  readonly cancel: CancelSignal
  /** Metadata sent with the request (mesh mode; empty for plain IIP). */
  readonly meta: Meta
  /** When the caller stops waiting, in this process's Date.now() terms; 0 when it did not say. */
  readonly deadline: number
  /** The request body as it streams in (mesh mode, streamed requests only); `data` is then empty. */
  readonly stream: IncomingStream | undefined
  /** No answer is expected (a push). */
  readonly oneway: boolean
}

export class IncomingRequest {
  private parsedQuery: Map<string, Array<string>> | undefined
  readonly channelId: number
  /** The path as it was on the wire. */
  readonly rawPath: string
  /** The parsed, percent-decoded path: what routing uses and the answer carries. */
  readonly path: string
  readonly rawQuery: string
  readonly data: Buffer
  readonly context: RequestContext

  constructor(channelId: number, rawPath: string, parsed: ParsedRequestPath, data: Buffer, context: RequestContext) {
    this.channelId = channelId
    this.rawPath = rawPath
    this.path = parsed.path
    this.rawQuery = parsed.rawQuery
    this.data = data
    this.context = context
  }

  get remoteAddress(): string {
    return this.context.remoteAddress
  }

  get signal(): AbortSignal {
    return this.context.signal
  }

  get meta(): Meta {
    return this.context.meta
  }

  /** Query parameters as Go's URL.Query() gives them to a reference handler. */
  get query(): ReadonlyMap<string, ReadonlyArray<string>> {
    return (this.parsedQuery ??= parseQuery(this.rawQuery))
  }
}

/** A request that failed; `code` is a mesh error code (see MeshErrorCode). */
export interface Failure {
  readonly _tag: "Failure"
  readonly code: string
  readonly message: string
  /** False when the handler never ran: safe to retry elsewhere. */
  readonly processed: boolean
}

/** An answer with metadata, or with a body that streams out. */
export interface Reply {
  readonly _tag: "Reply"
  readonly meta: Meta
  readonly body: Uint8Array | AsyncIterable<Uint8Array>
}

export type Outcome = Uint8Array | Failure | Reply

export const failure = (code: string, message: string, processed: boolean): Failure => ({ _tag: "Failure", code, message, processed })

export const reply = (body: Uint8Array | AsyncIterable<Uint8Array>, meta: Meta = emptyMeta): Reply => ({ _tag: "Reply", meta, body })

/**
 * Produces the outcome of a request. Synchronous outcomes are written at once; a promise holds that
 * channel's later requests until it settles. Must not throw or reject: failures are outcomes too.
 */
export type Dispatch = (request: IncomingRequest) => Outcome | PromiseLike<Outcome>

export const isPromiseLike = (value: unknown): value is PromiseLike<unknown> =>
  typeof value === "object" && value !== null && typeof (value as { then?: unknown }).then === "function"
