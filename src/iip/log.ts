// The structured log events the library emits on its own (protocol violations, handler crashes,
// refused connections): one JSON line each on stderr unless the caller passes its own sink;
// neverThrowing, a sink that cannot throw into its caller; LogThrottle, the bound on a line that
// may repeat without end; throttledEvents, the server's bound on the lines a peer repeats at will.
import { monotonicMs } from "../mux/clock.ts"
import type { ConnectionLog } from "../mux/connection.ts"
import { stderrLines } from "./outputLines.ts"
import { escapeInvisible } from "./redact.ts"

export type Log = ConnectionLog

/**
 * `value` as one JSON log line, newline included, with no control character raw in it: values from
 * the network reach log lines, and JSON.stringify escapes only U+0000-U+001F (redact.ts). Parses back the same.
 */
export const jsonLine = (value: unknown): string => `${escapeInvisible(JSON.stringify(value))}\n`

export const stderrLog: Log = (event, fields) => {
  stderrLines()(jsonLine({ time: new Date().toISOString(), event, ...fields }))
}

/**
 * The message of anything thrown or failed with; never throws itself (an object with no prototype,
 * a `message` getter that throws): it is called in catch blocks, where a throw escapes.
 */
export const messageOf = (error: unknown): string => {
  try {
    return error instanceof Error ? error.message : typeof error === "object" && error !== null && "message" in error ? String(error.message) : String(error)
  } catch {
    return "(an error that cannot be shown as text)"
  }
}

/**
 * `log` for where a throw has no caller to go to, or would stop work that does not depend on the
 * line (a microtask applying independent services): a line the sink throws on goes to stderr,
 * with the sink's own error, instead of out of the caller.
 */
export const neverThrowing = (log: Log): Log => (event, fields) => {
  try {
    log(event, fields)
  } catch (error) {
    const logFailed = messageOf(error)
    // Fields JSON cannot write (a BigInt, a cycle: maybe why the sink threw) give a line without
    // them; stderr itself throwing leaves nothing to tell.
    try {
      stderrLog(event, { ...fields, logFailed })
    } catch {
      try {
        stderrLog(event, { logFailed, fieldsUnwritable: true })
      } catch {
        // Nowhere left to write.
      }
    }
  }
}

/**
 * A bound on a log line that repeats for one cause (a collector down, a caller looping on a denied
 * path, a bug a peer can reach): at most `maxLines` per `windowMs`; the rest are counted, and the
 * first line that goes out after them carries their number (`suppressedBefore`). Windows are timed
 * on `now`, monotonicMs() unless a test gives its own: a wall clock step moves none. `reserved` of
 * a window's lines are kept for first occurrences (`admit(true)`, as a cause newly seen): one cause
 * repeating fast does not hide the others' first lines, and the bound stays maxLines.
 */
export class LogThrottle {
  private readonly maxLines: number
  private readonly windowMs: number
  private readonly now: () => number
  private readonly reserved: number
  private windowStart = Number.NEGATIVE_INFINITY
  private linesInWindow = 0
  private suppressed = 0

  constructor(maxLines: number, windowMs: number, now: () => number = monotonicMs, reserved = 0) {
    this.maxLines = maxLines
    this.windowMs = windowMs
    this.now = now
    this.reserved = Math.min(reserved, maxLines)
  }

  /** The fields to add to a line that may go out now; undefined when it may not (it is counted). `first`: it may take a reserved line. */
  admit(first = false): { readonly suppressedBefore?: number } | undefined {
    const now = this.now()
    // A clock stepped back (an injected one can be) starts a window too: else the log stays shut until it catches up.
    if (now - this.windowStart >= this.windowMs || now < this.windowStart) {
      this.windowStart = now
      this.linesInWindow = 0
    }
    if (this.linesInWindow >= (first ? this.maxLines : this.maxLines - this.reserved)) {
      this.suppressed++
      return undefined
    }
    this.linesInWindow++
    const suppressed = this.suppressed
    this.suppressed = 0
    return suppressed > 0 ? { suppressedBefore: suppressed } : {}
  }

  /** When the window that held lines back ends, if some are held back whose count no line has carried yet. */
  heldBackUntil(): number | undefined {
    return this.suppressed > 0 ? this.windowStart + this.windowMs : undefined
  }

  /** The count held back, taken by a caller that writes it itself (its window ended with no line to carry it): no later line carries it. */
  takeSuppressed(): number {
    const suppressed = this.suppressed
    this.suppressed = 0
    return suppressed
  }
}

/** Of each event's lines a window, these are kept for a kind not seen yet in it (a new rule, a new path). */
const FirstOfKindLines = 5
/** Kinds remembered per event and window: past it the memory starts over (it only decides who may take the reserved lines). */
const MaxKindsRemembered = 256

