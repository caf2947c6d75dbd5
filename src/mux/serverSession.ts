// The serving side of one plain-IIP connection: channel 0 and `/sys/new_channel` /
// `/sys/delete_channel` exactly as the reference (PROTOCOL.md §4), ids handed out 1, 2, 3, and one
// actor per channel that handles its requests strictly in order. Outcomes become the reference's
// answers: data as is, failures as its JSON bodies (§6). A `/sys/hello` from an iip-mesh dialer
// hands the connection over to a mesh session (§10).
import { Limits, Status, SystemChannel, SystemPath } from "../protocol/constants.ts"
import { PacketEncodeError } from "../protocol/errors.ts"
import { emptyMeta, MeshErrorCode, MeshPath } from "../protocol/mesh.ts"
import { parseRequestPath } from "../protocol/requestPath.ts"
import { channelLimitBody, handlerFailedBody, newChannelBody, noResponseBody, unknownPathBody } from "../protocol/systemMessages.ts"
import type { InboundBudget } from "./budget.ts"
import type { Connection, MessageSink } from "./connection.ts"
import type { ConnectionClosed } from "./errors.ts"
import { type Dispatch, IncomingRequest, isPromiseLike, type Outcome } from "./request.ts"

export interface ServerSessionLimits {
  /** Channels a peer may open on one connection, channel 0 not counted. */
  readonly maxChannels: number
}

export const defaultServerSessionLimits: ServerSessionLimits = { maxChannels: 1024 }

/**
 * Answers a `/sys/hello` with the bytes to send back and a function to call right after they are
 * queued (it switches the connection to mesh mode); undefined to answer as a plain server would.
 */
export type HelloHandler = (data: Buffer) => { readonly answer: Uint8Array; readonly upgrade: () => void } | undefined

/** Told when an answer cannot be built (its path over 2,048 bytes) and the connection closes for it, as the reference does: to log it (the server bounds the lines). */
export type UnanswerableHandler = (remote: string, reason: string, identity: string | undefined) => void

const noData = Buffer.alloc(0)
/** A plain peer has no typed errors: the reference's handler-fail body says it (PROTOCOL.md §8). */
const overloadedBody = handlerFailedBody("server overloaded, retry later")

/**
 * The plain-IIP answer for an outcome (PROTOCOL.md §6). A plain peer takes one packet, so a
 * streamed answer is gathered whole, within the packet limit and within what `budget` (the
 * connection's, and the server's) has room for: each gather could hold 16 MiB (a peer asking on 24
 * channels at once, reading nothing, made one connection hold 305 MB; on its 1,024, 16 GiB). Past
 * the room it is refused overloaded, and its stream given up; one alone (the connection's, the
 * server's) goes on past that budget's room (budget.ts chargeGathered).
 */
const plainBody = (outcome: Outcome, budget: InboundBudget): Uint8Array | PromiseLike<Uint8Array> => {
  if (outcome instanceof Uint8Array) return outcome.length > 0 ? outcome : noResponseBody
  if (outcome._tag === "Failure") {
    if (outcome.code === MeshErrorCode.notFound) return unknownPathBody
    if (outcome.code === MeshErrorCode.noResponse) return noResponseBody
    return handlerFailedBody(outcome.message)
  }
  const body = outcome.body
  if (body instanceof Uint8Array) return body.length > 0 ? body : noResponseBody
  return gather(body, budget)
}

/**
 * Gathers one streamed answer. A refused one gives its bytes back at once, before its stream is
 * closed: the gathers of one read run interleaved and reach the budget's end together, and bytes
 * given back a turn later would have each of them refused in turn, none answered.
 */
const gather = async (body: AsyncIterable<Uint8Array>, budget: InboundBudget): Promise<Uint8Array> => {
  const parts: Array<Uint8Array> = []
  let total = 0
  const giveBack = () => {
    budget.releaseGathered(total)
    total = 0
  }
  try {
    for await (const chunk of body) {
      if (total + chunk.length > Limits.maxPacketData) {
        giveBack()
        return handlerFailedBody(`answer exceeds ${Limits.maxPacketData} bytes`)
      }
      if (!budget.chargeGathered(chunk.length, total)) {
        giveBack()
        return overloadedBody
      }
      total += chunk.length
      parts.push(chunk)
    }
    const whole = total === 0 ? noResponseBody : Buffer.concat(parts, total)
    giveBack()
    return whole
  } catch {
    giveBack()
    return noResponseBody
  }
}

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

  /** The connection closed: what waits would answer nobody, so it never runs (its budget went with the connection). */
  drop(): void {
    this.mailbox.length = 0
  }

  deliver(request: IncomingRequest): void {
    if (this.busy || this.mailbox.length > 0) {
      this.mailbox.push(request)
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
    this.run(next)
  }
}

