// The one writer of a connection (PROTOCOL.md §2.6). Packets are encoded into a batch and
// written in the order they were sent on each channel, each packet whole. When: what is sent while
// the connection's own read callback runs (answers a server gives at once, the next requests a
// client sends from its answers' callbacks) as that callback ends, all that one read produced in
// one write (no tick between a request read and its answer written: at one request in flight that
// hop is latency on both sides); other small packets once per turn of the event loop, after the
// turn's I/O callbacks (requests a sidecar takes from many HTTP sockets, each in its own callback,
// or answers its app gives on many, leave in one write instead of one each); a large body or a
// large batch at the end of the tick. At a low rate a turn carries one packet, and waiting for its
// end buys a `setImmediate` per packet and, on a TLS socket, a turn of the loop (node completes a
// synchronous TLS write through an immediate of its own, which queued from the check phase runs a
// turn later): while the last turn-end write carried a single packet, a packet sent outside a read
// with nothing queued is written at once; a second packet in the same turn goes back to writing at
// the turn's end, and so it stays until a turn-end write carries one packet again (libuv's count
// of the loop's turns says which turn a packet came in). What work left for the turn's end sends
// (turnEnd.ts, in the check phase, where an immediate would run a turn later) is written as that
// work returns, at the end of its tick. A mesh message's first packet is kept as
// its parts (envelope fields, metadata, body) and encoded straight into the batch (batch.ts): no
// buffer of its own per message.
// Stream chunks (`sendChunk`) are bulk: they wait in a lane per channel and go out one at a time,
// the lanes taken in turn, the next only once the socket has taken the previous one, while every
// other packet goes out at its flush ahead of them. A small call on a connection that carries a
// bulk stream therefore waits behind at most one chunk here, not behind all the stream has queued
// (no head-of-line blocking between channels); order within a channel holds, since a packet sent
// on a channel whose lane is not empty joins the lane, and so does a cancel of a request on it
// (`sendEnvelope`'s `behind`), which must not overtake it: sent on the control channel, it may go
// out after control packets sent later (each is about its own channel). When the socket pushes
// back, packets wait here; producers see `congested` and stop producing (the server stops reading
// requests, the client holds new requests, a stream sender waits), so memory stays bounded.
// Nothing is dropped: past the hard limit `send` throws instead. A server's writers also count
// what they hold in one budget of all its connections (budget.ts WriteBudget), which pauses the
// reading of the connections holding more than their share while it is exceeded.
import { performance } from "node:perf_hooks"
import { encodeEnvelopeHeadInto, EnvelopeBytes, envelopeMetaBytes, type Meta } from "../protocol/mesh.ts"
import { checkPacket, encodeHeaderInto, encodePacketInto } from "../protocol/packet.ts"
import { Batch } from "./batch.ts"
import { unlimitedWriteBudget, type WriteBudget, type WriteBudgetMember } from "./budget.ts"
import { monotonicMs } from "./clock.ts"
import { Overloaded } from "./errors.ts"
import { libuvQueued } from "./libuvQueue.ts"
import { runningTurnEnds } from "./turnEnd.ts"

