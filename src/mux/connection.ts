// One IIP connection: a socket, the incremental decoder on its read side, the ordered writer on
// its write side, the per-channel receive state (status state machine and reassembly of
// multi-packet messages) and the close of it all, once, with a reason. The session above
// (server or client) gets whole messages and decides what they mean. The bytes come from a TCP
// socket or from a WebSocket seen as a byte stream (webSocketStream.ts): the same either way. Once
// a TCP or TLS socket carries a stream it reads into slabs the process reuses (readSlabs.ts): a
// stream chunk handed on references its slab until its consumer releases it; any other view
// handed on taints the slab (never reused). Before that, and on other streams, each read is a
// buffer of its own (Node's), so a connection that never streams holds no slab.
// What the peer makes this side hold is counted in the connection's budget (budget.ts): reading
// pauses past its own share, and parts of unfinished messages and the packet being read count too.
import type { Duplex } from "node:stream"
import { Limits, StatusNone, SystemChannel } from "../protocol/constants.ts"
import { PacketDecoder } from "../protocol/decoder.ts"
import { ProtocolError } from "../protocol/errors.ts"
import { EnvelopeBytes, MeshDefaults } from "../protocol/mesh.ts"
import { isFirstPacket, isLastPacket, type Role, statusAllowed } from "../protocol/status.ts"
import { Budget, type BudgetLimits, InboundBudget, type SourceBudget, unlimitedBudget, type WriteBudget } from "./budget.ts"
import { monotonicMs } from "./clock.ts"
import { ConnectionClosed } from "./errors.ts"
import { readIntoSlabs, type Slab, slabBytes } from "./readSlabs.ts"
import { PacketWriter } from "./writer.ts"

export interface ConnectionLimits {
  /** Largest whole message (all packets of it) this side reassembles; also what all unfinished messages of a connection may hold together. */
  readonly maxMessageBytes: number
  /**
   * Mesh mode: the most body bytes a message may carry in its first packet (a larger body must
   * stream, PROTOCOL.md §13); a request over it is refused with `bad_request` without being stored.
   */
  readonly maxWholeBodyBytes: number
  readonly maxReceivePathBytes: number
  readonly writeHighWaterBytes: number
  readonly maxWriteQueueBytes: number
}

export const defaultConnectionLimits: ConnectionLimits = {
  maxMessageBytes: 64 * 1024 * 1024,
  maxWholeBodyBytes: 1024 * 1024,
  maxReceivePathBytes: Limits.maxReceivePathBytes,
  writeHighWaterBytes: 1024 * 1024,
  maxWriteQueueBytes: 256 * 1024 * 1024
}

/** What a connection runs over: a TCP socket (with no-delay set by its creator), or a WebSocketStream. */
export type ByteStream = Duplex & { readonly remoteAddress?: string | undefined; readonly remotePort?: number | undefined }

/**
 * Plain mode, while the server as a whole is full: packets longer than this are skipped unread
 * and refused, so a peer cannot make the server allocate its 16 MiB packets then.
 */
const plainRefuseAboveBytes = 64 * 1024

/** While stream chunks hold a connection's reads, whole packets up to this size are copied out (readSlabs.ts). */
const smallCopyBytes = 4 * 1024

/** How long a graceful close waits for the peer to take the last bytes before it destroys the stream. */
const gracefulCloseMs = 5000

/** Where a connection reports what it decided on its own (protocol violations). */
export type ConnectionLog = (event: string, fields: Record<string, unknown>) => void

/** What a session does with a connection's traffic. */
export interface MessageSink {
  /** A whole message arrived on an open channel; `path` is its first packet's path. `refused`: it was dropped while the server was full. */
  onMessage(channelId: number, path: string, data: Buffer, refused?: boolean): void
  /** In mesh mode every packet comes here instead, unassembled (streams are consumed as they arrive). */
  onPacket?(channelId: number, status: number, path: string, data: Buffer): void
  /**
   * Mesh mode: a stream's continuation packet that runs past the socket chunk it starts in comes
   * here in the pieces it arrives in (views, not copies), the first piece with its chunk header byte.
   */
  onPacketPart?(channelId: number, status: number, path: string, part: Buffer, first: boolean, last: boolean): void
  /**
   * Mesh mode: a packet above the whole-body limit, or a request skipped because it is refused
   * (`overloaded`: the server or its source holds all it may, or its channel was refused); only
   * its first bytes were kept (the envelope).
   */
  onOversize?(channelId: number, status: number, path: string, prefix: Buffer, length: number, overloaded: boolean): void
  /** The connection closed; called exactly once. */
  onClose(error: ConnectionClosed): void
}

