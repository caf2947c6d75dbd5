// The calling side of a mesh connection (PROTOCOL.md §10-§14): the calls this side makes on the
// channels it opened, and their answers. A call is written on its channel (FIFO per channel,
// checked by request id), or held while the peer holds all the requests it may from this
// connection, or its connection credit has no room for the call's whole body (meshHeldCalls.ts,
// meshCredit.ts); its body streams out under the peer's window when it is too large
// for one packet (meshStreamOut.ts); its answer is read as it comes, whole or as a stream, and
// hands the caller its result once; a deadline or the caller's cancellation gives it up and tells
// the peer to stop. MeshSession (meshSession.ts) is this class with its own channels, the serving
// side and the control channel added; it hands this class the packets on its own channels.
import { type Compression, DecompressionFailed } from "../protocol/compression.ts"
import { Status } from "../protocol/constants.ts"
import {
  clampDeadlineMs,
  ChunkHeader,
  decodeErrorBody,
  decodeMeta,
  emptyMeta,
  encodeChannelPair,
  encodeCredit,
  envelopeBodyOffset,
  EnvelopeFlag,
  EnvelopeKind,
  type Hello,
  MeshDefaults,
  MeshPath,
  type Meta
} from "../protocol/mesh.ts"
import { isFirstPacket, isLastPacket } from "../protocol/status.ts"
import type { CancelSignal } from "./cancellation.ts"
import { monotonicMs } from "./clock.ts"
import type { Connection } from "./connection.ts"
import { Deadlines } from "./deadlines.ts"
import { ConnectionClosed, type Overloaded, RequestTimeout } from "./errors.ts"
import { noBody } from "./meshAnswer.ts"
import { type Call, type CallCallback, type CallOptions, Cancelled, type MeshCallError, type MeshReply, OwnChannel, RemoteError } from "./meshChannels.ts"
import { chunkOf, trailersOf, unpackBody } from "./meshChunks.ts"
import { CreditReturn, CreditWindow } from "./meshCredit.ts"
import { HeldCalls } from "./meshHeldCalls.ts"
import type { StatedLimitValues } from "./meshStatedLimits.ts"
import { StreamSender } from "./meshStreamOut.ts"
import type { Slab } from "./readSlabs.ts"
import type { Dispatch } from "./request.ts"
import { IncomingStream, StreamFailed } from "./streams.ts"

/** What a MeshSession (meshSession.ts) is built with; its calling side, built first, reads it first. */
export interface MeshSessionOptions {
  readonly isDialer: boolean
  readonly agreed: Hello
  /** The stream window this side advertised: how much the peer may send before a grant. */
  readonly receiveWindow: number
  /** The connection credit this side grants the peer (its own hello's `maxBytes`, where both name `conncredit`, §13); undefined: none. */
  readonly grantCredit?: number | undefined
  /** Serves the peer's requests; undefined answers every one with not_found. */
  readonly dispatch: Dispatch | undefined
  /**
   * A dialer's own hello's limits on the peer's calls (§10), kept by refusing past them
   * (meshStatedLimits.ts); undefined on an acceptor, which pauses its reading instead (§8).
   */
  readonly statedLimits?: StatedLimitValues | undefined
  readonly maxMessageBytes: number
  /** The agreed codec and the smallest body this side compresses; undefined: no codec agreed. */
  readonly compression: Compression | undefined
  readonly log: (event: string, fields: Record<string, unknown>) => void
  /** One of this side's channels stopped streaming (a request body sent, a streamed answer ended): it can take requests again. */
  readonly onChannelFree?: () => void
  /** The peer refused one of this side's channels (§11 `refuse`): take no new request on it; the session closes it once its calls are answered. */
  readonly onChannelRefused?: (channel: OwnChannel) => void
}

/** Request ids run 1..2^32-1 per channel and wrap, skipping 0. */
const nextRequestId = (channel: OwnChannel): number => {
  const id = channel.nextRequestId
  channel.nextRequestId = (id % 0xffff_ffff) + 1
  return id
}

/** The call is over: its listener leaves the caller's cancellation (see Call.signal). */
const detach = (call: Call): void => {
  const signal = call.signal
  if (signal === undefined) return
  signal.removeEventListener("abort", call.onAbort!)
  call.signal = undefined
  call.onAbort = undefined
}

