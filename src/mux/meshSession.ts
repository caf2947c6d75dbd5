// One connection in mesh mode (PROTOCOL.md §10-§14): both peers call and serve on it. This side
// opens channels in its own id range without a handshake and calls on them (FIFO per channel,
// checked by request id); it serves the channels the peer opens (one actor per channel, in
// order, each request interruptible by cancel or deadline); and both sides talk on their control
// channels: ping, go-away, cancel and stream-window grants. Errors travel typed. Bodies and
// stream chunks marked compressed are read with the codec both hellos agreed on, and this side
// compresses its own when it was asked to and it pays (§12.1).
import { type Codec, type Compression, DecompressionFailed } from "../protocol/compression.ts"
import { Status } from "../protocol/constants.ts"
import {
  AcceptorControlChannel,
  clampDeadlineMs,
  ChunkHeader,
  decodeMeta,
  decodeErrorBody,
  DialerControlChannel,
  emptyMeta,
  envelopeBodyOffset,
  encodeChannelId,
  encodeChannelPair,
  EnvelopeFlag,
  EnvelopeKind,
  type Hello,
  MeshDefaults,
  MeshPath,
  type Meta
} from "../protocol/mesh.ts"
import { isFirstPacket, isLastPacket } from "../protocol/status.ts"
import type { CancelSignal } from "./cancellation.ts"
import { Deadlines } from "./deadlines.ts"
import type { Connection, MessageSink } from "./connection.ts"
import { ConnectionClosed, type Overloaded, RequestTimeout } from "./errors.ts"
import type { Dispatch } from "./request.ts"
import { type Call, type CallCallback, type CallOptions, Cancelled, type MeshCallError, type MeshReply, OwnChannel, RemoteError } from "./meshChannels.ts"
import type { Slab } from "./readSlabs.ts"
import { chunkOf, trailersOf, unpackBody } from "./meshChunks.ts"
import { ChannelCap } from "./meshChannelCap.ts"
import { noBody } from "./meshAnswer.ts"
import { HeldCalls } from "./meshHeldCalls.ts"
import { ControlReceiver, type ControlSession } from "./meshControl.ts"
import { PeerChannelServer, type ServingSession } from "./meshServing.ts"
import { lastChunk, StreamSender } from "./meshStreamOut.ts"
import { IncomingStream, type SendWindow, StreamFailed } from "./streams.ts"

export { Cancelled, type CallCallback, type CallOptions, type MeshCallError, type MeshReply, OwnChannel, RemoteError } from "./meshChannels.ts"

export interface MeshSessionOptions {
  readonly isDialer: boolean
  readonly agreed: Hello
  /** The stream window this side advertised: how much the peer may send before a grant. */
  readonly receiveWindow: number
  /** Serves the peer's requests; undefined answers every one with not_found. */
  readonly dispatch: Dispatch | undefined
  readonly maxMessageBytes: number
  /** The agreed codec and the smallest body this side compresses; undefined: no codec agreed. */
  readonly compression: Compression | undefined
  readonly log: (event: string, fields: Record<string, unknown>) => void
  /** One of this side's channels stopped streaming (a request body sent, a streamed answer ended): it can take requests again. */
  readonly onChannelFree?: () => void
  /** The peer refused one of this side's channels (§11 `refuse`): take no new request on it; the session closes it once its calls are answered. */
  readonly onChannelRefused?: (channel: OwnChannel) => void
}

/** A refused channel whose last packets the writer still holds is looked at again this much later. */
const RefusedCloseRetryMs = 50

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