/** Receive state of one channel (PROTOCOL.md §4.4). */
interface ChannelReceive {
  /** Whether this side receives requests (server) or responses (client) on the channel. */
  role: Role
  last: number
  path: string
  parts: Array<Buffer>
  bytes: number
  /** The message being reassembled was refused (the server is overloaded): its parts are dropped. */
  refused: boolean
  /** Mesh mode: a peer's channel opened over the channel budget and refused (§11 `refuse`): it holds no place in the budgets. */
  refusedChannel: boolean
}

/** Where a connection's inbound work is counted: its own limits and the budget it shares with its server's other connections. */
export interface ConnectionBudget {
  readonly own: BudgetLimits
  readonly shared: Budget
  /** A server's: the bytes its connections' writers hold, all together; past it those holding more than their share stop reading. */
  readonly writes?: WriteBudget
  /** A server's: the part of `shared` its peer's source holds with its other connections. */
  readonly source?: SourceBudget
}

/** In mesh mode the dialer opens channels below 2^31 and the acceptor at or above it. */
const isPeerChannel = (peerOpensHigh: boolean, id: number): boolean => (id >= 0x8000_0000) === peerOpensHigh && id !== 0 && id !== 0x8000_0000

/**
 * While a connection's read is decoded: what is to run once it is (see `atEndOfRead`), null while
 * nothing is (no array per read). Reads do not nest (each is a socket callback of its own), so one
 * list serves every connection. Undefined outside a read.
 */
let endOfRead: Array<() => void> | null | undefined

/**
 * Runs `callback` once the read being decoded is done, still within it: what it sends leaves with
 * the read's other packets, in the same write (writer.ts). Lets a consumer of many whole answers
 * in one read take them together (effect/rpc's client: one fiber per read instead of one per
 * answer). False outside a read (nothing registered: the caller does the work at once).
 */
export const atEndOfRead = (callback: () => void): boolean => {
  if (endOfRead === undefined) return false
  if (endOfRead === null) endOfRead = [callback]
  else endOfRead.push(callback)
  return true
}

export class Connection {
  readonly writer: PacketWriter
  readonly remoteAddress: string
  /**
   * The peer's identity as the transport proved it (the SPIFFE ID of a verified TLS client
   * certificate), set by whoever accepted the socket before the first request is read; undefined
   * over plain TCP. Every request of the connection carries it (RequestContext.peerIdentity).
   */
  peerIdentity: string | undefined = undefined
  /**
   * While a read is decoded: the slab it lies in (readSlabs.ts), undefined when the bytes are a
   * buffer of their own. A stream chunk handed on as a view of it takes a reference.
   */
  readSlab: Slab | undefined = undefined
  /** Of the packet being handed on: whether the session may keep a view of it. */
  private viewKept = true
  /** The last read's slab was still referenced by stream chunks when the read was decoded. */
  private readsLeased = false
  /** Reading with 'data' events, switching to slabs at the next turn, or reading into slabs. */
  private readMode: "data" | "switching" | "slabs" = "data"
  private readonly onData = (chunk: Buffer) => this.onBytes(chunk, undefined)
  /** monotonicMs() of the read being decoded, once something asked (0: not yet). */
  private readAt = 0
  private readonly decoder: PacketDecoder
  private readonly channels = new Map<number, ChannelReceive>()
  private sink: MessageSink | undefined
  private closedWith: ConnectionClosed | undefined
  private readPaused = 0
  /** Bytes of unfinished multi-packet messages (plain mode), all channels together. */
  private assemblingBytes = 0
  /** Requests, bytes and channels the peer makes this side hold (budget.ts). */
  readonly budget: InboundBudget
  /** Where this connection's writer counts its bytes with its server's other connections', and pauses with them. */
  private readonly writeBudget: WriteBudget | undefined
  /** Bytes of the packet being read, as held in the budget. */
  private heldForPacket = 0
  /**
   * Set once two iip-mesh peers agreed on mesh mode (PROTOCOL.md §10). `refuses`: both named
   * `refuse`, so a peer's channel over the channel budget is refused alone (§11), not the connection.
   */
  private mesh: { readonly peerOpensHigh: boolean; readonly peerControl: number; readonly maxPeerChannels: number; peerChannels: number; readonly refuses: boolean } | undefined
  /** Mesh mode: the packet being read is a request to be refused `overloaded`, skipped past its envelope (checkHeader). */
  private skipsRefused = false
  readonly socket: ByteStream
  readonly role: Role
  private readonly limits: ConnectionLimits
  private readonly log: ConnectionLog

