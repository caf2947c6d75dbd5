// One connection in mesh mode (PROTOCOL.md §10-§14): both peers call and serve on it. This side
// opens channels in its own id range without a handshake and calls on them (meshCalls.ts, the
// class this one extends); it serves the channels the peer opens (one actor per channel, in
// order, each request interruptible by cancel or deadline: meshServing.ts); and both sides talk on
// their control channels: ping, go-away, cancel, close, refuse and stream-window grants
// (meshControl.ts receives the peer's). Here: the session's own channels (opened, closed, refused),
// and the packets the connection reads, each handed to the call it answers or to the serving side.
import type { Codec } from "../protocol/compression.ts"
import { AcceptorControlChannel, ChunkHeader, DialerControlChannel, encodeChannelId, encodeGoAway, MeshPath } from "../protocol/mesh.ts"
import { isFirstPacket, isLastPacket } from "../protocol/status.ts"
import type { Connection, MessageSink } from "./connection.ts"
import { ConnectionClosed } from "./errors.ts"
import { MeshCaller, type MeshSessionOptions } from "./meshCalls.ts"
import { type MeshCallError, OwnChannel } from "./meshChannels.ts"
import { ChannelCap } from "./meshChannelCap.ts"
import { ControlReceiver, type ControlSession } from "./meshControl.ts"
import { PeerChannelServer, type ServingSession } from "./meshServing.ts"
import { lastChunk } from "./meshStreamOut.ts"
import type { SendWindow } from "./streams.ts"

export { Cancelled, type CallCallback, type CallOptions, type MeshCallError, type MeshReply, OwnChannel, RemoteError } from "./meshChannels.ts"
export type { MeshSessionOptions } from "./meshCalls.ts"

/** A refused channel whose last packets the writer still holds is looked at again this much later. */
const RefusedCloseRetryMs = 50

export class MeshSession extends MeshCaller implements MessageSink, ServingSession, ControlSession {
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
  /** Packets received so far: the keep-alive watches it to tell an idle connection. */
  packetsReceived = 0
  /**
   * The peer answered our go-away. It answers once it has stopped sending new requests, and TCP
   * keeps order, so every request it sent before is already here: closing is safe from now on.
   */
  goAwayAcknowledged = false
  /** The pieces of a compressed or error chunk read in parts (onPacketPart), until its last. */
  private assembling: Array<Buffer> | undefined = undefined
  private assemblingBytes = 0
  /** Serves the channels the peer opens (meshServing.ts). */
  private readonly serving: PeerChannelServer
  /** Receives the peer's control requests (meshControl.ts). */
  private readonly control: ControlReceiver

