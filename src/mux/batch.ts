// The packets the writer (writer.ts) holds for its next write, in the order they were sent, each
// in a slot the batch keeps and fills again (no object per packet). A packet is either whole bytes,
// or a mesh message's first packet kept as its parts (envelope fields, metadata, body) and encoded
// straight into the write's buffer: no buffer of its own per message, the body copied once. One
// slot per packet, not one array per field: a packet's fields lie together, so queueing and
// encoding it touch a couple of cache lines instead of two dozen (twelve arrays and their stores).
// At one request in flight the process comes back to this code with cold caches every time, and
// that was a measurable share of a call's latency.
import { emptyMeta, encodeEnvelopeHeadInto, EnvelopeBytes, type Meta } from "../protocol/mesh.ts"
import { encodeHeaderInto } from "../protocol/packet.ts"

const noData = new Uint8Array(0)
/** Up to this many packets a cleared batch keeps its slots (about 130 bytes a packet); a larger batch gives them back. */
const KEPT_PACKETS = 256

/** One packet of a batch. Slots are kept across writes and filled again: no object per packet. */
class Slot {
  status = 0
  path = ""
  channelId = 0
  /** The packet's data, or for a mesh message its body (what follows envelope and metadata). */
  data: Uint8Array = noData
  /** Encoded size, header included. */
  size = 0
  /** -1 for whole bytes, else the envelope's kind, and the envelope's fields below. */
  kind = -1
  flags = 0
  requestId = 0
  meta: Meta = emptyMeta
  metaBytes = 0
  deadlineMs = 0
}

export class Batch {
  private readonly slots: Array<Slot> = []
  /** Packets held: the slots from this index on are stale. */
  private count = 0

  get length(): number {
    return this.count
  }

  /** Packet `i`'s data (a mesh message's body). */
  dataOf(i: number): Uint8Array {
    return this.slots[i]!.data
  }

  /** Packet `i`'s encoded size, header included. */
  sizeOf(i: number): number {
    return this.slots[i]!.size
  }

  /** Empties it for reuse (the writer keeps two and swaps them), dropping its references to the data. */
  clear(): void {
    const slots = this.slots
    if (this.count > KEPT_PACKETS) {
      // A burst: its slots are not kept (idle connections would hold them).
      slots.length = 0
    } else {
      for (let i = 0; i < this.count; i++) {
        const slot = slots[i]!
        slot.data = noData
        slot.path = ""
        slot.meta = emptyMeta
      }
    }
    this.count = 0
  }

  /** The next slot, filled with what every packet has; `kind` -1 for a plain packet. */
  private next(status: number, path: string, channelId: number, data: Uint8Array, size: number, kind: number): Slot {
    const i = this.count++
    const slot = this.slots[i] ?? (this.slots[i] = new Slot())
    slot.status = status
    slot.path = path
    slot.channelId = channelId
    slot.data = data
    slot.size = size
    slot.kind = kind
    return slot
  }

  push(status: number, path: string, channelId: number, data: Uint8Array, size: number): void {
    this.next(status, path, channelId, data, size, -1)
  }

  /** A mesh message's first packet; `size` counts envelope, metadata and body. */
  pushEnvelope(
    status: number,
    path: string,
    channelId: number,
    kind: number,
    flags: number,
    requestId: number,
    meta: Meta,
    metaBytes: number,
    deadlineMs: number,
    body: Uint8Array,
    size: number
  ): void {
    const slot = this.next(status, path, channelId, body, size, kind)
    slot.flags = flags
    slot.requestId = requestId
    slot.meta = meta
    slot.metaBytes = metaBytes
    slot.deadlineMs = deadlineMs
  }

  /** Packet `i` whole at `offset` (`out` sized by `sizeOf`); returns the offset after it. */
  encodeInto(out: Buffer, offset: number, i: number): number {
    const slot = this.slots[i]!
    const data = slot.data
    offset = this.encodeHead(out, offset, slot)
    out.set(data, offset)
    return offset + data.length
  }

  /** Packet `i` but its data (or body) at `offset`; returns where the data goes. */
  encodeHeadInto(out: Buffer, offset: number, i: number): number {
    return this.encodeHead(out, offset, this.slots[i]!)
  }

  private encodeHead(out: Buffer, offset: number, slot: Slot): number {
    const dataLength = slot.data.length
    if (slot.kind === -1) return encodeHeaderInto(out, offset, slot.status, slot.path, slot.channelId, dataLength)
    const metaBytes = slot.metaBytes
    offset = encodeHeaderInto(out, offset, slot.status, slot.path, slot.channelId, EnvelopeBytes + metaBytes + dataLength)
    return encodeEnvelopeHeadInto(out, offset, slot.kind, slot.flags, slot.requestId, slot.meta, metaBytes, slot.deadlineMs)
  }
}
