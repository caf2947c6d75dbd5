// What a session hands to the code that serves a request, and what it takes back. Shared by the
// plain-IIP server session and the mesh session, so one router serves both kinds of peer.
import { type Meta, emptyMeta } from "../protocol/mesh.ts"
import type { CancelSignal } from "./cancellation.ts"
import { type ParsedRequestPath, parseQuery } from "../protocol/requestPath.ts"
import type { IncomingStream } from "./streams.ts"
import { ShapeAnchor } from "./shapeAnchor.ts"

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
  /**
   * The metadata bytes a message to the caller carries: the bound agreed in the hellos (mesh
   * mode), past which an answer's metadata cannot be sent. Plain IIP sends none: no bound (Infinity).
   */
  readonly maxMetaBytes: number
  /**
   * The caller reads trailers closing a streamed answer (both hellos name `trailers`, PROTOCOL.md
   * §10, §13); where not, a streamed answer ends with a plain last packet, its trailers lost. Plain
   * IIP streams no answer: false.
   */
  readonly trailers: boolean
  /**
   * When the caller stops waiting, in this process's monotonic clock: whole ms of performance.now()
   * (`monotonicMs()`, src/mux/clock.ts), not Date.now(), so a wall clock step does not move it; 0
   * when it did not say. Time left: `deadline - monotonicMs()`.
   */
  readonly deadline: number
  /** The request body as it streams in (mesh mode, streamed requests only); `data` is then empty. */
  readonly stream: IncomingStream | undefined
  /** No answer is expected (a push). */
  readonly oneway: boolean
  /**
   * Says the answer about to be given streams for as long as what it carries lives (an upgraded
   * connection): once it has begun, the request stops counting among those read and not answered
   * (budget.ts) and holds only its channel, and its unread bytes count in the tunnels' pool alone
   * (past it the tunnel is ended, its request cancelled: streams.ts), so open tunnels never make the
   * server refuse ordinary requests `overloaded`; the caller bounds their number itself. Plain IIP
   * streams no answer: nothing there.
   */
  readonly longLived: () => void
}

/** Keeps the hidden class of IncomingRequest alive while idle (shapeAnchor.ts). */
const incomingShape = new ShapeAnchor<IncomingRequest>()

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
    incomingShape.keep(this, data.length)
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

/**
 * An outcome that comes later, without a promise chain per request: a hot-path handler (the
 * sidecar's inbound side) returns one and settles it once. The session that dispatched it listens
 * with `onSettled`: the listener runs in a microtask after the settle, as a promise's reaction
 * would (whatever settled it finishes first, so a socket the answer came on is released before the
 * next request runs). Anything else may await it: `then` makes a promise on demand. Never rejects.
 */
export class PendingOutcome implements PromiseLike<Outcome> {
  private outcome: Outcome | undefined = undefined
  /** Usually one listener (the session): kept apart so that a request allocates no array. */
  private listener: ((outcome: Outcome) => void) | undefined = undefined
  private more: Array<(outcome: Outcome) => void> | undefined = undefined
  private scheduled = false

  /** The first outcome counts; later ones are ignored. */
  settle(outcome: Outcome): void {
    if (this.outcome !== undefined) return
    this.outcome = outcome
    this.schedule()
  }

  onSettled(listener: (outcome: Outcome) => void): void {
    if (this.listener === undefined) this.listener = listener
    else (this.more ??= []).push(listener)
    if (this.outcome !== undefined) this.schedule()
  }

  then<T1 = Outcome, T2 = never>(onFulfilled?: ((value: Outcome) => T1 | PromiseLike<T1>) | null, onRejected?: ((reason: unknown) => T2 | PromiseLike<T2>) | null): PromiseLike<T1 | T2> {
    return new Promise<Outcome>((resolve) => this.onSettled(resolve)).then(onFulfilled, onRejected)
  }

  private schedule(): void {
    if (this.scheduled || this.listener === undefined) return
    this.scheduled = true
    queueMicrotask(() => this.deliver())
  }

  private deliver(): void {
    this.scheduled = false
    const outcome = this.outcome!
    const listener = this.listener
    const more = this.more
    this.listener = undefined
    this.more = undefined
    listener?.(outcome)
    if (more !== undefined) for (const one of more) one(outcome)
  }
}

export const isPromiseLike = (value: unknown): value is PromiseLike<unknown> =>
  typeof value === "object" && value !== null && typeof (value as { then?: unknown }).then === "function"