export class MeshSession implements MessageSink, ServingSession, ControlSession {
  readonly connection: Connection
  readonly agreed: Hello
  readonly ownControl: OwnChannel
  private readonly peerControl: number
  private readonly own = new Map<number, OwnChannel>()
  private nextOwnId: number
  /** Ids of own channels closed (`closeChannel`), opened again before new ones. */
  private readonly freeOwnIds: Array<number> = []
  /** Both hellos named `close`: either side may close the channels it opened (§11). */
  readonly closesChannels: boolean
  /** Both hellos named `refuse` and `close`: a channel over the receiver's budget is refused alone (§11). */
  private readonly refusesChannels: boolean
  /** See `channelCap`. */
  private readonly cap = new ChannelCap()
  /**
   * The peer's request budget for this connection (its hello's `maxRequests`, §10): calls on this
   * side's channels written and not yet answered stay at most this many; the rest wait in it, in order.
   */
  private readonly heldCalls: HeldCalls
  private readonly options: MeshSessionOptions
  private readonly closeListeners: Array<(error: ConnectionClosed) => void> = []
  /** Packets received so far: the keep-alive watches it to tell an idle connection. */
  packetsReceived = 0
  /**
   * The peer answered our go-away. It answers once it has stopped sending new requests, and TCP
   * keeps order, so every request it sent before is already here: closing is safe from now on.
   */
  goAwayAcknowledged = false
  /** Round-trip time of the last answered ping, in ms. */
  lastRttMs: number | undefined
  /** The pieces of a compressed or error chunk read in parts (onPacketPart), until its last. */
  private assembling: Array<Buffer> | undefined = undefined
  private assemblingBytes = 0
  /** Sends this side's streamed bodies, request and answer alike. */
  private readonly streamOut: StreamSender
  /** Deadlines of this side's calls: one timer, not one per call. */
  private readonly callDeadlines = new Deadlines<Call>((call) =>
    this.giveUp(call, new RequestTimeout({ message: `no answer within ${call.timeoutMs} ms`, timeoutMs: call.timeoutMs }))
  )
  /** Serves the channels the peer opens (meshServing.ts). */
  private readonly serving: PeerChannelServer
  /** Receives the peer's control requests (meshControl.ts). */
  private readonly control: ControlReceiver

  constructor(connection: Connection, options: MeshSessionOptions) {
    this.connection = connection
    this.options = options
    this.agreed = options.agreed
    this.streamOut = new StreamSender(connection, options.agreed.streamWindow, options.agreed.maxMetaBytes, options.agreed.features.includes("trailers"), options.compression, this.closeListeners)
    this.closesChannels = options.agreed.features.includes("close")
    this.heldCalls = new HeldCalls(options.agreed.maxRequests ?? Infinity)
    const ownControlId = options.isDialer ? DialerControlChannel : AcceptorControlChannel
    this.peerControl = options.isDialer ? AcceptorControlChannel : DialerControlChannel
    this.nextOwnId = ownControlId + 1
    // A refused channel goes once its opener closes it: refusing needs both features.
    this.refusesChannels = this.closesChannels && options.agreed.features.includes("refuse")
    connection.enableMesh(options.isDialer, ownControlId, this.peerControl, options.agreed.maxChannels, options.agreed.maxMetaBytes, this.refusesChannels)
    this.ownControl = new OwnChannel(ownControlId)
    this.own.set(ownControlId, this.ownControl)
    this.serving = new PeerChannelServer(connection, this, this.peerControl, options.agreed.maxMetaBytes, this.streamOut, options)
    this.control = new ControlReceiver(connection, this, this.serving, this.peerControl, options.agreed.maxMetaBytes)
    connection.attach(this)
  }

  get closed(): boolean {
    return this.connection.closed
  }

  /** The codec both hellos agreed on (§12.1), undefined for none. */
  get codec(): Codec | undefined {
    return this.options.compression?.codec
  }

  get remoteNode(): string {
    return this.agreed.node
  }

  /** Own channels, control channel not counted. */
  get channelCount(): number {
    return this.own.size - 1
  }

  /**
   * How many channels the peer took when it last refused one of ours (§11 `refuse`): open no
   * more than that until one of them closes or the cap's hold runs out (meshChannelCap.ts). Infinity
   * while none holds.
   */
  get channelCap(): number {
    return this.cap.value
  }

  /** Channels the peer opened on this connection, its control channel not counted. */
  get peerChannelCount(): number {
    return this.serving.channelCount
  }

  /** Requests being served or waiting on the peer's channels. */
  get servingCount(): number {
    return this.serving.servingCount
  }

  /** The peer said go-away: no new calls from this side. */
  get peerDraining(): boolean {
    return this.control.peerDraining
  }

  /** This side said go-away: new requests from the peer are refused with `draining`. */
  get localDraining(): boolean {
    return this.serving.draining
  }

  /** Calls this side still waits for, control channel excluded. */
  get callingCount(): number {
    let n = 0
    for (const channel of this.own.values()) if (channel !== this.ownControl) n += channel.outstanding
    return n
  }

  onClosed(listener: (error: ConnectionClosed) => void): void {
    this.closeListeners.push(listener)
  }

  /** Called when the peer says go-away. */
  onPeerDraining(listener: () => void): void {
    this.control.onPeerDraining(listener)
  }