/** What tells one fault from another in a peer's repeated line: the rule broken, else the path. */
const kindOfLine = (fields: Readonly<Record<string, unknown>>): string | undefined =>
  typeof fields.rule === "string" ? fields.rule : typeof fields.path === "string" ? fields.path.slice(0, 200) : undefined

/** How a throttledEvents tells time and waits: a window's end, its held-back count then written. */
export interface EventsClock {
  readonly now: () => number
  /** Calls `run` after `ms`, without holding the process open; the handle cancels it. */
  readonly after: (ms: number, run: () => void) => { readonly cancel: () => void }
}

const realClock: EventsClock = {
  now: monotonicMs,
  after: (ms, run) => {
    const timer = setTimeout(run, ms)
    timer.unref()
    return { cancel: () => clearTimeout(timer) }
  }
}

/** One bounded event's counts since the start: lines written, and occurrences whose line was held back. */
export interface EventCount {
  readonly event: string
  readonly written: number
  readonly suppressed: number
}

/** A log whose events a peer can repeat are bounded (throttledEvents), their counts, and its end. */
export interface ThrottledLog {
  readonly log: Log
  /** Every bounded event, seen or not (a counter exists from its first scrape), in the order given. */
  counts(): ReadonlyArray<EventCount>
  /** Writes the counts still held back and stops the timer: the owner is closing. */
  close(): void
}

/**
 * `log` with each of `events` bounded by a LogThrottle of its own (`maxLines` a `windowMs`), other
 * events passed on as they are: for the lines a peer can have written once per connection or per
 * request, as often as it likes (a stranger opening connections in a loop with a bad byte on each).
 * The last FirstOfKindLines of each window go only to a kind the window has not logged yet: one
 * peer repeating its fault must not hide the first line of another fault (a second handler's crash).
 * A count held back is written by the next line of its event, or, if none comes in the window, at
 * the window's end in a `log-lines-suppressed` line (`of` the event, suppressed; not `event`, which
 * a JSON sink such as stderrLog spreads over the line's own name): a burst then silence
 * loses nothing. One timer for all events, armed only while a count is held back, unref'd.
 */
export const throttledEvents = (log: Log, events: ReadonlyArray<string>, maxLines: number, windowMs: number, clock: EventsClock = realClock): ThrottledLog => {
  const { now } = clock
  const entries = events.map((event) => ({ event, throttle: new LogThrottle(maxLines, windowMs, now, FirstOfKindLines), kinds: new Set<string>(), since: now(), written: 0, suppressed: 0 }))
  const byEvent = new Map(entries.map((entry) => [entry.event, entry]))
  // The flush runs with no caller to throw to: a sink that throws there writes to stderr instead.
  const flushLog = neverThrowing(log)
  let timer: { readonly cancel: () => void; readonly at: number } | undefined
  const armFor = (at: number) => {
    if (timer !== undefined && timer.at <= at) return
    timer?.cancel()
    timer = { ...clock.after(Math.max(0, at - now()), flush), at }
  }
  /** Writes the counts of windows that ended with lines held back; waits again for those still open. */
  const flush = (ending = false) => {
    timer = undefined
    const at = now()
    let next = Number.POSITIVE_INFINITY
    for (const entry of entries) {
      const until = entry.throttle.heldBackUntil()
      if (until === undefined) continue
      if (ending || until <= at || at < until - windowMs) flushLog("log-lines-suppressed", { of: entry.event, suppressed: entry.throttle.takeSuppressed() })
      else next = Math.min(next, until)
    }
    if (next !== Number.POSITIVE_INFINITY) armFor(next)
  }
  const bounded: Log = (event, fields) => {
    const entry = byEvent.get(event)
    if (entry === undefined) return log(event, fields)
    const at = now()
    if (at - entry.since >= windowMs || at < entry.since || entry.kinds.size >= MaxKindsRemembered) {
      entry.kinds.clear()
      entry.since = at
    }
    const kind = kindOfLine(fields)
    // A line that names no kind (a timeout's) is never one peer's fault hiding another's: the whole window is its.
    const first = kind === undefined || !entry.kinds.has(kind)
    const admitted = entry.throttle.admit(first)
    if (admitted === undefined) {
      entry.suppressed++
      armFor(entry.throttle.heldBackUntil()!)
      return
    }
    entry.written++
    if (kind !== undefined) entry.kinds.add(kind)
    log(event, { ...fields, ...admitted })
  }
  return {
    log: bounded,
    counts: () => entries.map(({ event, written, suppressed }) => ({ event, written, suppressed })),
    close: () => {
      timer?.cancel()
      flush(true)
    }
  }
}
