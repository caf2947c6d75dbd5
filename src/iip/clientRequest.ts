// One request of an IIP client (client.ts) on its way: kept whole while it waits in the client's
// queue or moves to another connection, it tells its caller exactly once. On a plain connection
// (no cancel in the protocol) it is sent by `sendPlain`; in mesh mode by the mesh session.
import type { CancelSignal } from "../mux/cancellation.ts"
import type { ClientChannel, ClientSession } from "../mux/clientSession.ts"
import { Cancelled, type MeshReply, type OwnChannel } from "../mux/meshSession.ts"
import { emptyMeta, type Meta } from "../protocol/mesh.ts"
import type { ClientCallback, ClientError } from "./clientOptions.ts"
import type { Pooled } from "./connectionPool.ts"
import { ShapeAnchor } from "../mux/shapeAnchor.ts"

/** Requests sent and not yet answered, one counter per client (each Pending holds it to count itself out). */
export interface PendingCount {
  value: number
}

/** Keeps the hidden class of Pending alive while idle (shapeAnchor.ts). */
const pendingShape = new ShapeAnchor<Pending>()

/**
 * One request on its way, kept whole so it can wait, or move to another connection. Its answer
 * goes to the caller through its methods, not through closures made per request (the sidecar's
 * outbound path and the RPC client make one request per call): `streamed` for a request whose
 * answer is handed over as it starts (mesh mode only), `callback` for a whole answer or a failure.
 * Either counts the request out of its client's pending requests, once, before the caller hears.
 */
export class Pending {
  readonly path: string
  readonly data: Uint8Array | AsyncIterable<Uint8Array>
  readonly timeoutMs: number
  /** When the caller stops waiting, in monotonicMs() terms (src/mux/clock.ts); 0 for never. */
  deadlineAt: number
  readonly meta: Meta
  readonly signal: CancelSignal | undefined
  /** The connection it was last sent on (mesh mode). */
  pooled: Pooled | undefined = undefined
  /** While it waits for a channel (clientQueue.ts): its place among the queue's deadlines, its neighbours, its listener on `signal`. */
  deadlineSlot = -1
  previous: Pending | undefined = undefined
  next: Pending | undefined = undefined
  onAbort: (() => void) | undefined = undefined
  /** RequestOptions.tunnel: it takes a stream place (set once, before it is routed). */
  tunnel = false
  /** The channel a tunnel was sent on, until its answer's head (OwnChannel.tunnelOpening). */
  tunnelChannel: OwnChannel | undefined = undefined
  private readonly count: PendingCount
  /** Set for `stream`: the answer is handed over as it starts, its body streaming. */
  private readonly onStream: ((error: ClientError | undefined, reply: MeshReply | undefined) => void) | undefined
  /** Set for `send`: the answer whole. */
  private readonly onAnswer: ClientCallback | undefined

  constructor(
    count: PendingCount,
    path: string,
    data: Uint8Array | AsyncIterable<Uint8Array>,
    timeoutMs: number,
    deadline: number,
    meta: Meta,
    signal: CancelSignal | undefined,
    onStream: ((error: ClientError | undefined, reply: MeshReply | undefined) => void) | undefined,
    onAnswer: ClientCallback | undefined
  ) {
    pendingShape.keep(this, data instanceof Uint8Array ? data.length : Infinity)
    this.count = count
    this.path = path
    this.data = data
    this.timeoutMs = timeoutMs
    this.deadlineAt = deadline
    this.meta = meta
    this.signal = signal
    this.onStream = onStream
    this.onAnswer = onAnswer
  }

  /** The answer is wanted as it starts (a `stream` request). */
  get streams(): boolean {
    return this.onStream !== undefined
  }

  /** A mesh answer as it starts, or the failure. */
  streamed(error: ClientError | undefined, reply: MeshReply | undefined): void {
    if (this.onStream === undefined) return this.callback(error, reply?.data)
    this.count.value--
    this.onStream(error, reply)
  }

  /** The answer whole (a plain peer's), or the failure. */
  callback(error: ClientError | undefined, answer: Buffer | undefined): void {
    this.count.value--
    if (this.onStream !== undefined) this.onStream(error, answer === undefined ? undefined : { meta: emptyMeta, data: answer, stream: undefined })
    else this.onAnswer!(error, answer)
  }
}

/** Plain IIP cannot cancel: an aborted request fails here at once and its late answer is consumed. */
export const sendPlain = (session: ClientSession, channel: ClientChannel, data: Uint8Array, request: Pending, timeoutMs: number): void => {
  const signal = request.signal
  if (signal === undefined) return session.request(channel, request.path, data, timeoutMs, (error, answer) => request.callback(error, answer))
  let settled = false
  const settle: ClientCallback = (error, answer) => {
    if (settled) return
    settled = true
    signal.removeEventListener("abort", onAbort)
    request.callback(error, answer)
  }
  const onAbort = () => settle(new Cancelled({ message: "request cancelled by the caller" }), undefined)
  signal.addEventListener("abort", onAbort)
  session.request(channel, request.path, data, timeoutMs, settle)
  if (signal.aborted) onAbort()
}
