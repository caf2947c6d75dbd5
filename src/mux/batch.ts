// The packets the writer (writer.ts) holds for its next write, in the order they were sent, as
// parallel arrays (no object per packet). A packet is either whole bytes, or a mesh message's
// first packet kept as its parts (envelope fields, metadata, body) and encoded straight into the
// write's buffer: no buffer of its own per message, the body copied once.
import { encodeEnvelopeHeadInto, EnvelopeBytes, type Meta } from "../protocol/mesh.ts"
import { encodeHeaderInto } from "../protocol/packet.ts"

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

  get length(): number {
    return this.statuses.length
  }

  /** Empties it for reuse (the writer keeps two and swaps them), dropping its references to the data. */
  clear(): void {
    this.statuses.length = 0
    this.paths.length = 0
    this.channels.length = 0
    this.datas.length = 0
    this.sizes.length = 0
    this.envelopeOf.length = 0
    this.kinds.length = 0
    this.flags.length = 0
    this.requestIds.length = 0
    this.metas.length = 0
    this.metaBytes.length = 0
    this.deadlines.length = 0
  }

  push(status: number, path: string, channelId: number, data: Uint8Array, size: number): void {
    this.statuses.push(status)
    this.paths.push(path)
    this.channels.push(channelId)
    this.datas.push(data)
    this.sizes.push(size)
    this.envelopeOf.push(-1)
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
    this.statuses.push(status)
    this.paths.push(path)
    this.channels.push(channelId)
    this.datas.push(body)
    this.sizes.push(size)
    this.envelopeOf.push(this.kinds.length)
    this.kinds.push(kind)
    this.flags.push(flags)
    this.requestIds.push(requestId)
    this.metas.push(meta)
    this.metaBytes.push(metaBytes)
    this.deadlines.push(deadlineMs)
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
