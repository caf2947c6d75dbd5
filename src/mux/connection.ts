// One IIP connection: a socket, the incremental decoder on its read side, the ordered writer on
// its write side, the per-channel receive state (status state machine and reassembly of
// multi-packet messages) and the close of it all, once, with a reason. The session above
// (server or client) gets whole messages and decides what they mean. The bytes come from a TCP
// socket or from a WebSocket seen as a byte stream (webSocketStream.ts): the same either way.
import type { Duplex } from "node:stream"
import { Limits, StatusNone, SystemChannel } from "../protocol/constants.ts"
import { PacketDecoder } from "../protocol/decoder.ts"
import { ProtocolError } from "../protocol/errors.ts"
import { isFirstPacket, isLastPacket, type Role, statusAllowed } from "../protocol/status.ts"
import { ConnectionClosed } from "./errors.ts"
import { PacketWriter } from "./writer.ts"

export interface ConnectionLimits {
  /** Largest whole message (all packets of it) this side reassembles. */
  readonly maxMessageBytes: number
  readonly maxReceivePathBytes: number
  readonly writeHighWaterBytes: number
  readonly maxWriteQueueBytes: number
}

export const defaultConnectionLimits: ConnectionLimits = {
  maxMessageBytes: 64 * 1024 * 1024,
  maxReceivePathBytes: Limits.maxReceivePathBytes,
  writeHighWaterBytes: 1024 * 1024,
  maxWriteQueueBytes: 256 * 1024 * 1024
}

/** What a connection runs over: a TCP socket (with no-delay set by its creator), or a WebSocketStream. */
export type ByteStream = Duplex & { readonly remoteAddress?: string | undefined; readonly remotePort?: number | undefined }

/** How long a graceful close waits for the peer to take the last bytes before it destroys the stream. */
const gracefulCloseMs = 5000

/** Where a connection reports what it decided on its own (protocol violations). */
export type ConnectionLog = (event: string, fields: Record<string, unknown>) => void

/** What a session does with a connection's traffic. */
export interface MessageSink {
  /** A whole message arrived on an open channel; `path` is its first packet's path. */
  onMessage(channelId: number, path: string, data: Buffer): void
  /** In mesh mode every packet comes here instead, unassembled (streams are consumed as they arrive). */
  onPacket?(channelId: number, status: number, path: string, data: Buffer): void
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
}

/** In mesh mode the dialer opens channels below 2^31 and the acceptor at or above it. */
const isPeerChannel = (peerOpensHigh: boolean, id: number): boolean => (id >= 0x8000_0000) === peerOpensHigh && id !== 0 && id !== 0x8000_0000

export class Connection {
  readonly writer: PacketWriter
  readonly remoteAddress: string
  private readonly decoder: PacketDecoder
  private readonly channels = new Map<number, ChannelReceive>()
  private sink: MessageSink | undefined
  private closedWith: ConnectionClosed | undefined
  private readPaused = 0
  /** Set once two iip-mesh peers agreed on mesh mode (PROTOCOL.md §10). */
  private mesh: { readonly peerOpensHigh: boolean; readonly maxPeerChannels: number; peerChannels: number } | undefined
  readonly socket: ByteStream
  readonly role: Role
  private readonly limits: ConnectionLimits
  private readonly log: ConnectionLog

  constructor(socket: ByteStream, role: Role, limits: ConnectionLimits = defaultConnectionLimits, log: ConnectionLog = () => {}) {
    this.socket = socket
    this.role = role
    this.limits = limits
    this.log = log
    this.remoteAddress = `${socket.remoteAddress ?? "?"}:${socket.remotePort ?? 0}`
    this.writer = new PacketWriter(socket, {
      highWaterBytes: limits.writeHighWaterBytes,
      maxQueuedBytes: limits.maxWriteQueueBytes
    })
    this.decoder = new PacketDecoder(
      {
        checkHeader: (status, channelId) => this.checkHeader(status, channelId),
        onPacket: (status, path, channelId, data) => this.onPacket(status, path, channelId, data)
      },
      { maxPathBytes: limits.maxReceivePathBytes }
    )
    this.openChannel(SystemChannel)
    socket.on("data", (chunk: Buffer) => {
      const result = this.decoder.push(chunk)
      if (result === "close") this.close("peer sent status 8 (close connection)", false)
      else if (result !== undefined) this.protocolViolation(result)
    })
    socket.on("end", () => {
      const partial = this.decoder.idle ? "" : " in the middle of a packet"
      this.close(`peer closed the connection${partial}`, false)
    })
    socket.on("error", (error: NodeJS.ErrnoException) => this.close(`socket error: ${error.code ?? error.message}`, false))
    socket.on("close", () => this.close("socket closed", false))
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
    if (!this.channels.has(id)) this.channels.set(id, { role, last: StatusNone, path: "", parts: [], bytes: 0 })
  }

  /**
   * Switches to mesh mode: the peer may open channels in its own id range by simply using them,
   * on this side's channels this side receives responses, and every packet goes to the sink's
   * `onPacket` unassembled.
   */
  enableMesh(isDialer: boolean, ownControl: number, peerControl: number, maxPeerChannels: number): void {
    this.mesh = { peerOpensHigh: isDialer, maxPeerChannels, peerChannels: 0 }
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
      this.socket.once("close", () => clearTimeout(timer))
    } else {
      this.writer.close()
      this.socket.destroy()
    }
    this.channels.clear()
    this.sink?.onClose(this.closedWith)
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
      this.mesh.peerChannels++
      this.openChannel(channelId, "server")
      channel = this.channels.get(channelId)
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
      channel.parts = [data]
      channel.bytes = data.length
      return
    }
    channel.bytes += data.length
    if (channel.bytes > this.limits.maxMessageBytes) {
      this.protocolViolation(
        new ProtocolError({
          rule: "message-too-large",
          message: `multi-packet message on channel ${channelId} exceeds ${this.limits.maxMessageBytes} bytes`
        })
      )
      return
    }
    channel.parts.push(data)
    if (isLastPacket(status)) {
      const whole = Buffer.concat(channel.parts, channel.bytes)
      channel.parts = []
      channel.bytes = 0
      this.sink?.onMessage(channelId, channel.path, whole)
    }
  }
}