  /** Opens a channel in this side's range. No round trip: the peer opens it on first use. */
  openChannel(): OwnChannel {
    const channel = new OwnChannel(this.freeOwnIds.pop() ?? this.nextOwnId++)
    this.own.set(channel.id, channel)
    this.connection.openChannel(channel.id, "client")
    return channel
  }

  /**
   * Closes one of this side's channels with nothing outstanding on it (§11): the peer forgets it
   * and gives its place back to its budgets, and its id is opened again before a new one. Only
   * when both hellos named `close`; false (nothing done) otherwise, or while the channel is in use,
   * its last packets included: a stream's chunks wait in the writer's lane while a control packet
   * goes ahead of them, and a close read before them would have the peer forget the channel (and
   * take what follows for packets of a new one: status-order, the connection closed).
   */
  closeChannel(channel: OwnChannel): boolean {
    if (!this.closesChannels || channel === this.ownControl || channel.outstanding > 0 || channel.sending !== undefined || this.own.get(channel.id) !== channel) return false
    if (this.connection.writer.holds(channel.id)) return false
    this.own.delete(channel.id)
    this.connection.closeChannel(channel.id)
    // One the peer took gave its place back: it may take another.
    if (!channel.refused) this.cap.lift()
    // A channel never used is unknown to the peer: nothing to tell it.
    if (channel.nextRequestId !== 1 && !this.connection.closed) this.push(this.ownControl, MeshPath.close, encodeChannelId(channel.id))
    this.freeOwnIds.push(channel.id)
    return true
  }

  /**
   * A refused channel (§11 `refuse`) closes once its calls are answered and its last packets are
   * written. Its close must not pass them (see closeChannel); nobody else closes it (the client
   * dropped it from its pool), so while the writer holds them it is tried again a little later.
   */
  private closeRefused(channel: OwnChannel): void {
    if (this.closeChannel(channel) || this.connection.closed || channel.fifo.length > 0 || channel.sending !== undefined) return
    if (this.own.get(channel.id) === channel && this.connection.writer.holds(channel.id)) setTimeout(() => this.closeRefused(channel), RefusedCloseRetryMs).unref()
  }