  constructor(
    socket: ByteStream,
    role: Role,
    limits: ConnectionLimits = defaultConnectionLimits,
    log: ConnectionLog = () => {},
    budget: ConnectionBudget = { own: unlimitedBudget, shared: new Budget(unlimitedBudget) }
  ) {
    this.socket = socket
    this.role = role
    this.limits = limits
    this.log = log
    this.budget = new InboundBudget(budget.own, budget.shared, () => this.pauseReading(), () => this.resumeReading(), budget.source)
    this.remoteAddress = `${socket.remoteAddress ?? "?"}:${socket.remotePort ?? 0}`
    this.writer = new PacketWriter(socket, { highWaterBytes: limits.writeHighWaterBytes, maxQueuedBytes: limits.maxWriteQueueBytes }, budget.writes, this)
    this.writeBudget = budget.writes
    budget.writes?.join(this)
    this.decoder = new PacketDecoder(
      {
        checkHeader: (status, channelId) => this.checkHeader(status, channelId),
        onPacket: (status, path, channelId, data) => {
          const slab = this.readSlab
          // While stream consumers hold this connection's reads (leases), a small packet is copied
          // out: kept as a view it would keep a whole slab of stream bytes from reuse.
          if (slab !== undefined && this.readsLeased && data.length <= smallCopyBytes) {
            this.readSlab = undefined
            this.onPacket(status, path, channelId, Buffer.from(data))
            this.readSlab = slab
            return
          }
          // A whole packet is a view the session may keep: its slab is not reused, unless the
          // session said it read the packet in place (`readInPlace`).
          this.viewKept = true
          this.onPacket(status, path, channelId, data)
          if (this.viewKept) slab?.taint()
        },
        onOversize: (status, path, channelId, prefix, length) => this.onOversize(status, path, channelId, prefix, length),
        splits: (status) => this.mesh !== undefined && !isFirstPacket(status) && this.sink?.onPacketPart !== undefined,
        onPart: (status, path, channelId, part, first, last) => {
          const channel = first ? this.channels.get(channelId) : undefined
          if (channel !== undefined) channel.last = status
          this.sink!.onPacketPart!(channelId, status, path, part, first, last)
        }
      },
      { maxPathBytes: limits.maxReceivePathBytes }
    )
    this.openChannel(SystemChannel)
    socket.on("data", this.onData)
    socket.on("end", () => {
      const partial = this.decoder.idle ? "" : " in the middle of a packet"
      this.close(`peer closed the connection${partial}`, false)
    })
    socket.on("error", (error: NodeJS.ErrnoException) => this.close(`socket error: ${error.code ?? error.message}`, false))
    socket.on("close", () => this.close("socket closed", false))
  }

  /** Bytes read: `slab` is the memory they lie in when it is reused (readSlabs.ts). */
  private onBytes(chunk: Buffer, slab: Slab | undefined): void {
    // A full server reads no new large plain packet: it skips it and refuses it (§8).
    if (this.mesh === undefined) this.decoder.limitPackets(this.budget.sharedFull ? plainRefuseAboveBytes : Infinity, 0)
    // What the bytes read make this side send leaves in one write as the read ends (writer.ts).
    let result
    this.writer.beginRead()
    this.readSlab = slab
    endOfRead = null
    try {
      result = this.decoder.push(chunk)
    } finally {
      try {
        // (set by atEndOfRead during the decode, which the compiler cannot see)
        const ending = endOfRead as Array<() => void> | null
        // A callback may add another (its work answered at once): by index, to the end.
        if (ending !== null) for (let i = 0; i < ending.length; i++) ending[i]!()
      } finally {
        endOfRead = undefined
      }
      // Not when the peer broke the rules: the close below discards what is queued, as it did.
      this.writer.endRead(result === undefined)
      this.readAt = 0
      // Path pieces the decoder keeps for the next read are views of this one.
      if (this.decoder.holdsViews) slab?.taint()
      this.readsLeased = slab !== undefined && slab.referenced
      this.readSlab = undefined
    }
    if (result === "close") this.close("peer sent status 8 (close connection)", false)
    else if (result !== undefined) this.protocolViolation(result)
    else {
      const pending = this.decoder.pendingBytes
      if (pending !== this.heldForPacket) this.holdPacket(pending)
      // A packet runs on past this read, one larger than a read (assembled: copied out of its
      // reads) or one skipped: each of Node's reads would be a buffer of its own, garbage at once,
      // which V8 collects only after some 64 MiB of it, beside what the budget counts (a flood of
      // 1 MB bodies). From the next turn its reads go into reused slabs (readSlabs.ts).
      if (this.readMode === "data" && slab === undefined && (pending >= slabBytes || this.decoder.skipsPacket)) this.readIntoSlabsSoon()
    }
  }

