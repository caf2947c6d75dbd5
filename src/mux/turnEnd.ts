// Work left for the end of the event loop's turn, for many items at once: the HTTP/2 legs
// (outboundH2Call.ts, appH2Exchange.ts) decide at the end of the turn an answer's head or a call's body came in
// whether it was read whole, which one setImmediate per turn does for every item of the turn,
// instead of a promise, a closure or an Immediate per call.

/** Items added in one turn, each given to `run` once at its end, in the order added. */
export class TurnEnd<T> {
  private items: Array<T> = []
  /** Swapped with `items` at the turn's end, not copied: an item added while they run waits for the next turn's end. */
  private spare: Array<T> = []
  private armed = false
  private readonly run: (item: T) => void
  private readonly atEnd = (): void => {
    this.armed = false
    const items = this.items
    this.items = this.spare
    this.spare = items
    try {
      for (let i = 0; i < items.length; i++) this.run(items[i]!)
    } finally {
      items.length = 0
    }
  }

  constructor(run: (item: T) => void) {
    this.run = run
  }

  add(item: T): void {
    this.items.push(item)
    if (!this.armed) {
      this.armed = true
      setImmediate(this.atEnd)
    }
  }
}
