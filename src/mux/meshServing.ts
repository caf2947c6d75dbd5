// Serving the channels the peer opens on a mesh connection (PROTOCOL.md §10-§14), owned by a
// MeshSession (meshSession.ts), which hands it every packet on a channel not its own: a request is
// read (its body whole, or a stream under this side's window), run by the dispatch one at a time
// per channel (the rest wait in the channel's mailbox), refused in its turn when the server holds
// all it may (a dialer: past the limits it stated, meshStatedLimits.ts), is draining or cannot
// read it, interrupted by the caller's cancel or its deadline, and answered (meshAnswer.ts,
// meshStreamOut.ts). Requests on the peer's control channel are read here too and handed back to
// the session (meshControl.ts answers them).
import { type Compression, DecompressionFailed } from "../protocol/compression.ts"
import { Status } from "../protocol/constants.ts"
import { ChunkHeader, decodeEnvelope, decodeErrorBody, decodeMeta, encodeChannelId, envelopeBodyOffset, EnvelopeFlag, MeshErrorCode, MeshPath, type Meta, scanMeta } from "../protocol/mesh.ts"
import { isFirstPacket, isLastPacket } from "../protocol/status.ts"
import type { Connection } from "./connection.ts"
import type { ConnectionClosed } from "./errors.ts"
import { type Dispatch, failure, type IncomingRequest, isPromiseLike, type Outcome, PendingOutcome } from "./request.ts"
import { Cancelled, PeerChannel, RemoteError, Served } from "./meshChannels.ts"
import { Deadlines } from "./deadlines.ts"
import type { Slab } from "./readSlabs.ts"
import { chunkOf, trailersOf, unpackBody } from "./meshChunks.ts"
import { answerPath, longPath, longPathRefusal, writeAnswerHead } from "./meshAnswer.ts"
import type { CreditReturn } from "./meshCredit.ts"
import type { StreamSender } from "./meshStreamOut.ts"
import { type StatedLimitValues, StatedLimits } from "./meshStatedLimits.ts"
import { IncomingStream, type SendWindow, StreamFailed } from "./streams.ts"

/** What the serving side asks of its session: to talk on the control channels and to end the connection. */
export interface ServingSession {
  /** Sends a control message on this side's control channel (a refusal); one it cannot queue closes the connection. */
  sendControl(path: string, body: Uint8Array): void
  /** Grants the peer `bytes` more of a stream's window on `channelId`. */
  grant(channelId: number, bytes: number): void
  /** The connection credit this side grants the peer (§13 `conncredit`), undefined where it grants none. */
  readonly creditReturn: CreditReturn | undefined
  /** A continuation's data chunk that arrived for no stream, dropped: its credit goes back at once. */
  creditDroppedChunk(data: Buffer): void
  /** The read slab a stream chunk is a view of (readSlabs.ts), undefined for a chunk of its own. */
  inPlace(data: Buffer, chunk: Buffer): Slab | undefined
  /** The peer broke a rule: logged, and the connection closes. */
  violation(rule: string, message: string): void
  /** A request on the peer's control channel, read. */
  onControl(path: string, requestId: number, body: Buffer, oneway: boolean): void
}

export interface ServingOptions {
  readonly isDialer: boolean
  /** The stream window this side advertised: how much the peer may send before a grant. */
  readonly receiveWindow: number
  /** Serves the peer's requests; undefined answers every one with not_found. */
  readonly dispatch: Dispatch | undefined
  /** A dialer's own limits on the peer's calls, kept by refusing past them (meshStatedLimits.ts); undefined on an acceptor. */
  readonly statedLimits?: StatedLimitValues | undefined
  readonly compression: Compression | undefined
  readonly log: (event: string, fields: Record<string, unknown>) => void
}

const noData = Buffer.alloc(0)

/** What a request refused `overloaded` is told, read whole (onRequest) or skipped unread (onOversize). */
const serverOverloadedMessage = "server overloaded; retry elsewhere"
const channelRefusedMessage = "channel refused: the server holds all the channels it may; retry elsewhere"

const noDispatch: Dispatch = (request) => failure(MeshErrorCode.notFound, `no handler for ${request.path}`, false)

