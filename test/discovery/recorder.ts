// Test support for the discovery tests: records what a callback receives (discovery updates, log
// events) and lets a test wait, with a bound, for the first recorded item that matches.

export class Recorder<T> {
  readonly items: Array<T> = []
  private readonly waiters = new Set<{ readonly from: number; readonly match: (item: T) => boolean; readonly resolve: (item: T) => void }>()

  /** The callback to hand to the code under test. */
  readonly push = (item: T): void => {
    this.items.push(item)
    for (const waiter of this.waiters) {
      if (this.items.length - 1 >= waiter.from && waiter.match(item)) {
        this.waiters.delete(waiter)
        waiter.resolve(item)
      }
    }
  }

  /**
   * The first item at index `from` (default 0) or later that matches, recorded already or within
   * `timeoutMs`; rejects after that.
   */
  waitFor(match: (item: T) => boolean, options: { readonly from?: number; readonly timeoutMs?: number } = {}): Promise<T> {
    const from = options.from ?? 0
    const found = this.items.slice(from).find(match)
    if (found !== undefined) return Promise.resolve(found)
    return new Promise((resolve, reject) => {
      const waiter = {
        from,
        match,
        resolve: (item: T) => {
          clearTimeout(timer)
          resolve(item)
        }
      }
      const timer = setTimeout(() => {
        this.waiters.delete(waiter)
        reject(new Error(`no matching item within ${options.timeoutMs ?? 5000} ms; recorded: ${JSON.stringify(this.items.slice(from))}`))
      }, options.timeoutMs ?? 5000)
      this.waiters.add(waiter)
    })
  }

  /** Where the next item will go: pass it as `from` to wait only for later items. */
  get mark(): number {
    return this.items.length
  }
}
