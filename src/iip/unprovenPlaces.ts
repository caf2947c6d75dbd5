// The connections of a listener that have proven nothing yet (src/iip/server.ts: a TLS handshake or
// first byte still awaited, or no whole packet read), grouped by the source they come from
// (sourceKey.ts), so that at the connection cap the one to close is found at once: the oldest of
// the source holding the most. Oldest-first alone let one source flooding the listener close an
// honest peer's handshake under way once its own newer sockets outnumbered the places; by the
// largest holder, a source flooding from one address closes its own sockets and reaches another
// source's only when that one holds as many unproven ones. Each operation is O(1): the accept
// path runs it at every newcomer at the cap, possibly thousands a second.

export class UnprovenPlaces<T> {
  /** Each source's items, oldest first (a Set keeps insertion order). */
  private readonly bySource = new Map<string, Set<T>>()
  private readonly sourceOf = new Map<T, string>()
  /** holders[n]: the sources holding exactly n items, in the order they came to hold n. */
  private readonly holders: Array<Set<string>> = [new Set()]
  /** The largest n with holders[n] not empty (0: none held). */
  private most = 0

  get size(): number {
    return this.sourceOf.size
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

  /** Removes and returns the oldest item of the source holding the most (ties: the one that came to hold that many first); undefined when none is held. */
  takeOldestOfLargest(): T | undefined {
    if (this.most === 0) return undefined
    const source = this.holders[this.most]!.values().next().value!
    const item = this.bySource.get(source)!.values().next().value!
    this.delete(item)
    return item
  }

  private recount(source: string, from: number, to: number): void {
    if (from > 0) this.holders[from]!.delete(source)
    if (to > 0) (this.holders[to] ??= new Set()).add(source)
    if (to > this.most) this.most = to
    // Counts move by one: only the source that held the most can have emptied its bucket.
    else if (from === this.most && this.holders[from]!.size === 0) this.most = from - 1
  }
}