  // ---------------------------------------------------------------------------------------------
  // Calling

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
   * runs out in Date.now() terms, if the caller knows (no clock read here), else 0.
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
      incoming: undefined,
      signal: undefined,
      onAbort: undefined
    }
    if (channel === this.ownControl || this.heldCalls.hasRoom) this.transmit(call, path, body, meta, timeoutMs)
    // The peer holds all the requests it may from this connection: the call waits its turn.
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
    if (channel !== this.ownControl) this.heldCalls.outstanding++
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
    channel.fifo.shift()
    if (channel === this.ownControl) return
    this.heldCalls.outstanding--
    for (let held = this.heldCalls.next(); held !== undefined; held = this.heldCalls.next()) {
      const call = held.call
      const timeoutMs = call.timeoutMs === 0 ? 0 : Math.max(1, call.deadlineAt - Date.now())
      try {
        this.transmit(call, held.path, held.body, held.meta, timeoutMs)
      } catch (error) {
        // Checked encodable when held: only a write queue over its limit refuses it now.
        this.finishCall(call, error as Overloaded, undefined)
      }
    }
    // Refused, it left the client's pool: it closes with its last answer, whichever kind that is
    // (a call held on it when the peer refused another went out after, and may have been served).
    if (channel.refused) this.closeRefused(channel)
  }

  /** Sends a request that gets no answer (a push). */
  push(channel: OwnChannel, path: string, body: Uint8Array, meta: Meta = emptyMeta): void {
    const requestId = nextRequestId(channel)
    const packed = channel !== this.ownControl ? this.pack(body) : undefined
    const flags = packed === undefined ? EnvelopeFlag.oneway : EnvelopeFlag.oneway | EnvelopeFlag.compressed
    this.connection.writer.sendEnvelope(Status.RequestWhole, path, channel.id, EnvelopeKind.request, flags, requestId, meta, this.agreed.maxMetaBytes, 0, packed ?? body)
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

  /** Measures the round trip to the peer. */
  ping(callback: (error: MeshCallError | undefined, rttMs: number) => void): void {
    const started = performance.now()
    const stamp = Buffer.allocUnsafe(8)
    stamp.writeDoubleBE(started)
    this.call(this.ownControl, MeshPath.ping, stamp, {}, (error) => {
      const rtt = performance.now() - started
      if (error === undefined) this.lastRttMs = rtt
      callback(error, rtt)
    })
  }

  /**
   * Says go-away: the peer sends no new requests; new ones that cross it are refused with
   * `draining` (not processed, so the peer sends them elsewhere). The peer's answer sets
   * `goAwayAcknowledged`.
   */
  goAway(reason: string): void {
    if (this.serving.draining || this.connection.closed) return
    this.serving.draining = true
    this.call(this.ownControl, MeshPath.goAway, Buffer.from(JSON.stringify({ reason }), "utf8"), {}, (error) => {
      if (error === undefined) this.goAwayAcknowledged = true
    })
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
      // Held, never sent: nothing to tell the peer.
      return this.heldCalls.remove(call)
    }
    if (!this.connection.closed) {
      this.push(this.ownControl, MeshPath.cancel, encodeChannelPair(call.channel.id, call.requestId))
    }
  }

  private finishCall(call: Call, error: MeshCallError | undefined, reply: MeshReply | undefined): void {
    if (call.done) return
    call.done = true
    this.callDeadlines.remove(call)
    // A streamed answer stays cancellable until its last packet (`answerEnded`).
    if (reply?.stream === undefined) detach(call)
    call.callback(error, reply, call.context)
  }

  /** A streamed answer's caller gave up: its stream fails, the peer is told to stop. */
  private cancelAnswer(call: Call): void {
    const incoming = call.incoming
    if (incoming === undefined || call.channel.fifo[0] !== call) return
    incoming.fail(new Cancelled({ message: "request cancelled by the caller" }))
    if (!this.connection.closed) this.push(this.ownControl, MeshPath.cancel, encodeChannelPair(call.channel.id, call.requestId))
  }

  private onResponse(channel: OwnChannel, status: number, data: Buffer): void {
    const call = channel.fifo[0]
    if (call === undefined) return this.violation("unexpected-response", `response on channel ${channel.id} with no request outstanding`)
    if (!isFirstPacket(status)) {
      // A continuation of a streamed answer: a chunk header byte and bytes, or an error or trailers on the last packet.
      let trailers: Meta | undefined
      if (data[0] === ChunkHeader.error) {
        const body = decodeErrorBody(data.subarray(1))
        call.incoming?.fail(new RemoteError(body))
      } else if (data[0] === ChunkHeader.trailers) {
        trailers = trailersOf(data, status, call.incoming, this.agreed.maxMetaBytes)
      } else if (call.incoming !== undefined) {
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
    // A streamed answer begins: the connection reads into reused memory from now on.
    const incoming = new IncomingStream(this.options.receiveWindow, (bytes) => this.grant(channel.id, bytes), this.connection.budget)
    this.connection.readIntoSlabsSoon()
    call.incoming = incoming
    if (body.length > 0 && !incoming.push(body)) return this.violation("window-exceeded", `peer sent past the stream window on channel ${channel.id}`)
    if (call.streamResponse) return this.finishCall(call, undefined, { meta, data: Buffer.alloc(0), stream: incoming })
    incoming.readAll(this.options.maxMessageBytes).then(
      (whole) => this.finishCall(call, undefined, { meta, data: whole, stream: undefined }),
      (error: MeshCallError) => this.finishCall(call, error instanceof RemoteError || error instanceof StreamFailed ? error : new StreamFailed({ message: String(error) }), undefined)
    )
  }

  /** A request on the peer's control channel, read by the serving side: the control channel answers it (meshControl.ts). */
  onControl(path: string, requestId: number, body: Buffer, oneway: boolean): void {
    this.control.receive(path, requestId, body, oneway)
  }

  /** The window of a request body streaming out on one of this side's channels. */
  sendingOn(channelId: number): SendWindow | undefined {
    return this.own.get(channelId)?.sending
  }

  /** The peer refused one of this side's channels (§11 `refuse`). */
  refusedByPeer(id: number): void {
    // Only a channel of ours that the peer has seen can be refused, and only where both hellos
    // agreed (without `close` it could never go: each refusal would leave one more for good);
    // anything else is ignored.
    const channel = this.refusesChannels ? this.own.get(id) : undefined
    if (channel === undefined || channel === this.ownControl || channel.nextRequestId === 1 || channel.refused) return
    // The peer is full: ours it has not seen yet (opened ahead of need) would be refused as
    // well, so they go with this one, and we open no more than it has taken.
    let taken = 0
    for (const own of this.own.values()) {
      if (own === this.ownControl || own.refused) continue
      if (own !== channel && own.nextRequestId !== 1) taken++
      else {
        own.refused = true
        this.options.onChannelRefused?.(own)
        this.closeRefused(own)
      }
    }
    // None taken: no cap (the next request tries again, and is refused alone if the peer is still full).
    if (taken > 0) this.cap.refused(taken)
  }

  // ---------------------------------------------------------------------------------------------
  // Reading and the rest

  grant(channelId: number, bytes: number): void {
    if (!this.connection.closed) this.push(this.ownControl, MeshPath.window, encodeChannelPair(channelId, bytes))
  }

  violation(rule: string, message: string): void {
    this.options.log("protocol-violation", { remote: this.connection.remoteAddress, rule, message })
    this.connection.close(`protocol violation (${rule}): ${message}`, false)
  }

  onMessage(): void {
    // Mesh mode delivers packets through onPacket.
  }

  onPacket(channelId: number, status: number, path: string, data: Buffer): void {
    this.packetsReceived++
    const own = this.own.get(channelId)
    if (own !== undefined) this.onResponse(own, status, data)
    else this.serving.onRequest(channelId, status, path, data)
  }

  /**
   * A continuation packet in the pieces it arrives in. A plain data chunk goes to its stream piece
   * by piece, as views of the socket's chunks (no copy, no buffer per packet); a compressed or
   * error chunk is assembled (it is read whole) and handled as a packet.
   */
  onPacketPart(channelId: number, status: number, path: string, part: Buffer, first: boolean, last: boolean): void {
    if (first) {
      // At most one packet is being read at a time on a connection: one assembly at a time.
      if (part[0] === ChunkHeader.data) {
        this.assembling = undefined
        part = part.subarray(1)
      } else this.assembling = []
    }
    const assembling = this.assembling
    if (assembling !== undefined) {
      // Held in the budget while it is assembled, as the decoder holds a packet it assembles; its
      // pieces are views kept across reads, so their slab is not reused (readSlabs.ts).
      this.connection.readSlab?.taint()
      assembling.push(part)
      this.assemblingBytes += part.length
      this.connection.budget.hold(part.length)
      if (!last) return
      const bytes = this.assemblingBytes
      this.assembling = undefined
      this.assemblingBytes = 0
      this.connection.budget.release(0, bytes)
      return this.onPacket(channelId, status, path, Buffer.concat(assembling, bytes))
    }
    if (part.length > 0) {
      const own = this.own.get(channelId)
      if (own !== undefined && own.fifo.length === 0) return this.violation("unexpected-response", `response on channel ${channelId} with no request outstanding`)
      const stream = own !== undefined ? own.fifo[0]!.incoming : this.serving.receivingOn(channelId)
      if (stream !== undefined && !stream.push(part, this.connection.readSlab)) return this.violation("window-exceeded", `peer sent past the stream window on channel ${channelId}`)
    }
    if (!last) return
    // A last packet ends its stream as a whole one does; any other only counts.
    if (isLastPacket(status)) this.onPacket(channelId, status, path, lastChunk)
    else this.packetsReceived++
  }

  /**
   * A packet above the whole-body limit, of which only the envelope was read. A request is refused
   * (`bad_request`, not processed: its body should have streamed, §13) in its turn; anything else
   * breaks the rules of §13 and closes the connection.
   */
  onOversize(channelId: number, status: number, rawPath: string, prefix: Buffer, length: number): void {
    this.packetsReceived++
    if (this.own.has(channelId) || channelId === this.peerControl || !isFirstPacket(status)) {
      return this.violation("packet-too-large", `packet (status ${status}) of ${length} bytes on channel ${channelId}: a body this large must stream in chunks`)
    }
    this.serving.onOversize(channelId, rawPath, prefix, length)
  }

  onClose(error: ConnectionClosed): void {
    // Held calls were never sent: safe to send elsewhere.
    this.heldCalls.drain((held) => this.finishCall(held.call, new ConnectionClosed({ message: error.message, sent: false }), undefined))
    for (const channel of this.own.values()) {
      for (const call of channel.fifo.splice(0)) {
        call.incoming?.fail(error)
        this.finishCall(call, error, undefined)
      }
    }
    this.serving.close(error)
    this.callDeadlines.clear()
    for (const listener of this.closeListeners.splice(0)) listener(error)
  }
}