/** What the writer needs of a socket (net.Socket satisfies it). */
export interface ByteSink {
  /** `callback` runs once the chunk left for the operating system (or the write failed). */
  write(chunk: Uint8Array, callback?: (error?: Error | null) => void): boolean
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

/** libuv's count of the loop's turns (a turn's poll and check phases share one value). */
const nodeTiming = performance.nodeTiming
const loopTurn = (): number => nodeTiming.uvMetricsInfo.loopCount

/** Bulk packets the socket may hold at once: one, so a small packet waits behind at most one chunk (more measured no faster). */
const BULK_IN_FLIGHT = 1

/** A packet waiting in a channel's lane: a stream chunk (its header byte, then `data`), or a packet sent behind one. */
interface LanePacket {
  /** The lane's channel, or another one's packet about it sent behind it (a control channel's cancel). */
  readonly channelId: number
  readonly status: number
  readonly path: string
  /** The chunk header byte written before `data` (PROTOCOL.md §12), or -1 for a packet sent whole. */
  readonly chunkHeader: number
  readonly data: Uint8Array
  readonly size: number
  /** Called once the socket took `data` (a leased chunk is released then); not called if the connection closes first. */
  readonly written: (() => void) | undefined
  /** A mesh message with a deadline, `data` its body: encoded when written, with what is left of its deadline then. */
  readonly envelope: LaneEnvelope | undefined
}

/** The parts of a mesh message's first packet (sendEnvelope) waiting in a lane with a deadline. */
interface LaneEnvelope {
  readonly kind: number
  readonly flags: number
  readonly requestId: number
  readonly meta: Meta
  readonly maxMetaBytes: number
  /** Its deadline when queued, the most it is written with (the packet's size was counted with it). */
  readonly deadlineMs: number
  /** When its deadline passes, in monotonicMs() terms (clock.ts). */
  readonly deadlineAt: number
}

/** The bulk packets of one channel, in order, and whatever was sent on the channel behind them. */
interface Lane {
  readonly channelId: number
  readonly packets: Array<LanePacket>
  head: number
}

export class PacketWriter {
  /** Packets sent whole (not behind a lane), for the next write; and an empty one to swap in (none while a write is under way). */
  private batch = new Batch()
  private spare: Batch | undefined = new Batch()
  private queuedBytes = 0
  /**
   * How many times the packets sent whole were taken to be written (or dropped at close): one
   * counted while `wholeWaiting` is nonzero has left this writer once this moves on (meshStatedLimits.ts).
   */
  wholeWrites = 0
  /** A flush waits for the end of the turn (setImmediate) / of the tick (nextTick). */
  private scheduled = false
  private scheduledSoon = false
  /** Packets sent outside a read are written at once (see the top of this file); and the turn of the last one written so. */
  private atOnce = true
  private atOnceTurn = -1
  /** The turn-end write scheduled holds the rest of a turn whose first packet went at once. */
  private restOfTurn = false
  private waitingDrain = false
  private closed = false
  /** Set by the connection while its read callback runs (`beginRead`, `endRead`). */
  inRead = false
  /** Packets were added to the batch during the read: `endRead` writes them. */
  private readQueued = false
  /** Set by `finish`: called once everything queued is written. */
  private finishing: (() => void) | undefined
  private readonly writableWaiters: Array<() => void> = []
  /** Channels with bulk packets waiting, by id, and the same lanes in the order they are served. */
  private readonly lanes = new Map<number, Lane>()
  private ring: Array<Lane> = []
  private nextLane = 0
  /** Bulk packets written that the socket has not taken yet. */
  private bulkInFlight = 0
  /** The `written` callbacks of the bulk packets in the socket, in the order written. */
  private readonly bulkCallbacks: Array<(() => void) | undefined> = []
  private readonly onBulkWritten = () => {
    this.writesTaken++
    this.bulkInFlight--
    this.bulkCallbacks.shift()?.()
    this.flush()
  }
  private readonly flushAtTurnEnd = () => {
    this.scheduled = false
    // One packet this turn, and not the rest of a turn that began with a packet written at once: the rate is low.
    if (this.batch.length === 1 && !this.restOfTurn) this.atOnce = true
    this.restOfTurn = false
    this.flush()
  }
  private readonly flushAtTickEnd = () => {
    this.scheduledSoon = false
    this.flush()
  }
  private readonly onDrain = () => {
    this.writesTaken++
    this.waitingDrain = false
    this.flush()
  }

  private readonly sink: ByteSink
  private readonly limits: WriterLimits
  /** Where this writer's bytes count with its server's other connections' (budget.ts). */
  private readonly budget: WriteBudget
  /** Of `budget.bytes`, this writer's part: what was queued, until `settleBudget` sees the socket took it. */
  private charged = 0
  /** Times the socket took what it held (a drain, a bulk packet written): the peer reads (timeouts.ts). */
  writesTaken = 0

