// A first-in first-out queue for what is nearly always empty or one long: the outbound listener's
// requests of one connection waiting for their turn (http1Connection.ts; pipelining is rare), a
// mesh channel's or a plain IIP client channel's calls waiting for their answers (meshChannels.ts,
// clientSession.ts: one at a time but under load). The oldest item is held in a field and the
// others in an array used only when two or more wait. An array alone, pushed to when empty and
// shifted back to empty, gets a new backing store for each item (V8 drops the store at length 0):
// about 150 bytes of garbage a request (issue 14).

export class Fifo<T> {
  /** The oldest item; undefined only when the queue is empty. */
  private first: T | undefined = undefined
  /** The items after `first`, in order. */
  private readonly rest: Array<T> = []

  get length(): number {
    return this.first === undefined ? 0 : 1 + this.rest.length
  }

  /** The newest item, undefined when empty. */
  get last(): T | undefined {
    return this.rest.length > 0 ? this.rest[this.rest.length - 1] : this.first
  }

  push(item: T): void {
    if (this.first === undefined) this.first = item
    else this.rest.push(item)
  }

  /** The oldest item, undefined when empty. */
  peek(): T | undefined {
    return this.first
  }

  /** Takes the oldest item, undefined when empty. */
  shift(): T | undefined {
    const item = this.first
    this.first = this.rest.length > 0 ? this.rest.shift() : undefined
    return item
  }

  /** Takes the newest item, undefined when empty. */
  pop(): T | undefined {
    if (this.rest.length > 0) return this.rest.pop()
    const item = this.first
    this.first = undefined
    return item
  }

  /** Whether `test` holds for every item (true when empty). */
  every(test: (item: T) => boolean): boolean {
    if (this.first === undefined) return true
    if (!test(this.first)) return false
    for (let i = 0; i < this.rest.length; i++) if (!test(this.rest[i]!)) return false
    return true
  }

  /** Takes every item, oldest first. */
  takeAll(): Array<T> {
    const all = this.first === undefined ? [] : [this.first, ...this.rest]
    this.clear()
    return all
  }

  clear(): void {
    this.first = undefined
    this.rest.length = 0
  }
}
