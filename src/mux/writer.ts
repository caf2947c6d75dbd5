// The one ordered writer of a connection (PROTOCOL.md §2.6). Packets are encoded into a batch
// and written in the order they were sent, each packet whole. When: what is sent while the
// connection's own read callback runs (answers a server gives at once, the next requests a
// client sends from its answers' callbacks) at the end of that tick, all that one read produced in
// one write; other small packets once per turn of the event loop, after the turn's I/O callbacks
// (requests a sidecar takes from many HTTP sockets, each in its own callback, or answers its app
// gives on many, leave in one write instead of one each); a large body or a large batch at the end
// of the tick (a stream's chunks gain nothing by waiting, and its flow control would wait on
// them). When the socket
// pushes back, packets wait here; producers see `congested` and stop producing (the server stops
// reading requests, the client holds new requests), so memory stays bounded. Nothing is dropped:
// past the hard limit `send` throws instead.
import { checkPacket, encodeHeaderInto, encodePacketInto } from "../protocol/packet.ts"
import { Overloaded } from "./errors.ts"

/** What the writer needs of a socket (net.Socket satisfies it). */
export interface ByteSink {
  write(chunk: Uint8Array): boolean
  cork(): void
  uncork(): void
  readonly writableLength: number
  once(event: "drain", listener: () => void): unknown
}

export interface WriterLimits {
  /** Above this many queued bytes the writer reports congestion. */
  readonly highWaterBytes: number
  /** Above this many queued bytes `send` throws Overloaded. */
  readonly maxQueuedBytes: number
}

/** Bodies at least this large are written by reference instead of being copied into the batch. */
const COPY_LIMIT = 8 * 1024
/** A batch this large is written at the end of the tick rather than the turn. */
const PROMPT_BYTES = 64 * 1024

export class PacketWriter {
  private statuses: Array<number> = []
  private paths: Array<string> = []
  private channels: Array<number> = []
  private datas: Array<Uint8Array> = []
  private sizes: Array<number> = []
  private queuedBytes = 0
  /** A flush waits for the end of the turn (setImmediate) / of the tick (nextTick). */
  private scheduled = false
  private scheduledSoon = false
  private waitingDrain = false
  private closed = false
  /** Set by the connection while its read callback runs. */
  inRead = false
  /** Set by `finish`: called once everything queued is written. */
  private finishing: (() => void) | undefined
  private readonly writableWaiters: Array<() => void> = []
  private readonly flushAtTurnEnd = () => {
    this.scheduled = false
    this.flush()
  }
  private readonly flushAtTickEnd = () => {
    this.scheduledSoon = false
    this.flush()
  }
  private readonly onDrain = () => {
    this.waitingDrain = false
    this.flush()
  }

  private readonly sink: ByteSink
  private readonly limits: WriterLimits

  constructor(sink: ByteSink, limits: WriterLimits) {
    this.sink = sink
    this.limits = limits
  }

  /** Bytes waiting here or in the socket. */
  get pendingBytes(): number {
    return this.queuedBytes + this.sink.writableLength
  }

  get congested(): boolean {
    return this.pendingBytes > this.limits.highWaterBytes
  }

  /** Queues one packet. Throws PacketEncodeError (nothing queued) or Overloaded. */
  send(status: number, path: string, channelId: number, data: Uint8Array): void {
    const size = checkPacket(status, path, channelId, data.length)
    if (this.closed || this.finishing !== undefined) throw new Overloaded({ message: "connection is closed", limit: "closed" })
    if (this.queuedBytes + size > this.limits.maxQueuedBytes && this.queuedBytes > 0) {
      throw new Overloaded({
        message: `write queue holds ${this.queuedBytes} bytes, limit ${this.limits.maxQueuedBytes}`,
        limit: "writeQueueBytes"
      })
    }
    this.statuses.push(status)
    this.paths.push(path)
    this.channels.push(channelId)
    this.datas.push(data)
    this.sizes.push(size)
    this.queuedBytes += size
    if (this.waitingDrain) return
    if (this.inRead || data.length >= COPY_LIMIT || this.queuedBytes >= PROMPT_BYTES) {
      if (!this.scheduledSoon) {
        this.scheduledSoon = true
        process.nextTick(this.flushAtTickEnd)
      }
    } else if (!this.scheduled) {
      this.scheduled = true
      setImmediate(this.flushAtTurnEnd)
    }
  }