  /** The connection whose bytes these are, as the budget pauses and resumes it. */
  private readonly member: WriteBudgetMember | undefined

  constructor(sink: ByteSink, limits: WriterLimits, budget: WriteBudget = unlimitedWriteBudget, member?: WriteBudgetMember) {
    this.sink = sink
    this.limits = limits
    this.budget = budget
    this.member = member
  }

  /** Bytes of the write budget this writer holds. */
  get chargedBytes(): number {
    return this.charged
  }

  /** Waiting for the socket to take what it holds: only the peer reading moves it on. */
  get waitingForPeer(): boolean {
    return this.waitingDrain || this.bulkInFlight > 0
  }

  /**
   * Bytes handed to the socket that its kernel has not taken yet, as libuv counts them while a write
   * is under way (the handle's `writeQueueSize`, which Node keeps up to date but does not document):
   * it shrinks as the peer reads, long before a large write completes (timeouts.ts). -1 where the
   * socket has no such handle (a WebSocket's stream).
   */
  get socketUnsent(): number {
    return libuvQueued(this.sink) ?? -1
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
    this.admit(size)
    if (this.lanes.size > 0) {
      const lane = this.lanes.get(channelId)
      if (lane !== undefined) {
        // Behind this channel's bulk packets: order within a channel holds.
        lane.packets.push({ channelId, status, path, chunkHeader: -1, data, size, written: undefined, envelope: undefined })
        this.queuedBytes += size
        return
      }
    }
    this.batch.push(status, path, channelId, data, size)
    this.queued(size, data.length)
  }

  /**
   * Queues a mesh message's first packet from its parts (PROTOCOL.md §12): envelope, metadata
   * (`deadlineMs` > 0, whole ms, written as its deadline entry: what is left of it when the packet
   * is written, if it waits in a lane) and body, encoded at the write straight into the batch. `behind`: the channel whose lane it waits behind, if that has one; another than its
   * own for a control message about a request that may wait in that lane (a cancel must not reach
   * the peer ahead of the request it cancels). Throws EnvelopeError or PacketEncodeError (nothing
   * queued) or Overloaded.
   */
  sendEnvelope(
    status: number,
    path: string,
    channelId: number,
    kind: number,
    flags: number,
    requestId: number,
    meta: Meta,
    maxMetaBytes: number,
    deadlineMs: number,
    body: Uint8Array,
    behind = channelId
  ): void {
    const metaBytes = envelopeMetaBytes(meta, maxMetaBytes, deadlineMs)
    const dataLength = EnvelopeBytes + metaBytes + body.length
    const size = checkPacket(status, path, channelId, dataLength)
    if (this.closed || this.finishing !== undefined) throw new Overloaded({ message: "connection is closed", limit: "closed" })
    this.admit(size)
    const lane = this.lanes.size > 0 ? this.lanes.get(behind) : undefined
    if (lane !== undefined) {
      // Behind this channel's bulk packets, which a lane keeps as buffers of their own. One with a
      // deadline is encoded when written: the far end must not get more time than is left then
      // (the lane may wait for the peer's window). `size` is its most: fewer digits are left later.
      if (deadlineMs > 0) {
        const envelope = { kind, flags, requestId, meta, maxMetaBytes, deadlineMs, deadlineAt: monotonicMs() + deadlineMs }
        lane.packets.push({ channelId, status, path, chunkHeader: -1, data: body, size, written: undefined, envelope })
      } else {
        const data = Buffer.allocUnsafe(dataLength)
        data.set(body, encodeEnvelopeHeadInto(data, 0, kind, flags, requestId, meta, metaBytes, 0))
        lane.packets.push({ channelId, status, path, chunkHeader: -1, data, size, written: undefined, envelope: undefined })
      }
      this.queuedBytes += size
      return
    }
    this.batch.pushEnvelope(status, path, channelId, kind, flags, requestId, meta, metaBytes, deadlineMs, body, size)
    this.queued(size, body.length)
  }

  /** The connection starts handing a read's packets on: what they make this side send waits for `endRead`. */
  beginRead(): void {
    this.inRead = true
  }

