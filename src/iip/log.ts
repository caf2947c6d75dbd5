// The structured log events the library emits on its own (protocol violations, handler crashes,
// refused connections): one JSON line each on stderr unless the caller passes its own sink;
// neverThrowing, a sink that cannot throw into its caller; and LogThrottle, the bound on a line
// that may repeat without end.
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
}

/** Of each event's lines a window, these are kept for a kind not seen yet in it (a new rule, a new path). */
const FirstOfKindLines = 5
/** Kinds remembered per event and window: past it the memory starts over (it only decides who may take the reserved lines). */
const MaxKindsRemembered = 256

/** What tells one fault from another in a peer's repeated line: the rule broken, else the path. */
const kindOfLine = (fields: Readonly<Record<string, unknown>>): string | undefined =>
  typeof fields.rule === "string" ? fields.rule : typeof fields.path === "string" ? fields.path.slice(0, 200) : undefined

/**
 * `log` with each of `events` bounded by a LogThrottle of its own (`maxLines` a `windowMs`), other
 * events passed on as they are: for the lines a peer can have written once per connection or per
 * request, as often as it likes (a stranger opening connections in a loop with a bad byte on each).
 * The last FirstOfKindLines of each window go only to a kind the window has not logged yet: one
 * peer repeating its fault must not hide the first line of another fault (a second handler's crash).
 */
export const throttledEvents = (log: Log, events: ReadonlyArray<string>, maxLines: number, windowMs: number, now: () => number = monotonicMs): Log => {
  const throttles = new Map(events.map((event) => [event, { throttle: new LogThrottle(maxLines, windowMs, now, FirstOfKindLines), kinds: new Set<string>(), since: now() }]))
  return (event, fields) => {
    const entry = throttles.get(event)
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
    if (admitted === undefined) return
    if (kind !== undefined) entry.kinds.add(kind)
    log(event, { ...fields, ...admitted })
  }
}
