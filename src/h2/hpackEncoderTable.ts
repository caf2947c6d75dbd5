// The encoder's copy of the peer's dynamic table (RFC 7541 2.3.2, 4): what hpackEncoder.ts has
// inserted with incremental indexing, so that a field seen again is sent as one index. Entries are
// found by name, then value; each has an id (its insertion count), from which its index follows.
import { ENTRY_OVERHEAD, STATIC_COUNT } from "./hpackTables.ts"

export class EncoderTable {
  /** name -> value -> id of the newest entry with that name and value. */
  private readonly ids = new Map<string, Map<string, number>>()
  // The entries, oldest first from `oldest`, as a ring; ids run from `inserted - count + 1` to `inserted`.
  private names: Array<string> = []
  private values: Array<string> = []
  private oldest = 0
  private count = 0
  private inserted = 0
  private size = 0
  private maxSize: number

  constructor(maxSize: number) {
    this.maxSize = maxSize
  }

  /** The HPACK index (62 = newest) of an entry with this name and value, or 0. */
  indexOf(name: string, value: string): number {
    const id = this.ids.get(name)?.get(value)
    return id === undefined ? 0 : STATIC_COUNT + 1 + this.inserted - id
  }

  /** Adds an entry as the peer's decoder will (4.4): evicting oldest ones, or emptying the table for one larger than it. */
  insert(name: string, value: string): void {
    const entrySize = name.length + value.length + ENTRY_OVERHEAD
    if (entrySize > this.maxSize) {
      this.evictTo(0)
      return
    }
    this.evictTo(this.maxSize - entrySize)
    if (this.count === this.names.length) this.grow()
    const slot = (this.oldest + this.count) % this.names.length
    this.names[slot] = name
    this.values[slot] = value
    this.count++
    this.inserted++
    this.size += entrySize
    let byValue = this.ids.get(name)
    if (byValue === undefined) this.ids.set(name, (byValue = new Map()))
    byValue.set(value, this.inserted)
  }

  /** A new maximum size (a size update the encoder sends): evicts down to it. */
  resize(maxSize: number): void {
    this.maxSize = maxSize
    this.evictTo(maxSize)
  }

  private evictTo(size: number): void {
    while (this.size > size) {
      const slot = this.oldest
      const name = this.names[slot]!
      const value = this.values[slot]!
      const id = this.inserted - this.count + 1
      const byValue = this.ids.get(name)!
      if (byValue.get(value) === id) {
        byValue.delete(value)
        if (byValue.size === 0) this.ids.delete(name)
      }
      this.names[slot] = ""
      this.values[slot] = ""
      this.size -= name.length + value.length + ENTRY_OVERHEAD
      this.oldest = (this.oldest + 1) % this.names.length
      this.count--
    }
  }

  private grow(): void {
    const length = Math.max(16, this.names.length * 2)
    const names = new Array<string>(length).fill("")
    const values = new Array<string>(length).fill("")
    for (let i = 0; i < this.count; i++) {
      names[i] = this.names[(this.oldest + i) % this.names.length]!
      values[i] = this.values[(this.oldest + i) % this.names.length]!
    }
    this.names = names
    this.values = values
    this.oldest = 0
  }
}
