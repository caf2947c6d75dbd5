// The h2c leg's wait for a whole answer (appH2.ts): an answer not over this long after its wait
// began (the end of the read its head came in, appH2Exchange.ts) streams instead. Every wait has the same length, so the waits end in the order they began: a
// queue and one timer armed for the oldest, not a setTimeout and clearTimeout per call (a Timeout
// object, a timer-list insert and unenroll: a visible share of a unary call's CPU at the sidecar).
// A wait whose answer ended first is released: it stays in the queue (its holder is not called
// again), and once no wait is still running the timer is cleared, so that a light load (one call
// at a time, each answered well within its wait) does not wake the event loop once more per call
// for a timer with nothing to do. Waits are timed with performance.now(): with Date.now()'s whole
// milliseconds a wait begun late in one lasted anywhere from a few microseconds to its length.
// The queue holds no more than the calls whose heads came within one wait (plus the timer's
// lateness), each an exchange the session's in-flight budget counts already.
/** What waits: `holdOver` runs once the wait passed, unless it was released before. `holdUntil` is the holds' own (0: not waiting). */
export interface Held {
  holdUntil: number
  holdOver(): void
}

/**
 * Up to this many entries an emptied queue keeps its backing store (its slots cleared, not
 * `length = 0`, which gives it back: at one call at a time every call's hold allocated a new one).
 */
const KEPT_ENTRIES = 256

export class AnswerHolds {
  private readonly waitMs: number
  private queue: Array<Held | undefined> = []
  /** The queue's first entry still waiting (entries before it are over), and its end (the slots from here on are cleared). */
  private head = 0
  private tail = 0
  /** Waits neither over nor released. */
  private running = 0
  private timer: NodeJS.Timeout | undefined = undefined
  private readonly onTimer = () => this.fire()

  constructor(waitMs: number) {
    this.waitMs = waitMs
  }

  /** How many waits are queued (over or released but not yet taken out, or running). */
  get size(): number {
    return this.tail - this.head
  }

  hold(held: Held): void {
    held.holdUntil = performance.now() + this.waitMs
    this.queue[this.tail++] = held
    this.running++
    if (this.timer === undefined) this.timer = setTimeout(this.onTimer, this.waitMs)
  }

  /** The holder's answer ended before its wait did: its `holdOver` will not run; the last one running takes the timer with it. */
  release(held: Held): void {
    if (held.holdUntil === 0) return
    held.holdUntil = 0
    if (--this.running === 0) this.stopTimer()
  }

  /** No wait runs: the timer goes, and the queue's spent entries with it. */
  private stopTimer(): void {
    if (this.timer !== undefined) clearTimeout(this.timer)
    this.timer = undefined
    this.emptyQueue()
  }

  private emptyQueue(): void {
    if (this.tail > KEPT_ENTRIES) this.queue.length = 0
    else this.queue.fill(undefined, 0, this.tail)
    this.head = 0
    this.tail = 0
  }

  /** Forgets every wait and stops the timer (the leg closed). */
  clear(): void {
    for (let i = this.head; i < this.tail; i++) this.queue[i]!.holdUntil = 0
    this.running = 0
    this.stopTimer()
  }

  private fire(): void {
    this.timer = undefined
    const now = performance.now()
    const queue = this.queue
    while (this.head < this.tail && queue[this.head]!.holdUntil <= now) {
      const held = queue[this.head]!
      // Its slot cleared now, not when the queue empties or is cut: under steady load that is up
      // to 1024 spent exchanges (and what they hold) kept alive, into the old generation.
      queue[this.head++] = undefined
      if (held.holdUntil === 0) continue
      held.holdUntil = 0
      this.running--
      held.holdOver()
    }
    // A holder that held again while its wait ended armed the timer for that wait, the newest:
    // it is armed again below for the oldest still queued, due first.
    if (this.timer !== undefined) clearTimeout(this.timer)
    this.timer = undefined
    if (this.head === this.tail) return this.emptyQueue()
    // Spent entries go once they are half the queue: the array does not grow while calls keep coming.
    if (this.head > 1024 && this.head * 2 > this.tail) {
      this.queue = queue.slice(this.head, this.tail)
      this.tail -= this.head
      this.head = 0
    }
    this.timer = setTimeout(this.onTimer, Math.max(1, this.queue[this.head]!.holdUntil - now))
  }
}