  /**
   * The read is handled: what it made this side send is written now, in one write; or, with
   * `writeNow` false (the connection is about to close for what it read), at the end of the tick.
   */
  endRead(writeNow: boolean): void {
    this.inRead = false
    if (!this.readQueued) return
    this.readQueued = false
    if (writeNow) {
      // A write this turn already: more packets of the turn wait for its end, as after one written at once.
      if (this.atOnce) this.atOnceTurn = loopTurn()
      this.flush()
    } else if (!this.scheduledSoon) {
      this.scheduledSoon = true
      process.nextTick(this.flushAtTickEnd)
    }
  }

  /** Schedules the flush of a packet just added to the batch. */
  private queued(size: number, bodyLength: number): void {
    this.queuedBytes += size
    if (this.waitingDrain) return
    if (this.inRead) this.readQueued = true
    else if (bodyLength >= COPY_LIMIT || this.queuedBytes >= PROMPT_BYTES) {
      if (!this.scheduledSoon) {
        this.scheduledSoon = true
        process.nextTick(this.flushAtTickEnd)
      }
    } else if (!this.scheduled) {
      // Sent from work left for the turn's end (turnEnd.ts: an h2c request whose held body streams on there, or ended outside a read), in the
      // check phase: an immediate queued now runs a turn later, after that turn's I/O. The end of
      // the tick comes as that work returns, with all it sent: one write, in this turn.
      const atTurnEnd = runningTurnEnds()
      if (!atTurnEnd && this.atOnce && this.writeAtOnce()) return
      this.scheduled = true
      if (atTurnEnd) process.nextTick(this.flushAtTurnEnd)
      else setImmediate(this.flushAtTurnEnd)
    }
  }

  /**
   * Writes the packet just queued now if it is alone and the last was written at once in an
   * earlier turn; false (it waits for the turn's end, and so do the next ones) if one was written
   * at once in this turn already.
   */
  private writeAtOnce(): boolean {
    if (this.batch.length !== 1 || this.ring.length > 0 || this.writableWaiters.length > 0) return false
    const turn = loopTurn()
    if (turn === this.atOnceTurn) {
      this.atOnce = false
      this.restOfTurn = true
      return false
    }
    this.atOnceTurn = turn
    this.flush()
    return true
  }

  /**
   * Queues one stream chunk: a packet whose data is the byte `chunkHeader` then `data` (written by
   * reference, not copied). Bulk: it waits in its channel's lane (see the top of this file).
   * Throws PacketEncodeError (nothing queued) or Overloaded.
   */
  sendChunk(status: number, path: string, channelId: number, chunkHeader: number, data: Uint8Array, written?: () => void): void {
    const size = checkPacket(status, path, channelId, 1 + data.length)
    if (this.closed || this.finishing !== undefined) throw new Overloaded({ message: "connection is closed", limit: "closed" })
    this.admit(size)
    let lane = this.lanes.get(channelId)
    if (lane === undefined) {
      lane = { channelId, packets: [], head: 0 }
      this.lanes.set(channelId, lane)
      this.ring.push(lane)
    }
    lane.packets.push({ channelId, status, path, chunkHeader, data, size, written, envelope: undefined })
    this.queuedBytes += size
    if (this.waitingDrain || this.bulkInFlight >= BULK_IN_FLIGHT || this.scheduledSoon) return
    this.scheduledSoon = true
    process.nextTick(this.flushAtTickEnd)
  }

  /**
   * Packets of `channelId` wait in its lane, not yet handed to the socket: a packet on another
   * channel (a control message about this one) would reach the peer ahead of them.
   */
  holds(channelId: number): boolean {
    return this.lanes.size > 0 && this.lanes.has(channelId)
  }

  /** Packets waiting in lanes (stream chunks and what was sent behind them), all channels together (the bench prints it). */
  get queuedChunks(): number {
    let n = 0
    for (const lane of this.ring) n += lane.packets.length - lane.head
    return n
  }