export abstract class MeshCaller {
  readonly connection: Connection
  /** Round-trip time of the last answered ping, in ms (meshSession.ts pings; its streams read it: streams.ts RoundTrip). */
  lastRttMs: number | undefined = undefined
  readonly agreed: Hello
  readonly ownControl: OwnChannel
  protected readonly options: MeshSessionOptions
  protected readonly closeListeners: Array<(error: ConnectionClosed) => void> = []
  /**
   * The peer's request budget for this connection (its hello's `maxRequests`, §10): calls on this
   * side's channels written and not yet answered stay at most this many; the rest wait in it, in order.
   */
  protected readonly heldCalls: HeldCalls
  /** Sends this side's streamed bodies, request and answer alike. */
  protected readonly streamOut: StreamSender
  /** The peer's connection credit (its hello's `maxBytes` under `conncredit`, §13), undefined where it grants none. */
  private readonly creditWindow: CreditWindow | undefined
  /** The connection credit this side grants the peer, undefined where it grants none: what the peer's bytes give back. */
  readonly creditReturn: CreditReturn | undefined
  /** Deadlines of this side's calls: one timer, not one per call. */
  protected readonly callDeadlines = new Deadlines<Call>((call) =>
    this.giveUp(call, new RequestTimeout({ message: `no answer within ${call.timeoutMs} ms`, timeoutMs: call.timeoutMs }))
  )

  constructor(connection: Connection, options: MeshSessionOptions, ownControlId: number) {
    this.connection = connection
    this.options = options
    this.agreed = options.agreed
    const peerBytes = options.agreed.maxBytes
    this.creditWindow = peerBytes === undefined ? undefined : new CreditWindow(peerBytes)
    this.streamOut = new StreamSender(connection, options.agreed.streamWindow, options.agreed.maxMetaBytes, options.agreed.features.includes("trailers"), options.compression, this.closeListeners, this.creditWindow)
    this.heldCalls = new HeldCalls(options.agreed.maxRequests ?? Infinity, this.creditWindow)
    this.ownControl = new OwnChannel(ownControlId)
    const granted = options.grantCredit
    this.creditReturn = granted === undefined ? undefined : new CreditReturn(granted, (bytes) => this.creditGrant(bytes))
  }

  /**
   * A refused channel (§11 `refuse`) closes once its calls are answered and its last packets are
   * written: the session, which keeps this side's channels, closes it.
   */
  protected abstract closeRefused(channel: OwnChannel): void

  /**
   * Sends a request on `channel`; `callback` runs exactly once. A body given as an AsyncIterable
   * streams out under the peer's window. Throws (nothing sent) when the request cannot be encoded.
   */
  call(channel: OwnChannel, path: string, body: Uint8Array | AsyncIterable<Uint8Array>, options: CallOptions, callback: CallCallback): void {
    this.send(channel, path, body, options.timeoutMs ?? 0, options.meta ?? emptyMeta, options.signal, options.streamResponse === true, callback, undefined)
  }

  /**
   * `call` with its options as arguments, and a `context` handed back to `callback`: the client's
   * path, which then needs no options object or closure per request. `deadlineAt`: when `timeout`
   * runs out in monotonicMs() terms (clock.ts), if the caller knows (no clock read here), else 0.
   */
  send(
    channel: OwnChannel,
    path: string,
    body: Uint8Array | AsyncIterable<Uint8Array>,
    timeout: number,
    meta: Meta,
    signal: CancelSignal | undefined,
    streamResponse: boolean,
    callback: CallCallback,
    context: unknown,
    deadlineAt = 0
  ): void {
    if (this.connection.closed) {
      return callback(new ConnectionClosed({ message: this.connection.closeError!.message, sent: false }), undefined, context)
    }
    const timeoutMs = clampDeadlineMs(timeout)
    const call: Call = {
      requestId: 0,
      callback,
      context,
      streamResponse,
      channel,
      deadlineSlot: -1,
      deadlineAt: 0,
      timeoutMs,
      done: false,
      credit: 0,
      incoming: undefined,
      signal: undefined,
      onAbort: undefined
    }
    if (channel === this.ownControl || this.heldCalls.admits(body, channel)) this.transmit(call, path, body, meta, timeoutMs)
    // The peer holds all the requests (or bytes) it may from this connection: the call waits its turn.
    else this.heldCalls.hold(call, path, body, meta, this.agreed.maxMetaBytes, timeoutMs)
    if (timeoutMs > 0) {
      if (deadlineAt > 0) this.callDeadlines.addAt(call, deadlineAt)
      else this.callDeadlines.add(call, timeoutMs)
    }
    if (signal !== undefined) {
      // Before the answer: the call fails. While a streamed answer comes in: its stream fails and
      // the peer stops sending it (the caller stopped reading, an Effect consumer was interrupted).
      const onAbort = () => (call.done ? this.cancelAnswer(call) : this.giveUp(call, new Cancelled({ message: "request cancelled by the caller" })))
      if (signal.aborted) return onAbort()
      // An abort fires once: no `once` option to allocate.
      signal.addEventListener("abort", onAbort)
      call.signal = signal
      call.onAbort = onAbort
    }
  }