  /** Calls `callback` once the writer is no longer congested (at once if it is not). */
  whenWritable(callback: () => void): void {
    if (!this.congested || this.closed) callback()
    else this.writableWaiters.push(callback)
  }

  /** Writes what is queued, refuses anything new, and calls `then` once all of it reached the socket. */
  finish(then: () => void): void {
    if (this.closed) return then()
    this.finishing = then
    this.flush()
  }

  /** Stops writing; queued packets are discarded (the connection is gone). */
  close(): void {
    this.closed = true
    this.takeQueue()
    this.releaseWaiters()
  }

  /** Empties the queue and returns what it held. */
  private takeQueue() {
    const taken = { statuses: this.statuses, paths: this.paths, channels: this.channels, datas: this.datas, sizes: this.sizes }
    this.statuses = []
    this.paths = []
    this.channels = []
    this.datas = []
    this.sizes = []
    this.queuedBytes = 0
    return taken
  }

  private flush(): void {
    if (this.closed || this.waitingDrain) return
    if (this.statuses.length === 0) {
      if (!this.congested) this.releaseWaiters()
      this.finishIfDone()
      return
    }
    const { statuses, paths, channels, datas, sizes } = this.takeQueue()
    const count = statuses.length
    let ok = true
    if (count === 1 || this.allSmall(datas)) {
      let total = 0
      for (let i = 0; i < count; i++) total += sizes[i]!
      const out = Buffer.allocUnsafe(total)
      let offset = 0
      for (let i = 0; i < count; i++) offset = encodePacketInto(out, offset, statuses[i]!, paths[i]!, channels[i]!, datas[i]!)
      ok = this.sink.write(out)
    } else {
      // Mixed batch: copy small packets together, write large bodies by reference (writev).
      this.sink.cork()
      let start = 0
      for (let i = 0; i <= count; i++) {
        if (i < count && datas[i]!.length < COPY_LIMIT) continue
        if (i > start) ok = this.writeCopied(statuses, paths, channels, datas, sizes, start, i) && ok
        if (i < count) {
          const data = datas[i]!
          const header = Buffer.allocUnsafe(sizes[i]! - data.length)
          encodeHeaderInto(header, 0, statuses[i]!, paths[i]!, channels[i]!, data.length)
          ok = this.sink.write(header) && ok
          ok = this.sink.write(data) && ok
        }
        start = i + 1
      }
      this.sink.uncork()
    }
    if (!ok) {
      this.waitingDrain = true
      this.sink.once("drain", this.onDrain)
    } else {
      if (!this.congested) this.releaseWaiters()
      this.finishIfDone()
    }
  }

  private finishIfDone(): void {
    const then = this.finishing
    if (then === undefined || this.statuses.length > 0 || this.waitingDrain) return
    this.finishing = undefined
    this.closed = true
    then()
  }

  private allSmall(datas: Array<Uint8Array>): boolean {
    for (let i = 0; i < datas.length; i++) if (datas[i]!.length >= COPY_LIMIT) return false
    return true
  }

  private writeCopied(
    statuses: Array<number>,
    paths: Array<string>,
    channels: Array<number>,
    datas: Array<Uint8Array>,
    sizes: Array<number>,
    from: number,
    to: number
  ): boolean {
    let total = 0
    for (let i = from; i < to; i++) total += sizes[i]!
    const out = Buffer.allocUnsafe(total)
    let offset = 0
    for (let i = from; i < to; i++) offset = encodePacketInto(out, offset, statuses[i]!, paths[i]!, channels[i]!, datas[i]!)
    return this.sink.write(out)
  }

  private releaseWaiters(): void {
    if (this.writableWaiters.length === 0) return
    const waiters = this.writableWaiters.splice(0)
    for (const w of waiters) w()
  }
}