  /** Takes `size` bytes into the queue (the packet is queued right after) or throws Overloaded. */
  private admit(size: number): void {
    if (this.queuedBytes + size > this.limits.maxQueuedBytes && this.queuedBytes > 0) {
      throw new Overloaded({
        message: `write queue holds ${this.queuedBytes} bytes, limit ${this.limits.maxQueuedBytes}`,
        limit: "writeQueueBytes"
      })
    }
    this.charged += size
    const budget = this.budget
    if ((budget.bytes += size) > budget.maxBytes || budget.exceeded) budget.check(this.member)
  }

  /**
   * Gives the write budget back what left this writer since: called once a write is done, and at
   * close (all of it). What a socket that pushed back holds stays charged until its drain; what
   * one took under its high-water mark (and the one stream chunk in flight) is not counted: that
   * much per connection at most.
   */
  private settleBudget(): void {
    const pending = this.closed ? 0 : this.waitingDrain ? this.queuedBytes + this.sink.writableLength : this.queuedBytes
    if (pending === this.charged) return
    this.budget.bytes += pending - this.charged
    this.charged = pending
    this.budget.check(this.member)
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
    this.recycle(this.takeQueue())
    this.dropLanes()
    this.settleBudget()
    this.releaseWaiters()
  }

  /** Packets sent whole waiting for the next write (not those sent behind a lane). */
  get wholeWaiting(): number {
    return this.batch.length
  }

  /** Empties the queue of packets sent whole and returns what it held. */
  private takeQueue(): Batch {
    this.wholeWrites++
    const taken = this.batch
    this.batch = this.spare ?? new Batch()
    this.spare = undefined
    return taken
  }

  /** A batch written (or discarded) becomes the spare: no arrays allocated per write. */
  private recycle(batch: Batch): void {
    batch.clear()
    this.spare = batch
  }

  private dropLanes(): void {
    this.lanes.clear()
    this.ring = []
    this.nextLane = 0
    this.queuedBytes = 0
  }

  private flush(): void {
    if (this.closed || this.waitingDrain) return
    const ok = this.batch.length === 0 || this.writeQueue()
    // A bulk packet's own write callback starts the next one: the socket's push-back on it is not
    // a reason to hold small packets (grants, answers) back until the socket is empty.
    if (ok) while (this.bulkInFlight < BULK_IN_FLIGHT && this.ring.length > 0) this.writeBulk()
    if (!ok) {
      this.waitingDrain = true
      this.sink.once("drain", this.onDrain)
      this.settleBudget()
    } else {
      this.settleBudget()
      if (!this.congested) this.releaseWaiters()
      this.finishIfDone()
    }
  }