export class PeerChannelServer {
  private readonly connection: Connection
  private readonly session: ServingSession
  private readonly peerControl: number
  private readonly maxMetaBytes: number
  private readonly isDialer: boolean
  private readonly receiveWindow: number
  private readonly compression: Compression | undefined
  private readonly log: (event: string, fields: Record<string, unknown>) => void
  private readonly dispatch: Dispatch
  /** A dialer's limits on the peer's calls; undefined on an acceptor. */
  private readonly stated: StatedLimits | undefined
  /** Sends the answers that stream out (the session's, shared with its calls). */
  private readonly streamOut: StreamSender
  /** The channels the peer opened, its control channel included once used. */
  private readonly peer = new Map<number, PeerChannel>()
  /** This side said go-away: new requests from the peer are refused with `draining`. */
  draining = false
  /** Reading is paused until the writer drains (this side's answers backed up). */
  private pausedForWriter = false
  /** Deadlines of the requests it serves: one timer, not one per request. */
  private readonly servedDeadlines = new Deadlines<Served>((served) => {
    const channel = this.peer.get(served.request.channelId)
    if (channel !== undefined) this.interrupt(channel, served, MeshErrorCode.deadlineExceeded, `deadline of ${served.deadlineMs} ms passed`)
  })

  constructor(connection: Connection, session: ServingSession, peerControl: number, maxMetaBytes: number, streamOut: StreamSender, options: ServingOptions) {
    this.connection = connection
    this.session = session
    this.peerControl = peerControl
    this.maxMetaBytes = maxMetaBytes
    this.streamOut = streamOut
    this.isDialer = options.isDialer
    this.receiveWindow = options.receiveWindow
    this.compression = options.compression
    this.log = options.log
    this.dispatch = options.dispatch ?? noDispatch
    this.stated = options.isDialer && options.statedLimits !== undefined ? new StatedLimits(connection, options.statedLimits, options.log) : undefined
  }

  /** Channels the peer opened on this connection, its control channel not counted. */
  get channelCount(): number {
    let n = 0
    for (const id of this.peer.keys()) if (id !== 0) n++
    return n
  }

  /** Requests being served or waiting on the peer's channels. */
  get servingCount(): number {
    let n = 0
    for (const channel of this.peer.values()) {
      n += channel.mailbox.length + (channel.running === undefined && channel.sendingFor === undefined ? 0 : 1)
    }
    return n
  }

  /** Where a continuation's data chunk goes, piece by piece (the session's onPacketPart): the body streaming in on `channelId`. */
  receivingOn(channelId: number): IncomingStream | undefined {
    return this.peer.get(channelId)?.receiving
  }

  /** The window of an answer streaming out on the peer's channel `channelId`, for the peer's grants. */
  sendingOn(channelId: number): SendWindow | undefined {
    return this.peer.get(channelId)?.sending
  }

  /** The peer's cancel (§11): running, waiting in the mailbox, or done running with its answer still streaming out. */
  cancel(channelId: number, requestId: number): void {
    const channel = this.peer.get(channelId)
    const served = channel === undefined
      ? undefined
      : channel.running?.requestId === requestId
      ? channel.running
      : channel.sendingFor?.requestId === requestId
      ? channel.sendingFor
      : channel.mailbox.find((s) => s.requestId === requestId)
    if (served !== undefined) this.interrupt(channel!, served, MeshErrorCode.cancelled, "cancelled by the caller")
  }

  /** The peer closed one of its channels (§11 `close`). */
  closedByPeer(channelId: number): void {
    // Only the peer's own channels are in `peer`; one never opened or already gone: nothing to do.
    const channel = channelId === this.peerControl ? undefined : this.peer.get(channelId)
    if (channel === undefined) return
    channel.closing = true
    this.forgetIfClosed(channel)
  }

