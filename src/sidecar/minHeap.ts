// A binary min-heap over an array the caller built, for a selection that wants only the first few
// of many in order (heldAnswers.ts's look: the answers to take back until under the budget, usually
// a handful of thousands held). Built in place in at most 2n comparisons (Floyd), then each pop at
// most 2 log2(n): taking k of n is O(n + k log n), where sorting all was O(n log n) on every look
// (1.9 ms at 1,000 held answers, 27 ms at 20,000).

export class MinHeap<T> {
  private readonly items: Array<T>
  private readonly before: (a: T, b: T) => boolean
  private size: number

  /** Takes `items` over (reordered in place); `before(a, b)`: a comes out ahead of b (a strict order; ties come out in no set order). */
  constructor(items: Array<T>, before: (a: T, b: T) => boolean) {
    this.items = items
    this.before = before
    this.size = items.length
    for (let i = (this.size >> 1) - 1; i >= 0; i--) this.siftDown(i)
  }

  /** The first item left, removed; undefined once none is left. */
  pop(): T | undefined {
    if (this.size === 0) return undefined
    const first = this.items[0]!
    this.size--
    if (this.size > 0) {
      this.items[0] = this.items[this.size]!
      this.siftDown(0)
    }
    return first
  }

  private siftDown(at: number): void {
    const items = this.items
    const item = items[at]!
    for (;;) {
      let child = 2 * at + 1
      if (child >= this.size) break
      if (child + 1 < this.size && this.before(items[child + 1]!, items[child]!)) child++
      if (!this.before(items[child]!, item)) break
      items[at] = items[child]!
      at = child
    }
    items[at] = item
  }
}
