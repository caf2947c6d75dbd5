// The calls and channels of one mesh-mode connection (meshCalls.ts drives this side's,
// meshServing.ts the peer's): the typed errors a call can end in, what a reply holds, a call in
// flight, the channels this side opened (FIFO of calls) and the ones the peer opened (a mailbox of
// requests served in order).
import * as Data from "effect/Data"
import type { DecompressionFailed } from "../protocol/compression.ts"
import { decodeMeta, type Meta } from "../protocol/mesh.ts"
import { parseRequestPath } from "../protocol/requestPath.ts"
import { Cancellation, type CancelSignal } from "./cancellation.ts"
import { Fifo } from "./fifo.ts"
import type { ConnectionClosed, Overloaded, RequestTimeout } from "./errors.ts"
import { type Failure, IncomingRequest, type RequestContext } from "./request.ts"
import type { IncomingStream, SendWindow, StreamFailed } from "./streams.ts"
import { ShapeAnchor } from "./shapeAnchor.ts"

/** The peer answered with a typed error. `processed: false` means it never ran the handler. */
export class RemoteError extends Data.TaggedError("RemoteError")<{
  readonly code: string
  readonly message: string
  readonly processed: boolean
}> {}

/** The caller gave up on the request (its signal fired); the peer was told to stop. */
export class Cancelled extends Data.TaggedError("Cancelled")<{ readonly message: string }> {}

/** Overloaded: a call held for the peer's request budget (§10 `maxRequests`) met a full write queue when its turn came. */
export type MeshCallError = ConnectionClosed | RequestTimeout | RemoteError | Cancelled | StreamFailed | DecompressionFailed | Overloaded

export interface MeshReply {
  readonly meta: Meta
  /** The whole body, unless the caller asked for a stream. */
  readonly data: Buffer
  /** The body as it streams in, when the caller asked for a stream. */
  readonly stream: IncomingStream | undefined
}

export interface CallOptions {
  readonly meta?: Meta
  /** 0 for none. Travels to the peer as the remaining deadline. */
  readonly timeoutMs?: number
  /** Aborting it cancels the request at the peer (an AbortSignal or a Cancellation). */
  readonly signal?: CancelSignal
  /** Deliver the answer's body as a stream (as it arrives) instead of whole. */
  readonly streamResponse?: boolean
}

/** A call's result; `context` is what the caller gave with the call (a caller can pass one shared function, no closure per call). */
export type CallCallback = (error: MeshCallError | undefined, reply: MeshReply | undefined, context: unknown) => void

export interface Call {
  /** 0 while the call is held, not yet written (ids skip 0). */
  requestId: number
  readonly callback: CallCallback
  readonly context: unknown
  readonly streamResponse: boolean
  readonly channel: OwnChannel
  /** Its place among the session's deadlines (deadlines.ts); -1 without one. */
  deadlineSlot: number
  deadlineAt: number
  timeoutMs: number
  /** The caller has its result. */
  done: boolean
  /** Bytes of its whole body taken from the peer's connection credit (meshCredit.ts), back when its answer ends; 0 for none. */
  credit: number
  /** The answer's body while it streams in. */
  incoming: IncomingStream | undefined
  /**
   * The caller's cancellation and this call's listener on it, until the call is over (meshCalls.ts's
   * `detach`). Fields, not a closure that removes the listener: with such a closure on every call
   * (over the scope of MeshCaller.send), each request's call, its pending answer, its request and
   * reply metadata (about 2.5 KB) outlived young collections in an outbound sidecar at 1,000 req/s
   * and filled the old generation: a full mark-compact every 1.5-2 s. As fields, they die young.
   */
  signal: CancelSignal | undefined
  onAbort: (() => void) | undefined
}

/** Keeps the hidden class of OwnChannel alive while idle (shapeAnchor.ts). */
const ownChannelShape = new ShapeAnchor<OwnChannel>()

/** A channel this side opened: its calls in the order they were sent. */
export class OwnChannel {
  readonly id: number
  readonly fifo = new Fifo<Call>()
  nextRequestId = 1
  /** Set while a streamed request body is being sent on it. */
  sending: SendWindow | undefined
  /** The peer did not open it (`/sys/refuse`): no new request goes on it, and it closes once its calls are answered. */
  refused = false
  /** Calls made on it and held, not yet written, until the peer's request budget (or its connection credit) has room (MeshCaller.send, meshCalls.ts). */
  held = 0
  /**
   * A tunnel (the IIP client's RequestOptions.tunnel) was sent on it and its answer's head is not in
   * yet: its client counts it a stream's from then, not only once the answer streams, else tunnels
   * sent together with whole bodies (an event stream's GET) all found the same places free.
   */
  tunnelOpening = false