  constructor(connection: Connection, options: MeshSessionOptions) {
    super(connection, options, options.isDialer ? DialerControlChannel : AcceptorControlChannel)
    const ownControlId = this.ownControl.id
    this.closesChannels = options.agreed.features.includes("close")
    this.peerControl = options.isDialer ? AcceptorControlChannel : DialerControlChannel
    this.nextOwnId = ownControlId + 1
    // A refused channel goes once its opener closes it: refusing needs both features.
    this.refusesChannels = this.closesChannels && options.agreed.features.includes("refuse")
    connection.enableMesh(options.isDialer, ownControlId, this.peerControl, options.agreed.maxChannels, options.agreed.maxMetaBytes, this.refusesChannels)
    this.own.set(ownControlId, this.ownControl)
    this.serving = new PeerChannelServer(connection, this, this.peerControl, options.agreed.maxMetaBytes, this.streamOut, options)
    this.control = new ControlReceiver(connection, this, this.serving, this.peerControl, options.agreed.maxMetaBytes, options.isDialer, options.log)
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

  /** The peer's go-away said `closing` (§11): it closes this connection (now, or once drained), it is not stopping. */
  get peerClosing(): boolean {
    return this.control.peerClosing
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
    if (channel.nextRequestId !== 1) this.sendControl(MeshPath.close, encodeChannelId(channel.id))
    this.freeOwnIds.push(channel.id)
    return true
  }

  /**
   * A refused channel (§11 `refuse`) closes once its calls are answered and its last packets are
   * written. Its close must not pass them (see closeChannel); nobody else closes it (the client
   * dropped it from its pool), so while the writer holds them it is tried again a little later.
   */
  protected closeRefused(channel: OwnChannel): void {
    if (this.closeChannel(channel) || this.connection.closed || channel.fifo.length > 0 || channel.sending !== undefined) return
    if (this.own.get(channel.id) === channel && this.connection.writer.holds(channel.id)) setTimeout(() => this.closeRefused(channel), RefusedCloseRetryMs).unref()
  }

  // ---------------------------------------------------------------------------------------------
  // The control channel

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
   * `goAwayAcknowledged`. `closing`: only this connection drains (evicted busy at the server's
   * cap, §11), not the whole side stopping.
   */
  goAway(reason: string, closing = false): void {
    if (this.serving.draining || this.connection.closed) return
    this.serving.draining = true
    this.call(this.ownControl, MeshPath.goAway, encodeGoAway(reason, closing), {}, (error) => {
      if (error === undefined) this.goAwayAcknowledged = true
    })
  }

  /**
   * Closes the connection now (an eviction at the server's connection cap). With nothing running
   * on it (no request running or waiting, no answer held behind a stream's chunks), the peer is
   * told first (§11 go-away `closing`, one-way, in the same write as the FIN):
   * it read none of the requests the peer still waits for, so they end not processed and go
   * elsewhere. With requests running, any of them may have been processed: a connection loss.
   * With an answer still behind a stream's chunks: untold, the FIN after what is queued.
   */
  closeNow(reason: string): void {
    if (this.connection.closed) return
    if (this.servingCount > 0) return this.connection.close(reason, false)
    // An answer behind a stream's lane (writer.ts) is processed but not yet out: the go-away, a
    // whole packet, would pass it and call it unread. Untold then, what is queued still goes out.
    if (this.connection.writer.queuedChunks > 0) return this.connection.close(reason, true)
    this.serving.draining = true
    this.sendControl(MeshPath.goAway, encodeGoAway(reason, true))
    this.connection.close(reason, true)
  }

  /**
   * This side's control messages back up as its answers do: an acceptor stops reading while they
   * do (a peer that streams a body nobody reads is granted each chunk back at once, from the read).
   */
  override sendControl(path: string, body: Uint8Array, behind?: number): void {
    super.sendControl(path, body, behind)
    this.serving.pauseWhileBackedUp()
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
      this.connection.budget.unhold(bytes)
      return this.onPacket(channelId, status, path, Buffer.concat(assembling, bytes))
    }
    if (part.length > 0) {
      const own = this.own.get(channelId)
      if (own !== undefined && own.fifo.length === 0) return this.violation("unexpected-response", `response on channel ${channelId} with no request outstanding`)
      const stream = own !== undefined ? own.fifo.peek()!.incoming : this.serving.receivingOn(channelId)
      if (stream === undefined) this.creditDropped(part.length)
      else if (!stream.push(part, this.connection.readSlab)) return this.violation("window-exceeded", `peer sent past the stream window on channel ${channelId}`)
    }
    if (!last) return
    // A last packet ends its stream as a whole one does; any other only counts.
    if (isLastPacket(status)) this.onPacket(channelId, status, path, lastChunk)
    else this.packetsReceived++
  }

  /**
   * A packet above the whole-body limit, or a request refused `overloaded` (the connection's
   * checkHeader), of which only the envelope was read. A request is refused in its turn (too large:
   * `bad_request`, not processed: its body should have streamed, §13); anything else breaks the
   * rules of §13 and closes the connection.
   */
  onOversize(channelId: number, status: number, rawPath: string, prefix: Buffer, length: number, overloaded: boolean): void {
    this.packetsReceived++
    if (this.own.has(channelId) || channelId === this.peerControl || !isFirstPacket(status)) {
      return this.violation("packet-too-large", `packet (status ${status}) of ${length} bytes on channel ${channelId}: a body this large must stream in chunks`)
    }
    this.serving.onOversize(channelId, rawPath, prefix, length, overloaded)
  }

  onClose(error: ConnectionClosed): void {
    // Held calls were never sent: safe to send elsewhere.
    this.heldCalls.drain((held) => this.finishCall(held.call, new ConnectionClosed({ message: error.message, sent: false }), undefined))
    // After the peer's one-way go-away `closing`, a call with no answer begun was never read there.
    const unread = this.control.peerReadNoMore ? new ConnectionClosed({ message: `${error.message} (the peer closed it; it had not read the request)`, sent: false }) : error
    for (const channel of this.own.values()) {
      for (const call of channel.fifo.takeAll()) {
        call.incoming?.fail(error)
        this.finishCall(call, call.incoming === undefined ? unread : error, undefined)
      }
    }
    this.serving.close(error)
    this.callDeadlines.clear()
    for (const listener of this.closeListeners.splice(0)) listener(error)
  }
}
