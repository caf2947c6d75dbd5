// The bytes behind the embedded trace store (traceStore.ts): the request path's packed spans as
// UTF-8 in one buffer allocated once, outside the JS heap, with a fixed budget; the oldest span is
// overwritten first. Why: a kept span lives for seconds, so as heap strings (plus the objects that
// held them) every kept trace was promoted to old space and later paid for in a mark-compact (issue
// 14: ~1.3 KB promoted per kept trace of a sidecar B, half or more of what a traced sidecar promoted
// at 1,000 req/s). Here a kept span costs the heap nothing after it is written.
//
// Each span is one record tagged with its owner's slot (the store's index of a trace) and the
// slot's generation; a slot's records form a chain (each record holds the offset of the slot's next
// one), so a trace whose spans arrived between other traces' is read back in order. When room for a
// new record means overwriting the oldest one and that record still belongs to a live slot, the
// owner is told (`onOverwrite`) and drops the whole trace: records are overwritten in the order
// they were written, so a trace's first span always goes before its later ones.
//
// The buffer is allocated whole but used from its start: the ring wraps at its first START_BYTES
// and, each time the writer reaches that end while the record it would overwrite next still
// belongs to a live slot, doubles where it wraps, up to the whole buffer. Pages never written are
// never resident: a store whose kept traces fit in less than its budget touches only what they need
// (1,000 traces of 750 bytes settle in 1 MiB of a 2 MiB budget). Issue 14: the whole 2 MiB was
// resident after ~30 s of traced traffic, the largest part of a sidecar's anonymous memory 10 s
// after the bench's burst (+1.2-2.0 MB over idle; 0.2-0.5 MB since). Traces that grow larger later
// lose their oldest live traces until the writer's next lap end.
//
//   const ring = new SpanRing(1 << 20, 1000, (slot) => store.evict(slot))
//   ring.append(slot, line)    // false: the slot lost its trace making room, or the line is larger than the budget
//   ring.lines(slot)           // the slot's lines, oldest first
//   ring.clear(slot)           // the slot's records become garbage in the ring

/** Record header: total length (u32), slot (i32), generation (u32), offset of the slot's next record (i32, -1 none). */
const HEADER = 16
/** A length of 0 at the read position: the rest of the buffer is unused, the next record is at 0. */
const WRAP = 0
/** Where the ring wraps at first (or the whole buffer, if smaller). */
const START_BYTES = 256 * 1024

export class SpanRing {
  private readonly bytes: Buffer
  private readonly generation: Uint32Array
  private readonly first: Int32Array
  private readonly last: Int32Array
  private readonly onOverwrite: (slot: number) => void
  /** Where the next record goes, and the oldest record still in the buffer (meaningful while `records > 0`). */
  private write = 0
  private oldest = 0
  private records = 0
  /** Where the ring wraps now: START_BYTES at first, up to the buffer's size. */
  private end: number

  constructor(capacityBytes: number, slots: number, onOverwrite: (slot: number) => void) {
    this.bytes = Buffer.allocUnsafeSlow(Math.max(HEADER * 4, capacityBytes))
    this.generation = new Uint32Array(slots)
    this.first = new Int32Array(slots).fill(-1)
    this.last = new Int32Array(slots).fill(-1)
    this.onOverwrite = onOverwrite
    this.end = Math.min(START_BYTES, this.bytes.length)
  }

  /** The buffer's size in bytes: the most the ring ever holds. */
  get capacity(): number {
    return this.bytes.length
  }

  /** Where the ring wraps now: the bytes it writes into (the rest of the buffer is never touched). */
  get reach(): number {
    return this.end
  }

  /** Forgets a slot's records (they stay in the buffer as garbage until overwritten). */
  clear(slot: number): void {
    this.generation[slot] = (this.generation[slot]! + 1) >>> 0
    this.first[slot] = -1
    this.last[slot] = -1
  }

  /**
   * Appends one line to a slot's chain. False when it is not kept: larger than the whole buffer,
   * or making room overwrote the slot's own first record (its owner was told and dropped it).
   */
  append(slot: number, line: string): boolean {
    const length = HEADER + Buffer.byteLength(line, "utf8")
    if (length > this.bytes.length) return false
    const generation = this.generation[slot]!
    const at = this.makeRoom(length)
    if (this.generation[slot] !== generation) return false
    const bytes = this.bytes
    bytes.writeUInt32LE(length, at)
    bytes.writeInt32LE(slot, at + 4)
    bytes.writeUInt32LE(generation, at + 8)
    bytes.writeInt32LE(-1, at + 12)
    bytes.write(line, at + HEADER, length - HEADER, "utf8")
    const previous = this.last[slot]!
    if (previous === -1) this.first[slot] = at
    else bytes.writeInt32LE(at, previous + 12)
    this.last[slot] = at
    this.write = at + length
    this.records++
    return true
  }

  /** The slot's lines, in the order they were appended. */
  lines(slot: number): Array<string> {
    const out: Array<string> = []
    for (let at = this.first[slot]!; at !== -1; at = this.bytes.readInt32LE(at + 12)) {
      out.push(this.bytes.toString("utf8", at + HEADER, at + this.bytes.readUInt32LE(at)))
    }
    return out
  }

  /** The offset `length` bytes can be written at, after overwriting the oldest records in the way. */
  private makeRoom(length: number): number {
    for (;;) {
      const size = this.end
      if (this.records === 0) {
        this.write = 0
        this.oldest = 0
        while (length > this.end) this.end = Math.min(this.bytes.length, this.end * 2)
        return 0
      }
      if (this.write > this.oldest) {
        if (this.write + length <= size) return this.write
        // Wrapping now would overwrite a live trace next (the ring is too small for what it keeps),
        // or the record is larger than the ring: the end moves. Only here, with every record
        // before the writer, or with none, can it move without a record past it.
        if (size < this.bytes.length && (length > size || this.oldestIsLive())) {
          this.end = Math.min(this.bytes.length, size * 2)
          continue
        }
        // No room before the end: mark the rest unused and go on from the start.
        if (this.write + 4 <= size) this.bytes.writeUInt32LE(WRAP, this.write)
        this.write = 0
        continue
      }
      // The write position is at or before the oldest record (at it: the buffer is full).
      if (this.write + length <= this.oldest) return this.write
      this.dropOldest()
    }
  }

  /** The oldest record belongs to a slot that still holds its trace. */
  private oldestIsLive(): boolean {
    const at = this.oldest
    if (at + HEADER > this.end || this.bytes.readUInt32LE(at) === WRAP) return false
    return this.bytes.readUInt32LE(at + 8) === this.generation[this.bytes.readInt32LE(at + 4)]
  }

  /** Overwrites the oldest record, telling the owner of a live one. */
  private dropOldest(): void {
    const size = this.end
    if (this.oldest + HEADER > size || this.bytes.readUInt32LE(this.oldest) === WRAP) {
      this.oldest = 0
      return
    }
    const at = this.oldest
    const slot = this.bytes.readInt32LE(at + 4)
    const live = this.bytes.readUInt32LE(at + 8) === this.generation[slot]
    this.oldest = at + this.bytes.readUInt32LE(at)
    if (this.oldest + HEADER > size) this.oldest = 0
    this.records--
    if (live) this.onOverwrite(slot)
  }
}