  constructor(id: number) {
    ownChannelShape.newest = this
    this.id = id
  }

  /** Calls made on it and not yet answered, held ones included. */
  get outstanding(): number {
    return this.fifo.length + this.held
  }

  /** A request body is streaming out, or the oldest answer is streaming in. */
  get streaming(): boolean {
    return this.sending !== undefined || this.fifo.peek()?.incoming !== undefined
  }
}

/** Keeps the hidden class of Served alive while idle (shapeAnchor.ts). */
const servedShape = new ShapeAnchor<Served>()

/**
 * A request being served on a peer's channel. It is also the request's context (what the handler
 * sees as `request.context`) and its cancellation: one object per request, not three.
 */
export class Served extends Cancellation implements RequestContext {
  readonly remoteAddress: string
  readonly peerIdentity: string | undefined
  readonly maxMetaBytes: number
  readonly trailers: boolean
  /** Its metadata once decoded; until then `head`, the request's first packet, holds it. */
  private decodedMeta: Meta | undefined
  private head: Buffer | undefined
  private readonly bodyOffset: number
  /** When the caller stops waiting, in monotonicMs() terms (clock.ts); 0: it did not say. */
  readonly deadline: number
  readonly stream: IncomingStream | undefined
  readonly oneway: boolean
  readonly request: IncomingRequest
  readonly requestId: number
  /** The deadline the caller gave, in ms (0: none), and its place among the session's deadlines (deadlines.ts). */
  readonly deadlineMs: number
  deadlineSlot = -1
  deadlineAt = 0
  /** Set when it must be answered with this failure instead of running (cancelled or refused while queued). */
  refusal: Failure | undefined = undefined
  answered = false
  /** Bytes of its body it holds against the connection's budget (0 once released, or when refused unread). */
  charged: number
  /** Requests it counts for in the connection's budget: 1, or 0 once a long-lived answer began (or it was released). */
  waiting = 1
  /** Set by `longLived`: its streamed answer, once begun, counts it out of the waiting requests. */
  isLongLived = false

  constructor(
    remoteAddress: string,
    peerIdentity: string | undefined,
    maxMetaBytes: number,
    trailers: boolean,
    channelId: number,
    rawPath: string,
    data: Buffer,
    requestId: number,
    meta: Meta | undefined,
    head: Buffer,
    bodyOffset: number,
    deadlineMs: number,
    stream: IncomingStream | undefined,
    oneway: boolean,
    charged: number,
    /** When it arrived (monotonicMs() terms); read only when `deadlineMs` > 0. */
    receivedAt: number
  ) {
    super()
    servedShape.keep(this, data.length + head.length)
    this.remoteAddress = remoteAddress
    this.peerIdentity = peerIdentity
    this.maxMetaBytes = maxMetaBytes
    this.trailers = trailers
    this.decodedMeta = meta
    this.head = meta === undefined ? head : undefined
    this.bodyOffset = bodyOffset
    this.deadline = deadlineMs > 0 ? receivedAt + deadlineMs : 0
    this.stream = stream
    this.oneway = oneway
    this.requestId = requestId
    this.deadlineMs = deadlineMs
    this.charged = charged
    this.request = new IncomingRequest(channelId, rawPath, parseRequestPath(rawPath), data, this)
  }

  get cancel(): Cancellation {
    return this
  }

  longLived(): void {
    this.isLongLived = true
  }

  /** Metadata sent with the request, decoded on first read (the session checked it on arrival: scanMeta). */
  get meta(): Meta {
    if (this.decodedMeta === undefined) {
      this.decodedMeta = decodeMeta(this.head!, this.bodyOffset)
      this.head = undefined
    }
    return this.decodedMeta
  }
}

/** Keeps the hidden class of PeerChannel alive while idle (shapeAnchor.ts). */
const peerChannelShape = new ShapeAnchor<PeerChannel>()

/** A channel the peer opened: its requests, served one at a time in order. */
export class PeerChannel {
  readonly id: number
  readonly mailbox: Array<Served> = []
  running: Served | undefined
  /** The request body still streaming in on this channel. */
  receiving: IncomingStream | undefined
  /** Set while a streamed answer is being sent on it, with the request it answers. */
  sending: SendWindow | undefined
  sendingFor: Served | undefined
  /** Its opener closed it (`/sys/close`): it is forgotten once nothing runs, waits or streams on it. */
  closing = false
  /** Opened over the channel budget (§11 `refuse`): every request on it is refused until its opener closes it. */
  refused = false

  constructor(id: number) {
    peerChannelShape.newest = this
    this.id = id
  }
}
