// The serving side of one connection: channel 0 and `/sys/new_channel` / `/sys/delete_channel`
// exactly as the reference (PROTOCOL.md §4), ids handed out 1, 2, 3, and one actor per channel
// that handles its requests strictly in order. What a request means is the dispatcher's business
// (the iip Server passes its router in); this layer only guarantees one answer per request, in order.
import { Status, SystemChannel, SystemPath } from "../protocol/constants.ts"
import { PacketEncodeError } from "../protocol/errors.ts"
import { type ParsedRequestPath, parseQuery, parseRequestPath } from "../protocol/requestPath.ts"
import { channelLimitBody, newChannelBody, noResponseBody } from "../protocol/systemMessages.ts"
import type { Connection, MessageSink } from "./connection.ts"
import type { ConnectionClosed } from "./errors.ts"

export class IncomingRequest {
  private parsedQuery: Map<string, Array<string>> | undefined
  readonly channelId: number
  /** The path as it was on the wire. */
  readonly rawPath: string
  /** The parsed, percent-decoded path: what routing uses and the answer carries. */
  readonly path: string
  readonly rawQuery: string
  readonly data: Buffer
  readonly remoteAddress: string
  /** Aborted when the connection closes: the answer can no longer be delivered. */
  readonly signal: AbortSignal

  constructor(channelId: number, rawPath: string, parsed: ParsedRequestPath, data: Buffer, remoteAddress: string, signal: AbortSignal) {
    this.channelId = channelId
    this.rawPath = rawPath
    this.path = parsed.path
    this.rawQuery = parsed.rawQuery
    this.data = data
    this.remoteAddress = remoteAddress
    this.signal = signal
  }

  /** Query parameters as Go's URL.Query() gives them to a reference handler. */
  get query(): ReadonlyMap<string, ReadonlyArray<string>> {
    return (this.parsedQuery ??= parseQuery(this.rawQuery))
  }
}

/**
 * Produces the answer body for a request. Synchronous answers are written at once; a promise
 * holds that channel's later requests until it settles. Must not throw or reject: failures are
 * answers too (the iip Server maps them to the reference's JSON bodies).
 */
export type Dispatch = (request: IncomingRequest) => Uint8Array | PromiseLike<Uint8Array>

export interface ServerSessionLimits {
  /** Channels a peer may open on one connection, channel 0 not counted. */
  readonly maxChannels: number
  /** Requests read but not yet answered, over all channels of the connection; above it reading pauses. */
  readonly maxQueuedRequests: number
}

export const defaultServerSessionLimits: ServerSessionLimits = { maxChannels: 1024, maxQueuedRequests: 1024 }

/**
 * A channel actor: a mailbox handled in order, one request at a time. It is plain code rather
 * than an Effect fiber because it runs once per request on the hot path (bench/echo measures it);
 * handlers that are Effects still run as fibers, one per request, interrupted with the connection.
 */
class ChannelActor {
  private readonly mailbox: Array<IncomingRequest> = []
  private busy = false
  /** Set by /sys/delete_channel: finish what is queued, then free the id. */
  closing = false
  readonly id: number
  private readonly session: ServerSession

  constructor(id: number, session: ServerSession) {
    this.id = id
    this.session = session
  }

  get idle(): boolean {
    return !this.busy && this.mailbox.length === 0
  }

  deliver(request: IncomingRequest): void {
    if (this.busy || this.mailbox.length > 0) {
      this.mailbox.push(request)
      this.session.queued(1)
      return
    }
    this.run(request)
  }

  private run(request: IncomingRequest): void {
    for (;;) {
      const answer = this.session.answer(request)
      if (!(answer instanceof Uint8Array)) {
        this.busy = true
        answer.then(
          (data) => this.settle(request, data),
          () => this.settle(request, noResponseBody)
        )
        return
      }
      this.session.reply(request, answer)
      const next = this.mailbox.shift()
      if (next === undefined) break
      this.session.queued(-1)
      request = next
    }
    this.session.actorIdle(this)
  }

  private settle(request: IncomingRequest, data: Uint8Array): void {
    this.busy = false
    this.session.reply(request, data)
    const next = this.mailbox.shift()
    if (next === undefined) {
      this.session.actorIdle(this)
      return
    }
    this.session.queued(-1)
    this.run(next)
  }
}