  /**
   * When the packet being handed on arrived, in monotonicMs() terms (clock.ts): the clock is read
   * once per read, not once per packet (a read at 64 requests in flight holds dozens). Outside a
   * read: now.
   */
  receivedAt(): number {
    if (!this.writer.inRead) return monotonicMs()
    if (this.readAt === 0) this.readAt = monotonicMs()
    return this.readAt
  }

  /**
   * A stream begins on this connection: from the next turn on its socket reads into reused slabs
   * (readSlabs.ts), if it is a TCP or TLS socket with nothing read and unhandled; until then reads
   * go on as 'data', in order. Not possible now (bytes wait in the socket's buffer): at the next stream.
   */
  readIntoSlabsSoon(): void {
    if (this.readMode !== "data") return
    this.readMode = "switching"
    // Outside the read callback that found the stream: the switch changes how the handle reads.
    setImmediate(() => {
      if (this.closed) return
      if (!readIntoSlabs(this.socket, (chunk, slab) => this.onBytes(chunk, slab))) {
        this.readMode = "data"
        return
      }
      this.socket.off("data", this.onData)
      this.readMode = "slabs"
    })
  }

  /**
   * Called by the session while a whole packet is handed to it: it keeps no view of the packet's
   * bytes, or only one that references `readSlab` (a stream chunk), so the read's slab stays reusable.
   */
  readInPlace(): void {
    this.viewKept = false
  }

  /**
   * Mesh mode, while a request's first packet is handed on: it is refused `overloaded` (the server
   * or its source held all it may, or its channel was refused), as judged when its header was
   * read. Judged once, there: a packet let in then is not refused once whole for what it holds
   * itself, nor for what the packets read beside it hold (else a peer's packets read in parallel,
   * each let in and counted while read, were read whole one after another to be refused).
   */
  get refusesRequest(): boolean {
    return this.skipsRefused
  }

  /** Packets read so far: the server's timeouts watch it for progress. */
  get packetsReceived(): number {
    return this.decoder.packets
  }

  /** Bytes of its server's write budget this connection's writer holds (budget.ts WriteBudgetMember). */
  get writeCharged(): number {
    return this.writer.chargedBytes
  }

  /** True while a packet is partly read. */
  get midPacket(): boolean {
    return !this.decoder.idle
  }

  /** Reading is paused (budget, congested writer): a stalled packet is then not the peer's fault. */
  get readingPaused(): boolean {
    return this.readPaused > 0
  }

  /** Starts delivering messages to `sink`. Call once, right after construction. */
  attach(sink: MessageSink): void {
    this.sink = sink
  }

  get closed(): boolean {
    return this.closedWith !== undefined
  }

  /** The close reason once closed. */
  get closeError(): ConnectionClosed | undefined {
    return this.closedWith
  }

  hasChannel(id: number): boolean {
    return this.channels.has(id)
  }

  get channelCount(): number {
    return this.channels.size
  }

  /** Accepts packets on channel `id` from now on; `role` defaults to the connection's. */
  openChannel(id: number, role: Role = this.role): void {
    if (!this.channels.has(id)) this.channels.set(id, { role, last: StatusNone, path: "", parts: [], bytes: 0, refused: false, refusedChannel: false })
  }