  onRequest(channelId: number, status: number, rawPath: string, data: Buffer): void {
    const channel = this.channelFor(channelId)
    if (!isFirstPacket(status)) {
      const receiving = channel.receiving
      let trailers: Meta | undefined
      if (data[0] === ChunkHeader.error) receiving?.fail(new StreamFailed({ message: `caller aborted the request body: ${decodeErrorBody(data.subarray(1)).message}` }))
      else if (data[0] === ChunkHeader.trailers) trailers = trailersOf(data, status, receiving, this.maxMetaBytes)
      else if (receiving === undefined) {
        // No stream takes it (its request was refused unread): its credit goes back at once.
        this.session.creditDroppedChunk(data)
      } else {
        const chunk = chunkOf(this.compression, data)
        if (chunk instanceof DecompressionFailed) receiving.fail(chunk)
        else if (!receiving.push(chunk, this.session.inPlace(data, chunk))) return this.session.violation("window-exceeded", `peer sent past the stream window on channel ${channelId}`)
      }
      if (isLastPacket(status)) {
        receiving?.end(trailers)
        channel.receiving = undefined
      }
      return
    }
    let bodyOffset: number
    let remaining: number
    try {
      bodyOffset = envelopeBodyOffset(data, this.maxMetaBytes)
      // Never an unchecked wire value into a timer: digits only, clamped (PROTOCOL.md §14).
      remaining = scanMeta(data, bodyOffset)
    } catch (error) {
      return this.session.violation("bad-envelope", (error as Error).message)
    }
    const flags = data[1]!
    const requestId = data.readUInt32BE(4)
    const oneway = (flags & EnvelopeFlag.oneway) !== 0
    const isControl = channelId === this.peerControl
    // A control message is one packet (PROTOCOL.md §11): the body of one streamed would be charged
    // to the budget with nothing to read or drop it, held for the connection's life.
    if (isControl && !isLastPacket(status)) return this.session.violation("bad-control", "a control message in more than one packet")
    // The server as a whole holds all it may, or the channel was opened past its channel budget:
    // new work is refused at once (overloaded, not processed, so the caller may go elsewhere) and
    // its body is not kept. Judged as its header was read (Connection.refusesRequest): a larger
    // one was skipped then, unread (onOversize).
    const verdict = isControl || oneway || this.stated === undefined ? "take" : this.stated.verdict(data.length - bodyOffset)
    if (verdict === "closed") return
    const overloaded = !isControl && (channel.refused || this.connection.refusesRequest || verdict === "refuse")
    const stream = isLastPacket(status) || overloaded ? undefined : new IncomingStream(this.receiveWindow, (bytes) => this.session.grant(channelId, bytes), this.connection.budget, this.session.creditReturn)
    channel.receiving = stream
    if (stream !== undefined) this.connection.readIntoSlabsSoon()
    let body: Buffer = data.subarray(bodyOffset)
    const compressed = (flags & EnvelopeFlag.compressed) !== 0
    // A body that cannot be decompressed is refused (bad_request, not processed); the connection goes on.
    let unreadable: DecompressionFailed | undefined
    if (compressed) {
      if (channelId === this.peerControl) return this.session.violation("bad-control", "control messages are never compressed")
      const unpacked = unpackBody(this.compression, body)
      if (unpacked instanceof DecompressionFailed) {
        unreadable = unpacked
        body = Buffer.alloc(0)
      } else body = unpacked
    }
    if (stream !== undefined) {
      if (unreadable !== undefined) stream.fail(unreadable)
      // A first packet may carry up to maxWholeBodyBytes, which may be more than twice the window.
      else if (body.length > 0 && !stream.push(body)) return this.session.violation("window-exceeded", `peer sent past the stream window on channel ${channelId}`)
    }
    if (isControl) return this.session.onControl(rawPath, requestId, body, oneway)
    if (overloaded) body = noData
    const charged = body.length
    // A push is counted apart, and never pauses reading (InboundBudget.chargePush).
    const pushTaken = oneway && !overloaded && unreadable === undefined && this.connection.budget.chargePush(charged)
    // Held until the request is answered; past the connection's own budget its reading pauses.
    if (!oneway) {
      this.connection.budget.charge(1, charged)
      // Its caller counts its body in the credit until the answer (§13 `conncredit`).
      this.session.creditReturn?.received(charged)
    }
    // Its metadata is decoded when first read, from `data`, which a whole uncompressed body (a
    // view of it) keeps anyway; otherwise now, so the request does not hold the packet.
    const meta = stream === undefined && !overloaded && !compressed ? undefined : decodeMeta(data, bodyOffset)
    const served = new Served(this.connection.remoteAddress, this.connection.peerIdentity, this.maxMetaBytes, this.streamOut.trailersAgreed, channelId, rawPath, stream === undefined ? body : noData, requestId, meta, data, bodyOffset, remaining, stream, oneway, charged, remaining > 0 ? this.connection.receivedAt() : 0)
    const closed = this.connection.closeError
    if (closed !== undefined) served.abort(closed)
    const request = served.request
    if (oneway) {
      if (pushTaken) return this.runOneway(request, charged)
      stream?.discard()
      const message = overloaded ? "server overloaded" : unreadable !== undefined ? unreadable.message : "the connection holds all the pushes it may"
      this.log("push-failed", { path: request.path, code: unreadable !== undefined && !overloaded ? MeshErrorCode.badRequest : MeshErrorCode.overloaded, message })
      return
    }
    if (overloaded) {
      const message = channel.refused ? channelRefusedMessage : verdict === "refuse" ? this.stated!.refusalMessage : serverOverloadedMessage
      served.refusal = failure(MeshErrorCode.overloaded, message, false)
      served.abort()
    } else if (unreadable !== undefined) {
      served.refusal = failure(MeshErrorCode.badRequest, unreadable.message, false)
      served.abort()
    } else if (this.draining) {
      served.refusal = failure(MeshErrorCode.draining, "server is draining; retry elsewhere", false)
      served.abort()
    } else if (longPath(served)) {
      // No answer could carry its path: refused unread, not run and then left unanswerable.
      served.refusal = longPathRefusal(served)
      served.abort()
    }
    if (channel.running === undefined && channel.sending === undefined) {
      // An idle channel with nothing waiting (the usual case) runs it without the mailbox.
      if (channel.mailbox.length === 0) {
        if (this.run(channel, served) && channel.mailbox.length > 0) this.runNext(channel)
      } else {
        channel.mailbox.push(served)
        this.runNext(channel)
      }
      return
    }
    channel.mailbox.push(served)
    // Waiting its turn: its deadline runs from now. Run at once, it got one only if its handler
    // answers later (run): a synchronous answer needs no heap entry.
    if (served.deadline > 0) this.servedDeadlines.addAt(served, served.deadline)
  }

