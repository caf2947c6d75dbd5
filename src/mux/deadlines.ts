// Per-request deadlines of a mesh session (calls this side waits for, requests it serves) without
// a Node timer per request: a min-heap of what is due, one timer armed for the earliest. At tens
// of thousands of requests a second, a setTimeout and clearTimeout per request (a timer-list
// insert, a Timeout object, an unenroll) cost a visible share of a request's CPU. Removal is
// exact (each entry knows its heap slot), so the heap holds only what is still pending and a
// finished request leaves nothing behind. The one timer is not re-armed when its entry is
// removed: it fires at the old time, finds nothing due and re-arms for the new earliest, so it
// moves about once per deadline's length, not once per request. Times are monotonic (clock.ts):
// a wall clock stepped back or forward moves no deadline.

import { monotonicMs } from "./clock.ts"
import { lateGraceMs } from "./lateTimer.ts"

/** The longest a Node timer waits: past it setTimeout fires after 1 ms (a TimeoutOverflowWarning). */
export const MAX_TIMER_MS = 2 ** 31 - 1

/** Something with a deadline: the heap keeps its slot (-1 while it is not in the heap) and due time in it. */
export interface Expiring {
  deadlineSlot: number
  deadlineAt: number
}

/**
 * Up to this many slots an emptied heap keeps its backing store. Popped to empty, V8 trims an
 * array's store and the next push allocates one again (~76 bytes): at one request at a time, every
 * request did. The heap counts its entries instead, clearing the slots it leaves; one emptied after
 * a larger burst gives its store back (an idle session would hold it).
 */
const KEPT_SLOTS = 256

export class Deadlines<T extends Expiring> {
  private readonly heap: Array<T | undefined> = []
  /** Entries in the heap: its slots from here on are cleared. */
  private count = 0
  private timer: NodeJS.Timeout | undefined = undefined
  /** When the armed timer fires (0: none armed). */
  private armedAt = 0
  private readonly expire: (item: T) => void
  /** When the armed timer should fire (arm): past it, the timer is late. */
  private firesAt = 0
  /** What is due waits out a late timer's lateness (fire). */
  private graced = false
  private readonly onTimer = () => this.fire()

  /** `expire` runs once for each item whose deadline passes before it is removed. */
  constructor(expire: (item: T) => void) {
    this.expire = expire
  }

  get size(): number {
    return this.count
  }

  /** `item` expires `ms` from now (ms > 0) unless removed first. */
  add(item: T, ms: number): void {
    this.addAt(item, monotonicMs() + ms)
  }

  /** `item` expires at `at` (monotonicMs() terms; a time already past expires it on the next tick) unless removed first. */
  addAt(item: T, at: number): void {
    const heap = this.heap
    item.deadlineAt = at
    heap[this.count] = item
    this.up(this.count++)
    if (this.armedAt === 0 || at < this.armedAt) this.arm(at)
  }

  /** Forgets `item`'s deadline (no-op when it has none). */
  remove(item: T): void {
    const slot = item.deadlineSlot
    if (slot < 0) return
    item.deadlineSlot = -1
    const heap = this.heap
    const end = --this.count
    const last = heap[end]!
    heap[end] = undefined
    if (end === 0 && heap.length > KEPT_SLOTS) heap.length = 0
    if (slot === end) return
    heap[slot] = last
    last.deadlineSlot = slot
    this.down(slot)
    this.up(slot)
  }

  /** Forgets every deadline and stops the timer (the session closed). */
  clear(): void {
    const heap = this.heap
    for (let i = 0; i < this.count; i++) heap[i]!.deadlineSlot = -1
    if (heap.length > KEPT_SLOTS) heap.length = 0
    else heap.fill(undefined, 0, this.count)
    this.count = 0
    if (this.timer !== undefined) clearTimeout(this.timer)
    this.timer = undefined
    this.armedAt = 0
  }

  private arm(at: number): void {
    if (this.timer !== undefined) clearTimeout(this.timer)
    this.armedAt = at
    // Clamped: past MAX_TIMER_MS Node fires after 1 ms, and fire() would re-arm every ms while the
    // deadline is pending. A timer cut short finds nothing due and re-arms for what is left.
    const now = monotonicMs()
    const delay = Math.min(MAX_TIMER_MS, Math.max(1, at - now))
    this.firesAt = now + delay
    this.timer = setTimeout(this.onTimer, delay)
  }

  private fire(): void {
    this.timer = undefined
    const now = monotonicMs()
    // Not capped at the delay the timer was armed for: re-armed lazily (a removed item leaves it
    // armed, it re-arms for the new earliest), that is whatever was left of the earliest item's
    // wait, down to 1 ms, not its timeout, which the heap does not keep (deadlines-own-stall.test.ts).
    // What is due waits at most one more stall.
    const grace = this.graced ? 0 : lateGraceMs(now - this.firesAt, Infinity)
    this.armedAt = 0
    const heap = this.heap
    // Late with something due: this process stalled, and an answer that came meanwhile may sit
    // unread in the kernel's buffer; expired now, it failed a call its peer answered in time (and
    // counted against it: an ejection, deadline-own-stall.test.ts). What is due waits the
    // lateness more once (lateTimer.ts).
    if (grace > 0 && this.count > 0 && heap[0]!.deadlineAt <= now) {
      this.graced = true
      return this.arm(now + grace)
    }
    this.graced = false
    while (this.count > 0 && heap[0]!.deadlineAt <= now) {
      const item = heap[0]!
      this.remove(item)
      this.expire(item)
    }
    // An expiry that added an item (TunnelStalls' next look) armed the timer for that one alone:
    // one pending since, and due earlier, would wait for it.
    if (this.count > 0 && (this.armedAt === 0 || heap[0]!.deadlineAt < this.armedAt)) this.arm(heap[0]!.deadlineAt)
  }

  private up(slot: number): void {
    const heap = this.heap
    const item = heap[slot]!
    while (slot > 0) {
      const parentSlot = (slot - 1) >> 1
      const parent = heap[parentSlot]!
      if (parent.deadlineAt <= item.deadlineAt) break
      heap[slot] = parent
      parent.deadlineSlot = slot
      slot = parentSlot
    }
    heap[slot] = item
    item.deadlineSlot = slot
  }

  private down(slot: number): void {
    const heap = this.heap
    const length = this.count
    const item = heap[slot]!
    for (;;) {
      let child = 2 * slot + 1
      if (child >= length) break
      if (child + 1 < length && heap[child + 1]!.deadlineAt < heap[child]!.deadlineAt) child++
      const next = heap[child]!
      if (next.deadlineAt >= item.deadlineAt) break
      heap[slot] = next
      next.deadlineSlot = slot
      slot = child
    }
    heap[slot] = item
    item.deadlineSlot = slot
  }
}
