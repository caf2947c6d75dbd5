// Smooth weighted round-robin (as nginx does it): over any window, each endpoint is picked in
// proportion to its weight, and picks of one endpoint are spread out rather than bunched. Pure
// state over a list; the latency-aware default picker comes with the balancer proper.

export interface Weighted {
  readonly weight: number
}

export class WeightedRoundRobin<E extends Weighted> {
  private readonly items: ReadonlyArray<E>
  private readonly current: Array<number>
  private readonly total: number

  constructor(items: ReadonlyArray<E>) {
    this.items = items
    this.current = items.map(() => 0)
    this.total = items.reduce((sum, item) => sum + Math.max(0, item.weight), 0)
  }

  get size(): number {
    return this.items.length
  }

  /** The next endpoint among those `usable` accepts; undefined when none is usable. */
  pick(usable: (item: E) => boolean = () => true): E | undefined {
    let best = -1
    let total = 0
    for (let i = 0; i < this.items.length; i++) {
      const item = this.items[i]!
      if (item.weight <= 0 || !usable(item)) continue
      this.current[i]! += item.weight
      total += item.weight
      if (best === -1 || this.current[i]! > this.current[best]!) best = i
    }
    if (best === -1) return undefined
    this.current[best]! -= total
    return this.items[best]
  }

  get totalWeight(): number {
    return this.total
  }
}