  /**
   * The channel a packet opens or goes on. One closed while busy and used again (its opener reused
   * the id, §11) goes on as the same channel, and is no longer forgotten when it is idle.
   */
  private channelFor(channelId: number): PeerChannel {
    const channel = this.peer.get(channelId)
    if (channel === undefined) return this.newPeerChannel(channelId)
    if (channel.closing) channel.closing = false
    return channel
  }

  private runOneway(request: IncomingRequest, charged: number): void {
    let outcome: Outcome | PromiseLike<Outcome>
    try {
      outcome = this.dispatch(request)
    } catch (error) {
      outcome = failure(MeshErrorCode.handlerFailed, String(error), true)
    }
    Promise.resolve(outcome).then((result) => {
      this.connection.budget.releasePush(charged)
      request.context.stream?.discard()
      if (!(result instanceof Uint8Array) && result._tag === "Failure") {
        this.log("push-failed", { path: request.path, code: result.code, message: result.message })
      }
    })
  }

  private runNext(channel: PeerChannel): void {
    for (;;) {
      const served = channel.mailbox.shift()
      if (served === undefined) return this.forgetIfClosed(channel)
      if (!this.run(channel, served)) return
    }
  }

  /**
   * A channel the peer opens by its first packet. Opened over the channel budget (the connection
   * refused it, §11 `refuse`), the peer is told so at once: its requests on it are refused until it closes it.
   */
  private newPeerChannel(channelId: number): PeerChannel {
    const channel = new PeerChannel(channelId)
    this.peer.set(channelId, channel)
    if (this.connection.channelRefused(channelId)) {
      channel.refused = true
      this.session.sendControl(MeshPath.refuse, encodeChannelId(channelId))
    }
    return channel
  }