  /**
   * Switches to mesh mode: the peer may open channels in its own id range by simply using them,
   * on this side's channels this side receives responses, and every packet goes to the sink's
   * `onPacket` unassembled.
   */
  enableMesh(isDialer: boolean, ownControl: number, peerControl: number, maxPeerChannels: number, maxMetaBytes: number, refusesChannels: boolean): void {
    this.mesh = { peerOpensHigh: isDialer, peerControl, maxPeerChannels, peerChannels: 0, refuses: refusesChannels }
    // A first packet holds the envelope, the metadata and at most maxWholeBodyBytes of body; a
    // continuation one chunk. Anything longer is read only as far as its envelope.
    const envelope = EnvelopeBytes + maxMetaBytes
    this.decoder.limitPackets(envelope + Math.max(this.limits.maxWholeBodyBytes, MeshDefaults.chunkBytes + 1), envelope)
    this.channels.clear()
    this.openChannel(ownControl, "client")
    this.openChannel(peerControl, "server")
  }

  get meshMode(): boolean {
    return this.mesh !== undefined
  }

  /** Stops accepting packets on channel `id`: a later packet for it closes the connection. */
  closeChannel(id: number): void {
    this.channels.delete(id)
  }

  /**
   * The peer closed channel `id`, one it had opened (mesh mode, PROTOCOL.md §11): its place goes
   * back to the agreed count and the budgets; a later packet on the id opens it anew.
   */
  closePeerChannel(id: number): void {
    const channel = this.channels.get(id)
    if (this.mesh === undefined || !isPeerChannel(this.mesh.peerOpensHigh, id) || channel === undefined) return
    this.channels.delete(id)
    this.mesh.peerChannels--
    if (!channel.refusedChannel) this.budget.closeChannel()
  }

  /** Mesh mode: the peer's channel `id` was opened over the channel budget and refused (§11 `refuse`). */
  channelRefused(id: number): boolean {
    return this.channels.get(id)?.refusedChannel === true
  }

  /** Stops reading from the socket until `resumeReading` is called as many times. */
  pauseReading(): void {
    if (this.readPaused++ === 0) this.socket.pause()
  }

  resumeReading(): void {
    if (this.readPaused > 0 && --this.readPaused === 0 && !this.closed) this.socket.resume()
  }

  /** Closes the connection once; `graceful` ends the socket after queued writes instead of destroying it. */
  close(reason: string, graceful: boolean): void {
    if (this.closedWith !== undefined) return
    this.closedWith = new ConnectionClosed({ message: `connection ${this.remoteAddress} closed: ${reason}`, sent: true })
    this.decoder.stop()
    if (graceful) {
      // Packets queued in this same tick (a go-away, say) go out before the FIN.
      this.writer.finish(() => this.socket.end())
      // A peer that never reads must not keep the socket alive forever.
      const timer = setTimeout(() => this.socket.destroy(), gracefulCloseMs)
      this.socket.once("close", () => {
        clearTimeout(timer)
        // What the peer never took goes back to the write budget.
        this.writer.close()
      })
    } else {
      this.writer.close()
      this.socket.destroy()
    }
    this.channels.clear()
    this.assemblingBytes = 0
    this.budget.releaseAll()
    this.writeBudget?.leave(this)
    this.sink?.onClose(this.closedWith)
  }

  /** The bytes allocated for a packet still being read count in the budget until it is whole. */
  private holdPacket(bytes: number): void {
    if (bytes > this.heldForPacket) this.budget.hold(bytes - this.heldForPacket)
    else this.budget.unhold(this.heldForPacket - bytes)
    this.heldForPacket = bytes
  }

  private onOversize(status: number, path: string, channelId: number, prefix: Buffer, length: number): void {
    const channel = this.channels.get(channelId)!
    channel.last = status
    if (this.mesh !== undefined) {
      this.sink?.onOversize?.(channelId, status, path, prefix, length, this.skipsRefused)
      return
    }
    // Plain mode: skipped while the server was full. Its message is refused, in its turn.
    if (isFirstPacket(status)) {
      if (isLastPacket(status)) return this.sink?.onMessage(channelId, path, prefix, true)
      channel.path = path
      channel.parts = []
      channel.bytes = 0
    } else if (!channel.refused) {
      this.assemblingBytes -= channel.bytes
      this.budget.unhold(channel.bytes)
      channel.parts = []
    }
    channel.refused = true
    if (isLastPacket(status)) {
      channel.bytes = 0
      this.sink?.onMessage(channelId, channel.path, prefix, true)
    }
  }