export class ServerSession implements MessageSink {
  private readonly actors = new Map<number, ChannelActor>()
  private nextChannelId = 1
  private readonly freedIds: Array<number> = []
  private queuedRequests = 0
  private pausedForQueue = false
  private pausedForWriter = false
  private readonly abort = new AbortController()
  readonly connection: Connection
  private readonly dispatch: Dispatch
  private readonly limits: ServerSessionLimits
  private readonly onClosed: (session: ServerSession, error: ConnectionClosed) => void

  constructor(
    connection: Connection,
    dispatch: Dispatch,
    limits: ServerSessionLimits,
    onClosed: (session: ServerSession, error: ConnectionClosed) => void
  ) {
    this.connection = connection
    this.dispatch = dispatch
    this.limits = limits
    this.onClosed = onClosed
    this.actors.set(SystemChannel, new ChannelActor(SystemChannel, this))
    connection.attach(this)
  }

  get channelCount(): number {
    return this.actors.size - 1
  }

  onMessage(channelId: number, rawPath: string, data: Buffer): void {
    const actor = this.actors.get(channelId)!
    if (rawPath === SystemPath.deleteChannel) {
      if (channelId === SystemChannel) {
        this.connection.close("peer asked to delete the system channel 0", false)
        return
      }
      // From now on a packet for this id is a protocol error, as on the reference.
      this.connection.closeChannel(channelId)
      actor.closing = true
      this.actorIdle(actor)
      return
    }
    const parsed = parseRequestPath(rawPath)
    actor.deliver(
      new IncomingRequest(channelId, rawPath, parsed, data, this.connection.remoteAddress, this.abort.signal)
    )
  }

  onClose(error: ConnectionClosed): void {
    this.abort.abort(error)
    this.onClosed(this, error)
  }

  /** The answer for one request: system paths here, everything else through the dispatcher. */
  answer(request: IncomingRequest): Uint8Array | PromiseLike<Uint8Array> {
    if (request.rawPath === SystemPath.newChannel) return this.createChannel()
    try {
      return this.dispatch(request)
    } catch {
      return noResponseBody
    }
  }

  reply(request: IncomingRequest, data: Uint8Array): void {
    if (this.connection.closed) return
    try {
      this.connection.writer.send(Status.ResponseWhole, request.path, request.channelId, data.length > 0 ? data : noResponseBody)
    } catch (error) {
      // The reference closes the connection when an answer cannot be built (path too long or empty).
      const reason = error instanceof PacketEncodeError ? error.message : String(error)
      this.connection.close(`cannot answer ${JSON.stringify(request.path.slice(0, 80))} on channel ${request.channelId}: ${reason}`, false)
      return
    }
    if (this.connection.writer.congested && !this.pausedForWriter) {
      this.pausedForWriter = true
      this.connection.pauseReading()
      this.connection.writer.whenWritable(() => {
        this.pausedForWriter = false
        this.connection.resumeReading()
      })
    }
  }

  /** Accounting of requests waiting in mailboxes; reading pauses while there are too many. */
  queued(delta: number): void {
    this.queuedRequests += delta
    if (!this.pausedForQueue && this.queuedRequests >= this.limits.maxQueuedRequests) {
      this.pausedForQueue = true
      this.connection.pauseReading()
    } else if (this.pausedForQueue && this.queuedRequests < this.limits.maxQueuedRequests / 2) {
      this.pausedForQueue = false
      this.connection.resumeReading()
    }
  }

  actorIdle(actor: ChannelActor): void {
    if (actor.closing && actor.idle && this.actors.get(actor.id) === actor) {
      this.actors.delete(actor.id)
      this.freeId(actor.id)
    }
  }

  private createChannel(): Uint8Array {
    if (this.channelCount >= this.limits.maxChannels) return channelLimitBody
    const id = this.allocateId()
    this.actors.set(id, new ChannelActor(id, this))
    this.connection.openChannel(id)
    return newChannelBody(id)
  }

  /** Lowest freed id first, else the next new one: 1, 2, 3 as the reference and its clients expect. */
  private allocateId(): number {
    if (this.freedIds.length > 0) {
      let lowest = 0
      for (let i = 1; i < this.freedIds.length; i++) if (this.freedIds[i]! < this.freedIds[lowest]!) lowest = i
      return this.freedIds.splice(lowest, 1)[0]!
    }
    return this.nextChannelId++
  }

  private freeId(id: number): void {
    this.freedIds.push(id)
  }
}
