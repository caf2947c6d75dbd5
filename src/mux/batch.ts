// The packets the writer (writer.ts) holds for its next write, in the order they were sent, as
// parallel arrays (no object per packet). A packet is either whole bytes, or a mesh message's
// first packet kept as its parts (envelope fields, metadata, body) and encoded straight into the
// write's buffer: no buffer of its own per message, the body copied once. The arrays keep their
// size across writes (entries past `length` are stale): setting an array's length to 0 drops its
// backing store, and growing twelve of them again cost about 450 bytes of garbage per mesh request.
import { emptyMeta, encodeEnvelopeHeadInto, EnvelopeBytes, type Meta } from "../protocol/mesh.ts"
import { encodeHeaderInto } from "../protocol/packet.ts"

const noData = new Uint8Array(0)
/** Up to this many packets a cleared batch keeps its arrays' room (about 100 bytes a packet); a larger batch gives it back. */
const KEPT_PACKETS = 256

export class Batch {
  readonly statuses: Array<number> = []
  readonly paths: Array<string> = []
  readonly channels: Array<number> = []
  /** The packet's data, or for a mesh message its body (what follows envelope and metadata). */
  readonly datas: Array<Uint8Array> = []
  /** Encoded size of each packet, header included. */
  readonly sizes: Array<number> = []
  /** Per packet: -1 for whole bytes, else its index in the envelope arrays below. */
  private readonly envelopeOf: Array<number> = []
  private readonly kinds: Array<number> = []
  private readonly flags: Array<number> = []
  private readonly requestIds: Array<number> = []
  private readonly metas: Array<Meta> = []
  private readonly metaBytes: Array<number> = []
  private readonly deadlines: Array<number> = []
  /** Packets held (the first `count` entries of the packet arrays), and envelopes among them. */
  private count = 0
  private envelopes = 0
  private readonly arrays: ReadonlyArray<Array<unknown>> = [
    this.statuses,
    this.paths,
    this.channels,
    this.datas,
    this.sizes,
    this.envelopeOf,
    this.kinds,
    this.flags,
    this.requestIds,
    this.metas,
    this.metaBytes,
    this.deadlines
  ]

  /** Packets held: the arrays' entries from this index on are stale. */
  get length(): number {
    return this.count
  }

  /** Empties it for reuse (the writer keeps two and swaps them), dropping its references to the data. */
  clear(): void {
    if (this.count > KEPT_PACKETS) {
      // A burst: its arrays are not kept (idle connections would hold them).
      for (const array of this.arrays) array.length = 0
    } else {
      this.datas.fill(noData, 0, this.count)
      this.paths.fill("", 0, this.count)
      this.metas.fill(emptyMeta, 0, this.envelopes)
    }
    this.count = 0
    this.envelopes = 0
  }

  push(status: number, path: string, channelId: number, data: Uint8Array, size: number): void {
    const i = this.count++
    this.statuses[i] = status
    this.paths[i] = path
    this.channels[i] = channelId
    this.datas[i] = data
    this.sizes[i] = size
    this.envelopeOf[i] = -1
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
    const i = this.count++
    const e = this.envelopes++
    this.statuses[i] = status
    this.paths[i] = path
    this.channels[i] = channelId
    this.datas[i] = body
    this.sizes[i] = size
    this.envelopeOf[i] = e
    this.kinds[e] = kind
    this.flags[e] = flags
    this.requestIds[e] = requestId
    this.metas[e] = meta
    this.metaBytes[e] = metaBytes
    this.deadlines[e] = deadlineMs
  }

  /** Packet `i` whole at `offset` (`out` sized by `sizes`); returns the offset after it. */
  encodeInto(out: Buffer, offset: number, i: number): number {
    const data = this.datas[i]!
    offset = this.encodeHeadInto(out, offset, i)
    out.set(data, offset)
    return offset + data.length
  }

  /** Packet `i` but its data (or body) at `offset`; returns where the data goes. */
  encodeHeadInto(out: Buffer, offset: number, i: number): number {
    const data = this.datas[i]!
    const e = this.envelopeOf[i]!
    if (e === -1) return encodeHeaderInto(out, offset, this.statuses[i]!, this.paths[i]!, this.channels[i]!, data.length)
    const metaBytes = this.metaBytes[e]!
    offset = encodeHeaderInto(out, offset, this.statuses[i]!, this.paths[i]!, this.channels[i]!, EnvelopeBytes + metaBytes + data.length)
    return encodeEnvelopeHeadInto(out, offset, this.kinds[e]!, this.flags[e]!, this.requestIds[e]!, this.metas[e]!, metaBytes, this.deadlines[e]!)
  }

}
