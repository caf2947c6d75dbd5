// Places at a listener's connection cap (src/iip/server.ts), grouped by the source they come from
// (sourceKey.ts), so that at the cap the one to give up a place is found at once. Two uses: the
// connections that have proven nothing yet (a TLS handshake or first byte still awaited, or no
// whole packet read), where the oldest of the source holding the most makes way first; and every
// connection (fairPlaces.ts), where a source holding more than a newcomer's gives up one of its
// own. Oldest-first alone let one source flooding the listener close an honest peer's handshake
// under way once its own newer sockets outnumbered the places; by the largest holder, a source
// flooding from one address closes its own sockets and reaches another source's only when that
// one holds as many. Each operation is O(1): the accept path runs them at every newcomer at the
// cap, possibly thousands a second.

export class SourcePlaces<T> {
  /** Each source's items, oldest first (a Set keeps insertion order; `requeue` moves one last). */
  private readonly bySource = new Map<string, Set<T>>()
  private readonly sourceOf = new Map<T, string>()
  /** holders[n]: the sources holding exactly n items, in the order they came to hold n. */
  private readonly holders: Array<Set<string>> = [new Set()]
  /** The largest n with holders[n] not empty (0: none held). */
  private mostHeld = 0

  get size(): number {
    return this.sourceOf.size
  }

  /** How many items the source holding the most holds (0: none held). */
  get most(): number {
    return this.mostHeld
  }

  [Symbol.iterator](): IterableIterator<T> {
    return this.sourceOf.keys()
  }

  add(item: T, source: string): void {
    if (this.sourceOf.has(item)) return
    this.sourceOf.set(item, source)
    let items = this.bySource.get(source)
    if (items === undefined) {
      items = new Set()
      this.bySource.set(source, items)
    }
    items.add(item)
    this.recount(source, items.size - 1, items.size)
  }

  /** False when `item` was not held (taken already, or never added): a caller can release it once. */
  delete(item: T): boolean {
    const source = this.sourceOf.get(item)
    if (source === undefined) return false
    this.sourceOf.delete(item)
    const items = this.bySource.get(source)!
    items.delete(item)
    if (items.size === 0) this.bySource.delete(source)
    this.recount(source, items.size + 1, items.size)
    return true
  }

  /** How many items `source` holds. */
  countOf(source: string): number {
    return this.bySource.get(source)?.size ?? 0
  }

  /** The oldest item (or the one longest since its `requeue`) of the source holding the most (ties: the one that came to hold that many first). */
  oldestOfLargest(): T | undefined {
    if (this.mostHeld === 0) return undefined
    const source = this.holders[this.mostHeld]!.values().next().value!
    return this.bySource.get(source)!.values().next().value!
  }

  /** Removes and returns `oldestOfLargest`; undefined when none is held. */
  takeOldestOfLargest(): T | undefined {
    const item = this.oldestOfLargest()
    if (item !== undefined) this.delete(item)
    return item
  }

  /** Moves `item` behind every other item of its source (its count, and its source's order among holders, unchanged). */
  requeue(item: T): void {
    const source = this.sourceOf.get(item)
    if (source === undefined) return
    const items = this.bySource.get(source)!
    items.delete(item)
    items.add(item)
  }

  private recount(source: string, from: number, to: number): void {
    if (from > 0) this.holders[from]!.delete(source)
    if (to > 0) (this.holders[to] ??= new Set()).add(source)
    if (to > this.mostHeld) this.mostHeld = to
    // Counts move by one: only the source that held the most can have emptied its bucket.
    else if (from === this.mostHeld && this.holders[from]!.size === 0) this.mostHeld = from - 1
  }
}
