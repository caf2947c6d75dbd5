// A set of objects that each hold their own place in it (`place`), for what comes and goes once per
// request and is walked in no particular order: the outbound h2c listener's open calls of a session
// (outboundH2.ts).
// A Set churned so allocates: V8 rebuilds its hash table as entries come and go (shrunk when it
// empties, rehashed once deletions fill it), ~120 bytes a call at one call at a time (issue 17).
// Here adding writes one slot and deleting moves the last item into the freed one.

/** An item of a PlacedSet: its slot there, -1 while in none. */
export interface Placed {
  place: number
}

/** Up to this many slots an emptied set keeps its backing store (a larger one, after a burst, gives it back). */
const KEPT_SLOTS = 256

export class PlacedSet<T extends Placed> {
  private readonly items: Array<T | undefined> = []
  private count = 0

  get size(): number {
    return this.count
  }

  has(item: T): boolean {
    return item.place >= 0 && item.place < this.count && this.items[item.place] === item
  }

  add(item: T): void {
    if (this.has(item)) return
    item.place = this.count
    this.items[this.count++] = item
  }

  delete(item: T): boolean {
    if (!this.has(item)) return false
    const items = this.items
    const end = --this.count
    const last = items[end]!
    items[end] = undefined
    if (last !== item) {
      items[item.place] = last
      last.place = item.place
    }
    item.place = -1
    if (end === 0 && items.length > KEPT_SLOTS) items.length = 0
    return true
  }

  /** The items now, in no set order (not as added: a deleted item's place takes the last one): a copy, so that items may leave (or come) while the caller walks it. */
  toArray(): Array<T> {
    return this.items.slice(0, this.count) as Array<T>
  }

  /** Walks a copy (toArray): for the rare walks (sweeps, a session's end), never per request. */
  [Symbol.iterator](): Iterator<T> {
    return this.toArray()[Symbol.iterator]()
  }
}