  /** A channel its opener closed goes, with its place in the budgets, once nothing runs, waits or streams on it. */
  private forgetIfClosed(channel: PeerChannel): void {
    if (!channel.closing || channel.running !== undefined || channel.sendingFor !== undefined || channel.receiving !== undefined || channel.mailbox.length > 0) return
    this.peer.delete(channel.id)
    this.connection.closePeerChannel(channel.id)
  }

  /** Runs (or refuses) one request of an idle channel; true when the channel is idle again at once (answered synchronously). */
  private run(channel: PeerChannel, served: Served): boolean {
    if (served.refusal !== undefined) {
      this.servedDeadlines.remove(served)
      this.answer(channel, served, served.refusal)
      return true
    }
    channel.running = served
    let outcome: Outcome | PromiseLike<Outcome>
    try {
      outcome = this.dispatch(served.request)
    } catch (error) {
      outcome = failure(MeshErrorCode.handlerFailed, String(error), true)
    }
    if (outcome instanceof PendingOutcome) {
      // The hot path's (inbound sidecar): no promise, one listener.
      this.awaitDeadline(served)
      outcome.onSettled((result) => {
        if (this.complete(channel, served, result)) this.runNext(channel)
      })
      return false
    }
    if (isPromiseLike(outcome)) {
      this.awaitDeadline(served)
      const settle = (result: Outcome) => {
        if (this.complete(channel, served, result)) this.runNext(channel)
      }
      Promise.resolve(outcome).then(settle, (error: unknown) => settle(failure(MeshErrorCode.handlerFailed, String(error), true)))
      return false
    }
    return this.complete(channel, served, outcome)
  }

  /** A handler answers later: its deadline (if the caller gave one) may now interrupt it. */
  private awaitDeadline(served: Served): void {
    if (served.deadline > 0 && served.deadlineSlot < 0) this.servedDeadlines.addAt(served, served.deadline)
  }

  /**
   * A handler finished: answer it unless cancel or deadline already did (they moved the channel on
   * themselves). True when the caller should go on with the mailbox; false while an answer streams.
   */
  private complete(channel: PeerChannel, served: Served, outcome: Outcome): boolean {
    if (served.answered) return false
    channel.running = undefined
    this.servedDeadlines.remove(served)
    return !this.answer(channel, served, outcome)
  }

  /** Cancel or deadline: stop the handler and answer now; later requests on the channel go on. */
  private interrupt(channel: PeerChannel, served: Served, code: string, message: string): void {
    this.servedDeadlines.remove(served)
    served.abort(new Cancelled({ message }))
    if (channel.sendingFor === served) {
      // Its answer is streaming out: end the stream with the error instead.
      channel.sending?.close(new RemoteError({ code, message, processed: true }))
      return
    }
    if (served.answered) return
    if (channel.running !== served) {
      served.refusal = failure(code, `${message} before it ran`, false) // answered in its turn, without running
      return
    }
    channel.running = undefined
    this.answer(channel, served, failure(code, message, true))
    this.runNext(channel)
  }

  /** Writes an outcome; true when it streams out (the channel stays busy until it is done). */
  private answer(channel: PeerChannel, served: Served, outcome: Outcome): boolean {
    served.answered = true
    if (this.connection.closed) return false
    const streams = this.writeAnswer(channel, served, outcome)
    if (!streams) {
      // A dialer holds it until its answer is written (meshStatedLimits.ts).
      this.stated?.answered()
      this.finished(served)
    } else if (served.isLongLived) {
      // A tunnel: from its answer's head on it waits for nothing, and its unread bytes count in
      // the tunnels' pool (budget.ts), not against the connection's requests. Past the pool's room
      // it is ended as a cancel ends one: its handler is cancelled, its answer ends `overloaded`.
      this.connection.budget.release(1, 0)
      served.waiting = 0
      served.stream?.holdAsTunnel((error) => this.interrupt(channel, served, MeshErrorCode.overloaded, error.message))
    }
    return streams
  }

  /** A request is done with (its answer written): what it held goes back to the budget, its unread body is dropped. */
  private finished(served: Served): void {
    this.connection.budget.release(served.waiting, served.charged)
    if (!served.oneway) this.session.creditReturn?.answered(served.charged)
    served.waiting = 0
    served.charged = 0
    served.request.context.stream?.discard()
    this.pauseWhileBackedUp()
  }