  /** Writes a call's request; `timeoutMs` is what remains of its deadline (0: none). */
  private transmit(call: Call, path: string, body: Uint8Array | AsyncIterable<Uint8Array>, meta: Meta, timeoutMs: number): void {
    const channel = call.channel
    const requestId = nextRequestId(channel)
    const whole = body instanceof Uint8Array && body.length <= MeshDefaults.chunkBytes
    const packed = whole && channel !== this.ownControl ? this.pack(body) : undefined
    this.connection.writer.sendEnvelope(
      whole ? Status.RequestWhole : Status.RequestFirstMore,
      path,
      channel.id,
      EnvelopeKind.request,
      packed !== undefined ? EnvelopeFlag.compressed : 0,
      requestId,
      meta,
      this.agreed.maxMetaBytes,
      timeoutMs,
      packed ?? (whole ? body : noBody)
    )
    call.requestId = requestId
    channel.fifo.push(call)
    if (channel !== this.ownControl) {
      this.heldCalls.outstanding++
      // The peer holds its whole body until it answers (§13 `conncredit`).
      if (whole && this.creditWindow !== undefined && body.length > 0) {
        call.credit = body.length
        this.creditWindow.debit(body.length)
      }
    }
    if (!whole) {
      void this.streamOut.send(channel.id, path, Status.RequestContinue, Status.RequestLast, body, (window) => {
        channel.sending = window
        if (window === undefined && channel.refused) this.closeRefused(channel)
        else if (window === undefined) this.options.onChannelFree?.()
      })
    }
  }

  /**
   * The oldest call on `channel` has its whole answer: the peer no longer holds it (it gave it
   * back to its budget before it wrote the answer's last packet), so the longest-held call goes out.
   */
  private answered(channel: OwnChannel): void {
    const call = channel.fifo.shift()!
    if (channel === this.ownControl) return
    this.heldCalls.outstanding--
    if (call.credit > 0) this.creditWindow!.add(call.credit)
    this.sendHeld()
    // Refused, it left the client's pool: it closes with its last answer, whichever kind that is
    // (a call held on it when the peer refused another went out after, and may have been served).
    if (channel.refused) this.closeRefused(channel)
  }

  /** Held calls go out, in order, while the peer has room for them. */
  private sendHeld(): void {
    for (let held = this.heldCalls.next(); held !== undefined; held = this.heldCalls.next()) {
      const call = held.call
      const timeoutMs = call.timeoutMs === 0 ? 0 : Math.max(1, call.deadlineAt - monotonicMs())
      try {
        this.transmit(call, held.path, held.body, held.meta, timeoutMs)
      } catch (error) {
        // Checked encodable when held: only a write queue over its limit refuses it now.
        this.finishCall(call, error as Overloaded, undefined)
      }
    }
  }

  /** The peer granted back `bytes` of its connection credit (`/sys/credit`, §13). */
  creditGranted(bytes: number): void {
    if (this.creditWindow === undefined) return
    this.creditWindow.add(bytes)
    this.sendHeld()
  }

  /**
   * Grants the peer back `bytes` of the connection credit this side gives it: a control message,
   * sent from a read or a handler's read of its body, so it backs up as the others do.
   */
  private creditGrant(bytes: number): void {
    this.sendControl(MeshPath.credit, encodeCredit(bytes))
  }

  /** Sends a request that gets no answer (a push); behind `behind`'s packets still waiting in the writer, if any (see cancelAt). */
  push(channel: OwnChannel, path: string, body: Uint8Array, meta: Meta = emptyMeta, behind = channel.id): void {
    const requestId = nextRequestId(channel)
    const packed = channel !== this.ownControl ? this.pack(body) : undefined
    const flags = packed === undefined ? EnvelopeFlag.oneway : EnvelopeFlag.oneway | EnvelopeFlag.compressed
    this.connection.writer.sendEnvelope(Status.RequestWhole, path, channel.id, EnvelopeKind.request, flags, requestId, meta, this.agreed.maxMetaBytes, 0, packed ?? body, behind)
  }