export class ServerSession implements MessageSink {
  private readonly actors = new Map<number, ChannelActor>()
  private nextChannelId = 1
  private readonly freedIds: Array<number> = []
  private pausedForWriter = false
  private readonly abort = new AbortController()
  private readonly context
  /** The context of requests refused unread because the server is full (told apart by identity). */
  private readonly refusedContext
  readonly connection: Connection
  private readonly dispatch: Dispatch
  private readonly limits: ServerSessionLimits
  private readonly onClosed: (session: ServerSession, error: ConnectionClosed) => void
  private readonly onHello: HelloHandler | undefined
  private readonly onUnanswerable: UnanswerableHandler | undefined
  /** plainBody within this connection's budget, made once (not a closure per answer). */
  private readonly plainBody = (outcome: Outcome) => plainBody(outcome, this.connection.budget)

  constructor(
    connection: Connection,
    dispatch: Dispatch,
    limits: ServerSessionLimits,
    onClosed: (session: ServerSession, error: ConnectionClosed) => void,
    onHello?: HelloHandler,
    onUnanswerable?: UnanswerableHandler
  ) {
    this.connection = connection
    this.dispatch = dispatch
    this.limits = limits
    this.onClosed = onClosed
    this.onHello = onHello
    this.onUnanswerable = onUnanswerable
    this.context = {
      remoteAddress: connection.remoteAddress,
      peerIdentity: connection.peerIdentity,
      signal: this.abort.signal,
      cancel: this.abort.signal,
      meta: emptyMeta,
      maxMetaBytes: Infinity,
      trailers: false,
      deadline: 0,
      stream: undefined,
      oneway: false,
      longLived: () => {}
    }
    this.refusedContext = { ...this.context }
    this.actors.set(SystemChannel, new ChannelActor(SystemChannel, this))
    connection.attach(this)
  }

  get channelCount(): number {
    return this.actors.size - 1
  }

  /** No request is being handled or waiting. */
  get idle(): boolean {
    for (const actor of this.actors.values()) if (!actor.idle) return false
    return true
  }

  onMessage(channelId: number, rawPath: string, data: Buffer, refused = false): void {
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
    if (rawPath === MeshPath.hello && this.onHello !== undefined && this.isPristine()) {
      const hello = this.onHello(data)
      if (hello !== undefined) {
        this.connection.writer.send(Status.ResponseWhole, MeshPath.hello, SystemChannel, hello.answer)
        hello.upgrade()
        return
      }
    }
    // The server as a whole holds all it may: refused at once, in its turn, instead of queued.
    if (refused || (this.connection.budget.sharedFull && rawPath !== SystemPath.newChannel)) {
      actor.deliver(new IncomingRequest(channelId, rawPath, parseRequestPath(rawPath), noData, this.refusedContext))
      return
    }
    // Held until answered; past this connection's own budget its reading pauses (budget.ts).
    this.connection.budget.charge(1, data.length)
    actor.deliver(new IncomingRequest(channelId, rawPath, parseRequestPath(rawPath), data, this.context))
  }

  onClose(error: ConnectionClosed): void {
    for (const actor of this.actors.values()) actor.drop()
    this.abort.abort(error)
    this.onClosed(this, error)
  }

  /** The answer for one request: system paths here, everything else through the dispatcher. */
  answer(request: IncomingRequest): Uint8Array | PromiseLike<Uint8Array> {
    if (request.context === this.refusedContext) return overloadedBody
    if (request.rawPath === SystemPath.newChannel) return this.createChannel()
    let outcome: Outcome | PromiseLike<Outcome>
    try {
      outcome = this.dispatch(request)
    } catch {
      return noResponseBody
    }
    return isPromiseLike(outcome) ? Promise.resolve(outcome).then(this.plainBody) : plainBody(outcome, this.connection.budget)
  }

  reply(request: IncomingRequest, data: Uint8Array): void {
    if (this.connection.closed) return
    if (request.context !== this.refusedContext) this.connection.budget.release(1, request.data.length)
    try {
      this.connection.writer.send(Status.ResponseWhole, request.path, request.channelId, data.length > 0 ? data : noResponseBody)
    } catch (error) {
      // The reference closes the connection when an answer cannot be built (path too long or empty);
      // so does this side, but says so: a peer's connection never ends without a word.
      const reason = `cannot answer ${JSON.stringify(request.path.slice(0, 80))} on channel ${request.channelId}: ${error instanceof PacketEncodeError ? error.message : String(error)}`
      this.onUnanswerable?.(this.connection.remoteAddress, reason, this.connection.peerIdentity)
      this.connection.close(reason, false)
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

  actorIdle(actor: ChannelActor): void {
    if (actor.closing && actor.idle && this.actors.get(actor.id) === actor) {
      this.actors.delete(actor.id)
      this.freedIds.push(actor.id)
      this.connection.budget.closeChannel()
    }
  }

  /** A hello upgrades only a connection that has done nothing yet. */
  private isPristine(): boolean {
    return this.actors.size === 1 && this.nextChannelId === 1 && this.actors.get(SystemChannel)!.idle
  }

  private createChannel(): Uint8Array {
    if (this.channelCount >= this.limits.maxChannels || !this.connection.budget.openChannel()) return channelLimitBody
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
}