  /**
   * The next lane's first bulk packet and what was sent behind it on its channel up to the next
   * bulk one; the lanes take turns. Written with a callback: the next bulk packet waits for the
   * socket to take this one.
   */
  private writeBulk(): void {
    if (this.nextLane >= this.ring.length) this.nextLane = 0
    const lane = this.ring[this.nextLane]!
    const packets = lane.packets
    const first = packets[lane.head++]!
    let end = lane.head
    while (end < packets.length && packets[end]!.chunkHeader === -1) end++
    let bytes = first.size
    // Its socket write's callback (onBulkWritten) calls the packet's own.
    this.bulkCallbacks.push(first.written)
    this.sink.cork()
    const headerBytes = first.size - first.data.length
    const header = Buffer.allocUnsafe(headerBytes)
    const at = encodeHeaderInto(header, 0, first.status, first.path, lane.channelId, first.data.length + (first.chunkHeader === -1 ? 0 : 1))
    if (first.chunkHeader !== -1) header[at] = first.chunkHeader
    this.sink.write(header)
    const behind = end - lane.head
    if (behind === 0) this.sink.write(first.data, this.onBulkWritten)
    else {
      this.sink.write(first.data)
      let total = 0
      for (let i = lane.head; i < end; i++) total += packets[i]!.size
      // Messages with a deadline take what is left of it now, whole ms, at least 1 (0 would be none),
      // at most what they were queued with, the digits its `size` was counted and allocated with
      // (the monotonic clock never gives more; the bound keeps any clock from writing past it).
      const now = this.hasEnvelope(packets, lane.head, end) ? monotonicMs() : 0
      const out = Buffer.allocUnsafe(total)
      let offset = 0
      for (let i = lane.head; i < end; i++) {
        const p = packets[i]!
        const envelope = p.envelope
        if (envelope === undefined) offset = encodePacketInto(out, offset, p.status, p.path, p.channelId, p.data)
        else {
          const left = Math.max(1, Math.min(envelope.deadlineMs, Math.ceil(envelope.deadlineAt - now)))
          const metaBytes = envelopeMetaBytes(envelope.meta, envelope.maxMetaBytes, left)
          offset = encodeHeaderInto(out, offset, p.status, p.path, p.channelId, EnvelopeBytes + metaBytes + p.data.length)
          offset = encodeEnvelopeHeadInto(out, offset, envelope.kind, envelope.flags, envelope.requestId, envelope.meta, metaBytes, left)
          out.set(p.data, offset)
          offset += p.data.length
        }
      }
      bytes += total
      this.sink.write(offset === total ? out : out.subarray(0, offset), this.onBulkWritten)
    }
    this.sink.uncork()
    this.bulkInFlight++
    this.queuedBytes -= bytes
    lane.head = end
    if (lane.head === packets.length) {
      this.lanes.delete(lane.channelId)
      this.ring.splice(this.nextLane, 1)
    } else {
      if (lane.head > 64) {
        packets.splice(0, lane.head)
        lane.head = 0
      }
      this.nextLane++
    }
  }

  private hasEnvelope(packets: Array<LanePacket>, from: number, to: number): boolean {
    for (let i = from; i < to; i++) if (packets[i]!.envelope !== undefined) return true
    return false
  }

  /** Writes the packets sent whole, in order: small ones copied into one buffer, large bodies by reference. */
  private writeQueue(): boolean {
    const batch = this.takeQueue()
    const count = batch.length
    let ok = true
    if (count === 1 || this.allSmall(batch, count)) {
      ok = this.writeCopied(batch, 0, count)
    } else {
      // Mixed batch: copy small packets together, write large bodies by reference (writev).
      this.sink.cork()
      let start = 0
      for (let i = 0; i <= count; i++) {
        if (i < count && batch.dataOf(i).length < COPY_LIMIT) continue
        if (i > start) ok = this.writeCopied(batch, start, i) && ok
        if (i < count) {
          const data = batch.dataOf(i)
          const size = batch.sizeOf(i)
          this.queuedBytes -= size
          const header = Buffer.allocUnsafe(size - data.length)
          batch.encodeHeadInto(header, 0, i)
          ok = this.sink.write(header) && ok
          ok = this.sink.write(data) && ok
        }
        start = i + 1
      }
      this.sink.uncork()
    }
    this.recycle(batch)
    return ok
  }

  private finishIfDone(): void {
    const then = this.finishing
    if (then === undefined || this.batch.length > 0 || this.ring.length > 0 || this.bulkInFlight > 0 || this.waitingDrain) return
    this.finishing = undefined
    this.closed = true
    then()
  }

  /** The first `count` packets' data are all small enough to copy. */
  private allSmall(batch: Batch, count: number): boolean {
    for (let i = 0; i < count; i++) if (batch.dataOf(i).length >= COPY_LIMIT) return false
    return true
  }

  private writeCopied(batch: Batch, from: number, to: number): boolean {
    let total = 0
    for (let i = from; i < to; i++) total += batch.sizeOf(i)
    this.queuedBytes -= total
    const out = Buffer.allocUnsafe(total)
    let offset = 0
    for (let i = from; i < to; i++) offset = batch.encodeInto(out, offset, i)
    return this.sink.write(out)
  }

  private releaseWaiters(): void {
    if (this.writableWaiters.length === 0) return
    const waiters = this.writableWaiters.splice(0)
    for (const w of waiters) w()
  }
}