  /**
   * Tells the peer to stop `call`. Behind what its channel still has waiting in the writer's lane
   * (a request sent behind a streamed body waits there): written ahead of it, the cancel would
   * find nothing at the peer, be dropped, and the request would then run to its end.
   */
  private cancelAt(call: Call): void {
    this.sendControl(MeshPath.cancel, encodeChannelPair(call.channel.id, call.requestId), call.channel.id)
  }

  /**
   * Sends one of this side's control messages (a window grant, a cancel, a channel's close or
   * refusal), from a read, a timer or a stream's consumer. One the write queue cannot take (over
   * its hard limit: the peer does not read) closes the connection, logged, instead of throwing
   * into whatever sent it: the stream it grants would never go on, the channel counts would drift.
   */
  sendControl(path: string, body: Uint8Array, behind = this.ownControl.id): void {
    if (this.connection.closed) return
    try {
      this.push(this.ownControl, path, body, emptyMeta, behind)
    } catch (error) {
      this.options.log("control-not-sent", { remote: this.connection.remoteAddress, path, message: String(error) })
      this.connection.close(`cannot send ${path}: ${String(error)}`, false)
    }
  }

  /** The compressed form of a body worth compressing (§12.1), else undefined. */
  private pack(body: Uint8Array): Buffer | undefined {
    return this.options.compression?.pack(body)
  }

  /**
   * The read slab a stream chunk is a view of (readSlabs.ts), to be referenced by its stream
   * instead of keeping the slab from reuse; undefined for a chunk of its own (decompressed).
   */
  inPlace(data: Buffer, chunk: Buffer): Slab | undefined {
    if (chunk.buffer !== data.buffer) return undefined
    this.connection.readInPlace()
    return this.connection.readSlab
  }

  /** The caller stops waiting: tell the peer to stop, keep the slot so pairing holds. */
  private giveUp(call: Call, error: MeshCallError): void {
    if (!call.done) this.abandon(call, error)
  }

  /** Fails a call (and its answer's stream, if the caller already has it) and cancels it at the peer. */
  private abandon(call: Call, error: MeshCallError): void {
    this.finishCall(call, error, undefined)
    call.incoming?.fail(error)
    if (call.requestId === 0) {
      // Held, never sent: nothing to tell the peer; the ones behind it may fit now.
      this.heldCalls.remove(call)
      return this.sendHeld()
    }
    this.cancelAt(call)
  }

  protected finishCall(call: Call, error: MeshCallError | undefined, reply: MeshReply | undefined): void {
    if (call.done) return
    call.done = true
    this.callDeadlines.remove(call)
    // A streamed answer stays cancellable until its last packet (`answerEnded`).
    if (reply?.stream === undefined) detach(call)
    call.callback(error, reply, call.context)
  }

  /**
   * A streamed answer's caller gave up: its stream fails, what it holds unread is dropped (its
   * budget and connection credit go back: nobody will read it), the peer is told to stop.
   */
  private cancelAnswer(call: Call): void {
    const incoming = call.incoming
    if (incoming === undefined || call.channel.fifo.peek() !== call) return
    incoming.abandon(new Cancelled({ message: "request cancelled by the caller" }))
    this.cancelAt(call)
  }

