// The one rule for a timer that judges a peer (a request's deadline, a slow try, a health probe, a
// ping's wait): its firing late is this process's stall (a long GC, a starved CPU, a throttled
// cgroup), not the peer's. On waking from a stall libuv runs expired timers before it polls for I/O,
// so an answer that came meanwhile sits unread in the kernel's buffer when the timer fires. A timer
// that fired late gets the stolen time back once (at most its own timeout) before it judges: a timer
// set from its callback fires after a poll phase has read the socket. A peer that never answers is
// still judged, at most one more timeout later. Used by deadlines.ts and clientSession.ts (with their
// own timers: per-request code allocates nothing more; the deadline heap keeps no item's timeout and
// caps at nothing: at most one more stall), LateTimer's users (the outbound's slow-try watch, the IIP
// client's probe) and the keep-alive (on Effect's Clock).

/** Lateness any timer fires with (timer granularity, whole-ms clocks, a loaded machine's scheduling): not a stall. */
export const LATE_SLACK_MS = 2

/** How much longer a timer that fired `late` ms after it was due waits before it judges: 0 (judge now) unless past the slack, at most `capMs`. */
export const lateGraceMs = (late: number, capMs: number): number => (late > LATE_SLACK_MS ? Math.min(late, capMs) : 0)

/** A one-shot timer that calls `judge` `ms` after it is made, or (fired late) its lateness more once. */
export class LateTimer {
  private timer: NodeJS.Timeout | undefined
  /** When it should fire (performance.now()); Infinity once a late one was given its lateness back. */
  private dueAt: number
  private readonly ms: number
  private readonly judge: () => void
  private readonly fired = (): void => {
    const grace = lateGraceMs(performance.now() - this.dueAt, this.ms)
    this.dueAt = Infinity
    if (grace > 0) {
      this.timer = setTimeout(this.fired, grace)
      return
    }
    this.timer = undefined
    this.judge()
  }

  constructor(ms: number, judge: () => void) {
    this.ms = ms
    this.judge = judge
    this.dueAt = performance.now() + ms
    this.timer = setTimeout(this.fired, ms)
  }

  /** No judging from here on (what it waited for came, or was given up). */
  cancel(): void {
    if (this.timer !== undefined) clearTimeout(this.timer)
    this.timer = undefined
  }
}