  /**
   * An acceptor whose answers back up stops reading from that peer until they drain (PROTOCOL.md
   * §8): after each answer written, those of its control channel (meshControl.ts) included, and
   * after each control message of its own (MeshSession.sendControl).
   */
  pauseWhileBackedUp(): void {
    const writer = this.connection.writer
    if (!this.isDialer && !this.pausedForWriter && writer.congested && !this.connection.closed) {
      this.pausedForWriter = true
      this.connection.pauseReading()
      writer.whenWritable(() => {
        this.pausedForWriter = false
        this.connection.resumeReading()
      })
    }
  }

  /** Writes an answer's head; true when its body streams out after it (meshAnswer.ts). */
  private writeAnswer(channel: PeerChannel, served: Served, outcome: Outcome): boolean {
    const body = writeAnswerHead(this.connection, this.compression, this.maxMetaBytes, channel.id, served, outcome)
    if (body === undefined) return false
    channel.sendingFor = served
    void this.streamOut.send(channel.id, answerPath(served), Status.ResponseContinue, Status.ResponseLast, body, (window) => (channel.sending = window)).then(() => {
      channel.sendingFor = undefined
      this.finished(served)
      if (channel.running === undefined) this.runNext(channel)
    })
    return true
  }

  /**
   * A request of which only the envelope was read (the session's onOversize), refused in its turn:
   * above the whole-body limit (`bad_request`, not processed: its body should have streamed, §13),
   * or `overloaded`, skipped by the connection for the reasons onRequest refuses one so (the
   * server or its source holds all it may, or the channel was refused).
   */
  onOversize(channelId: number, rawPath: string, prefix: Buffer, length: number, overloaded: boolean): void {
    const envelope = this.readEnvelope(prefix)
    if (envelope === undefined) return
    const channel = this.channelFor(channelId)
    channel.receiving = undefined // its continuations, if any, are dropped as they come
    const oneway = (envelope.flags & EnvelopeFlag.oneway) !== 0
    // As onRequest: a dialer's stated limits close a peer that calls past them reading no answer
    // (the verdict's take or refuse does not matter here, the request is refused either way).
    if (overloaded && !oneway && this.stated?.verdict(length) === "closed") return
    const code = overloaded ? MeshErrorCode.overloaded : MeshErrorCode.badRequest
    const message = !overloaded
      ? `a message of ${length} bytes in one packet exceeds this server's whole-body limit; stream it`
      : channel.refused
      ? channelRefusedMessage
      : serverOverloadedMessage
    const served = new Served(this.connection.remoteAddress, this.connection.peerIdentity, this.maxMetaBytes, this.streamOut.trailersAgreed, channelId, rawPath, noData, envelope.requestId, envelope.meta, prefix, 0, 0, undefined, oneway, 0, 0)
    served.abort()
    if (oneway) {
      this.log("push-failed", { path: served.request.path, code, message: overloaded ? "server overloaded" : message })
      return
    }
    this.connection.budget.charge(1, 0)
    served.refusal = failure(code, message, false)
    channel.mailbox.push(served)
    if (channel.running === undefined && channel.sending === undefined) this.runNext(channel)
  }

  private readEnvelope(data: Buffer) {
    try {
      return decodeEnvelope(data, this.maxMetaBytes)
    } catch (error) {
      this.session.violation("bad-envelope", (error as Error).message)
      return undefined
    }
  }

  /** The connection closed: what runs, streams out or waits is aborted, and what waits never runs. */
  close(error: ConnectionClosed): void {
    for (const channel of this.peer.values()) {
      channel.receiving?.fail(error)
      // An answer still streaming out is cancelled too: nobody reads it now, and what feeds it (a
      // tunnel's app socket, held against maxTunnels) must close rather than wait for its own end.
      for (const served of [channel.running, channel.sendingFor, ...channel.mailbox]) {
        if (served === undefined) continue
        this.servedDeadlines.remove(served)
        served.abort(error)
      }
      // What waits its turn would answer nobody: it never runs (its budget went with the connection).
      channel.mailbox.length = 0
    }
    this.servedDeadlines.clear()
  }
}