  protected onResponse(channel: OwnChannel, status: number, data: Buffer): void {
    const call = channel.fifo.peek()
    if (call === undefined) return this.violation("unexpected-response", `response on channel ${channel.id} with no request outstanding`)
    if (!isFirstPacket(status)) {
      // A continuation of a streamed answer: a chunk header byte and bytes, or an error or trailers on the last packet.
      let trailers: Meta | undefined
      if (data[0] === ChunkHeader.error) {
        const body = decodeErrorBody(data.subarray(1))
        call.incoming?.fail(new RemoteError(body))
      } else if (data[0] === ChunkHeader.trailers) {
        trailers = trailersOf(data, status, call.incoming, this.agreed.maxMetaBytes)
      } else if (call.incoming === undefined) {
        // Dropped unread (its answer could not be decompressed): its credit goes back at once.
        this.creditDroppedChunk(data)
      } else {
        const chunk = chunkOf(this.options.compression, data)
        if (chunk instanceof DecompressionFailed) {
          // The answer cannot be read on: the call fails, the peer is told to stop, the rest is dropped unread.
          this.abandon(call, chunk)
          call.incoming = undefined
        } else if (!call.incoming.push(chunk, this.inPlace(data, chunk))) return this.violation("window-exceeded", `peer sent past the stream window on channel ${channel.id}`)
      }
      if (isLastPacket(status)) {
        this.answered(channel)
        call.incoming?.end(trailers)
        detach(call)
        this.options.onChannelFree?.()
      }
      return
    }
    // The envelope's fields read where they lie: no Envelope object per answer.
    let bodyOffset: number
    let meta: Meta
    try {
      bodyOffset = envelopeBodyOffset(data, this.agreed.maxMetaBytes)
      meta = decodeMeta(data, bodyOffset)
    } catch (error) {
      return this.violation("bad-envelope", (error as Error).message)
    }
    const requestId = data.readUInt32BE(4)
    if (requestId !== call.requestId) {
      return this.violation("request-id", `answer for request ${requestId} on channel ${channel.id}, expected ${call.requestId}`)
    }
    let body: Buffer | DecompressionFailed = data.subarray(bodyOffset)
    // Asked only of a compressed body: `instanceof` walks a Buffer's prototype chain per answer.
    let unreadable = false
    if ((data[1]! & EnvelopeFlag.compressed) !== 0) {
      body = unpackBody(this.options.compression, body)
      unreadable = body instanceof DecompressionFailed
    }
    if (data[0] === EnvelopeKind.error) {
      const error = new RemoteError(decodeErrorBody(unreadable ? noBody : (body as Buffer)))
      if (isLastPacket(status)) {
        // The request failed; if its body is still streaming out (it is the channel's latest
        // request), the stream stops and its last packet says why.
        if (channel.sending !== undefined && channel.fifo.length === 1) channel.sending.close(error)
        this.answered(channel)
      }
      return this.finishCall(call, error, undefined)
    }
    if (unreadable) {
      const failed = body as DecompressionFailed
      if (!isLastPacket(status)) return this.abandon(call, failed) // a streamed answer: cancelled, the rest dropped unread
      this.answered(channel)
      return this.finishCall(call, failed, undefined)
    }
    body = body as Buffer
    if (isLastPacket(status)) {
      this.answered(channel)
      return this.finishCall(call, undefined, { meta, data: body, stream: undefined })
    }
    // A streamed answer begins: the connection reads into reused memory from now on. A dialer's
    // stated maxBytes is for the acceptor's calls to it (§10): its answers count in neither that
    // nor the credit (granted back as they come), each held to its window alone, so answers whose
    // readers stopped (a sidecar's slow callers) never stop another caller's on the connection.
    const dialer = this.options.isDialer
    const incoming = new IncomingStream(this.options.receiveWindow, (bytes) => this.grant(channel.id, bytes), dialer ? undefined : this.connection.budget, dialer ? this.creditReturn?.atArrival : this.creditReturn, this)
    this.connection.readIntoSlabsSoon()
    call.incoming = incoming
    if (body.length > 0 && !incoming.push(body)) return this.violation("window-exceeded", `peer sent past the stream window on channel ${channel.id}`)
    if (call.streamResponse) return this.finishCall(call, undefined, { meta, data: Buffer.alloc(0), stream: incoming })
    incoming.readAll(this.options.maxMessageBytes).then(
      (whole) => this.finishCall(call, undefined, { meta, data: whole, stream: undefined }),
      (error: MeshCallError) => this.finishCall(call, error instanceof RemoteError || error instanceof StreamFailed ? error : new StreamFailed({ message: String(error) }), undefined)
    )
  }

  /** Stream bytes that arrived for no stream (dropped unread) give their connection credit back at once. */
  creditDropped(bytes: number): void {
    if (this.creditReturn === undefined || bytes === 0) return
    this.creditReturn.received(bytes)
    this.creditReturn.released(bytes)
  }

  /**
   * `creditDropped` for a whole continuation packet's data chunk, counted as its sender counted
   * it: decompressed. One that cannot be decompressed is not given back (its sender broke the
   * frame, §13); nothing is decompressed where this side grants no credit.
   */
  creditDroppedChunk(data: Buffer): void {
    if (this.creditReturn === undefined) return
    const chunk = chunkOf(this.options.compression, data)
    if (!(chunk instanceof DecompressionFailed)) this.creditDropped(chunk.length)
  }

  /** Grants `bytes` more of a channel's stream window; none for nothing (the empty last chunk of a stream dropped unread). */
  grant(channelId: number, bytes: number): void {
    if (bytes === 0) return
    this.sendControl(MeshPath.window, encodeChannelPair(channelId, bytes))
  }

  violation(rule: string, message: string): void {
    this.options.log("protocol-violation", { remote: this.connection.remoteAddress, rule, message })
    this.connection.close(`protocol violation (${rule}): ${message}`, false)
  }
}