  private protocolViolation(error: ProtocolError): void {
    this.log("protocol-violation", { remote: this.remoteAddress, rule: error.rule, message: error.message })
    this.close(`protocol violation (${error.rule}): ${error.message}`, false)
  }

  private checkHeader(status: number, channelId: number): ProtocolError | undefined {
    let channel = this.channels.get(channelId)
    if (channel === undefined && this.mesh !== undefined && isPeerChannel(this.mesh.peerOpensHigh, channelId)) {
      if (this.mesh.peerChannels >= this.mesh.maxPeerChannels) {
        return new ProtocolError({ rule: "too-many-channels", message: `peer opened channel ${channelId} beyond the agreed ${this.mesh.maxPeerChannels}` })
      }
      // Over the budget the peer cannot know of: a peer that understands refusals has this one
      // channel refused (its requests answered `overloaded` until it closes it); one that does not is closed.
      const refused = !this.budget.openChannel()
      if (refused && !this.mesh.refuses) {
        return new ProtocolError({ rule: "too-many-channels", message: `peer opened channel ${channelId} while the server holds all the channels it may (${this.budget.shared.limits.maxChannels})` })
      }
      this.mesh.peerChannels++
      this.openChannel(channelId, "server")
      channel = this.channels.get(channelId)!
      channel.refusedChannel = refused
    }
    if (channel === undefined) {
      return new ProtocolError({ rule: "unknown-channel", message: `packet (status ${status}) for channel ${channelId}, which is not open: invalid channel id: ${channelId}` })
    }
    if (!statusAllowed(channel.role, channel.last, status)) {
      return new ProtocolError({
        rule: "status-order",
        message: `packet on channel ${channelId}: invalid protocol, prev status: ${channel.last}, current ${status}`
      })
    }
    // Mesh mode: a request the session refuses unread (`overloaded`: meshServing.ts) is skipped as
    // its bytes arrive, only its envelope kept. Read whole, a peer's flood of whole bodies past the
    // budget was allocated a packet at a time to be dropped: garbage up to V8's external-memory
    // step (~64 MiB) on top of what the budget counts, in RSS until a collection.
    const mesh = this.mesh
    this.skipsRefused = mesh !== undefined && isFirstPacket(status) && channel.role === "server" && channelId !== mesh.peerControl && (channel.refusedChannel || this.budget.sharedFullBesidesHeld)
    if (this.skipsRefused) this.decoder.skipPacket()
    return undefined
  }

  private onPacket(status: number, path: string, channelId: number, data: Buffer): void {
    const channel = this.channels.get(channelId)!
    channel.last = status
    if (this.mesh !== undefined) {
      this.sink?.onPacket?.(channelId, status, path, data)
      return
    }
    if (isFirstPacket(status)) {
      if (isLastPacket(status)) {
        this.sink?.onMessage(channelId, path, data)
        return
      }
      channel.path = path
      // The server as a whole is full: the message is read and dropped, and refused once whole.
      channel.refused = this.budget.sharedFull
      channel.parts = []
      channel.bytes = 0
    }
    channel.bytes += data.length
    if (channel.bytes > this.limits.maxMessageBytes || (!channel.refused && this.assemblingBytes + data.length > this.limits.maxMessageBytes)) {
      this.protocolViolation(
        new ProtocolError({
          rule: "message-too-large",
          message: channel.bytes > this.limits.maxMessageBytes
            ? `multi-packet message on channel ${channelId} exceeds ${this.limits.maxMessageBytes} bytes`
            : `unfinished multi-packet messages on this connection exceed ${this.limits.maxMessageBytes} bytes together`
        })
      )
      return
    }
    if (!channel.refused) {
      channel.parts.push(data)
      this.assemblingBytes += data.length
      this.budget.hold(data.length)
    }
    if (isLastPacket(status)) {
      const parts = channel.parts
      const bytes = channel.refused ? 0 : channel.bytes
      channel.parts = []
      channel.bytes = 0
      this.assemblingBytes -= bytes
      this.budget.unhold(bytes)
      if (channel.refused) this.sink?.onMessage(channelId, channel.path, data, true)
      else this.sink?.onMessage(channelId, channel.path, Buffer.concat(parts, bytes))
    }
  }
}
