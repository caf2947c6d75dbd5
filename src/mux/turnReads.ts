// A time budget for the reads of many sockets in one turn of the event loop: the outbound h2c
// listener's connections share one (outboundH2.ts; the check is in src/h2/h2ConnectionCore.ts's
// read). A turn handles every socket readable when it began, each whole (libuv reads a socket up to
// 32 times an event) before any other I/O: a flood of 100 h2c callers, their windows granted at
// once, made single turns of sidecar A run 150-320 ms of CPU (6 MiB and 1,600 stream opens in one,
// 20-39 MiB of bodies in later ones), and any other caller's request waited that long at each of its
// steps (test/sidecar/h2c-body-flood-turns.solo.test.ts). Past the budget a read is put back and its
// socket paused until the next turn's end, and a new connection's set-up waits there too (100 of
// them were 40 % of the first turn): the rest of this turn's I/O and the next turn's poll go first.
// Deferred, never dropped; what was put off gets a budget of its own when it runs, so a busy
// listener cannot starve it; and what is put off again (that budget spent too) keeps its place
// ahead of what was put off since: behind it, two budgets' worth of sockets, served first each
// turn, were put off and served in turn while the others never read again (test/mux/turn-reads-fair).
// Only a socket's first read of a turn waits: the reads libuv makes of it after that in the same
// turn are of one write of the caller's as often as not, and a held body whole at the turn's end
// may be tried again (outboundH2Call.ts; outbound-h2-held-split-read).

/** What of a socket a turn's budget needs (node's net.Socket). */
export interface HeldSocket {
  pause(): unknown
  resume(): unknown
  unshift(chunk: Buffer): void
  readonly destroyed: boolean
}

export class TurnReads {
  private readonly budgetMs: number
  /** When this turn's first read began (performance.now()); -1 before it. */
  private startedAt = -1
  private armed = false
  /** Counts the turns that read: a socket's reads after its first of a turn are its (h2ConnectionCore.ts's `readTurn`). */
  turn = 0
  /** Work put off this turn (a paused socket's resume, a connection's set-up), run at the next turn's end. */
  private later: Array<() => void> = []
  /** Work put off again this turn (put off before, run, out of budget again): it goes first. */
  private again: Array<() => void> = []
  /** Sockets put off and not read since, and their count (at 0 `take` spares itself the look). */
  private readonly waiting = new WeakSet<HeldSocket>()
  private waitingCount = 0

  constructor(budgetMs: number) {
    this.budgetMs = budgetMs
  }

  /** Work beginning at `now`: true when this turn's budget is spent (the caller puts it off with `putOff`). */
  spent(now: number): boolean {
    if (!this.armed) {
      this.armed = true
      setImmediate(this.turnEnd)
    }
    if (this.startedAt < 0) this.startedAt = now
    else if (now - this.startedAt >= this.budgetMs) return true
    return false
  }

  /** Runs `work` at the next turn's end, with a budget of its own; `again`: it was put off before, and goes ahead of work put off for the first time. */
  putOff(work: () => void, again = false): void {
    ;(again ? this.again : this.later).push(work)
  }

  /** `socket`'s read was put off and it has not been read since. */
  waits(socket: HeldSocket): boolean {
    return this.waitingCount > 0 && this.waiting.has(socket)
  }

  /** A read of `chunk` from `socket` beginning at `now`: true to handle it; false once this turn's budget is spent: it was put back and the socket paused. */
  take(socket: HeldSocket, chunk: Buffer, now: number): boolean {
    if (!this.spent(now)) {
      if (this.waitingCount > 0 && this.waiting.delete(socket)) this.waitingCount--
      return true
    }
    // Paused first: the chunk put back is then buffered at the front, not emitted again now.
    socket.pause()
    socket.unshift(chunk)
    const again = this.waiting.has(socket)
    if (!again) {
      this.waiting.add(socket)
      this.waitingCount++
    }
    this.putOff(() => {
      if (!socket.destroyed) socket.resume()
      // Destroyed while put off: it reads no more, so it is waiting no longer (`take` skips its look at none waiting).
      else if (this.waiting.delete(socket)) this.waitingCount--
    }, again)
    return false
  }

  private readonly turnEnd = (): void => {
    this.armed = false
    this.turn++
    this.startedAt = -1
    if (this.later.length === 0 && this.again.length === 0) return
    const later = this.again.length === 0 ? this.later : this.again.concat(this.later)
    this.later = []
    this.again = []
    // An immediate queued from the check phase runs in the next turn's: after that turn's poll.
    setImmediate(() => this.run(later))
  }

  private run(later: Array<() => void>): void {
    // A budget of their own (a resumed socket's buffered reads flow as this returns): a poll that ran its budget does not keep them waiting again.
    this.startedAt = -1
    for (const work of later) work()
  }
}
