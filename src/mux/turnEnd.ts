// Work left for the end of the event loop's turn, for many items at once: the HTTP/2 legs
// (outboundH2Call.ts, appH2Exchange.ts) decide at the end of the read an answer's head or a call's body came in
// whether it was read whole (H2ConnectionCore.atReadEnd), and at the end of the turn when it came
// outside a read of that connection, or when a call's body was not whole at its read's end (the
// next read of the turn may end it); the h2 connections flush here. One setImmediate per turn does for every item of the turn,
// instead of a promise, a closure or an Immediate per call. That work runs in the check phase,
// where an immediate queued runs only in the next turn, after its I/O: a writer (writer.ts) asked
// to write from it writes at the end of the tick instead (runningTurnEnds).

/** TurnEnd callbacks running now (the check phase): what they send is written as they return, not a turn later. */
let running = 0
export const runningTurnEnds = (): boolean => running > 0

/**
 * Up to this many items a turn's array keeps its backing store once run (emptied by clearing its
 * slots, not `length = 0`, which gives it back: the next turn's first push allocated a new one, ~76
 * bytes, every turn at one call a turn). A larger turn's array is given back (an idle process would hold it).
 */
const KEPT_ITEMS = 256

/** Items added in one turn, each given to `run` once at its end, in the order added. */
export class TurnEnd<T> {
  private items: Array<T | undefined> = []
  /** How many of `items` are this turn's (the slots from here on are cleared). */
  private count = 0
  /** Swapped with `items` at the turn's end, not copied: an item added while they run waits for the next turn's end. */
  private spare: Array<T | undefined> = []
  private armed = false
  private readonly run: (item: T) => void
  private readonly atEnd = (): void => {
    this.armed = false
    const items = this.items
    const count = this.count
    this.items = this.spare
    this.count = 0
    this.spare = items
    running++
    try {
      for (let i = 0; i < count; i++) this.run(items[i]!)
    } finally {
      running--
      if (count > KEPT_ITEMS) items.length = 0
      else items.fill(undefined, 0, count)
    }
  }

  constructor(run: (item: T) => void) {
    this.run = run
  }

  add(item: T): void {
    this.items[this.count++] = item
    if (!this.armed) {
      this.armed = true
      setImmediate(this.atEnd)
    }
  }
}
