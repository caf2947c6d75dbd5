// Tunnels that hold bytes and make no progress (PROTOCOL.md §17.4), on both sidecars: an upgraded
// connection's stream whose unread bytes (in B's tunnels' pool, or A's count of what its callers
// have not read) are not taken by its reader (the socket it is written to takes nothing) for the
// upgrade stall timeout is ended, its bytes released, instead of held until the idle timeout: a
// caller gone while its socket was paused (its FIN waits unread behind data) or a far app that stops
// reading must not hold a share of the pool for minutes. A tunnel that holds nothing, idle or not,
// is never ended here, however long it stays so.
//
// One deadline heap (mux/deadlines.ts) for all of a side's tunnels, no timer per chunk: each
// tunnel is looked at once per timeout, and ended when the same chunk is its oldest unread at two
// looks in a row (chunks leave in order: its reader took none between them, and that chunk waited
// the whole timeout), so a stalled tunnel is ended between one and two timeouts after its reader
// stopped; nothing is done per chunk. Each one ended is said (`tunnel-stalled`, throttled: a
// hostile caller can have tunnels stall as fast as it opens them); the side counts it in its metrics.
import { type Log, LogThrottle } from "../iip/log.ts"
import { Deadlines, type Expiring } from "../mux/deadlines.ts"
import type { IncomingStream } from "../mux/streams.ts"

/** Lines at most, per window, of one kind a side says when it ends a tunnel (stalled, or overloaded at B). */
const TUNNEL_LINES = 20
const TUNNEL_LINES_WINDOW_MS = 60_000

/** The throttle of one kind of a side's tunnel-ending lines. */
export const tunnelLines = (): LogThrottle => new LogThrottle(TUNNEL_LINES, TUNNEL_LINES_WINDOW_MS)

class Watch implements Expiring {
  deadlineSlot = -1
  deadlineAt = 0
  readonly stream: IncomingStream
  /** What the `tunnel-stalled` line says of it (the app or service, the path). */
  readonly fields: Readonly<Record<string, unknown>>
  readonly onStall: () => void
  /** Its oldest unread chunk at the last look (undefined: it held none). */
  oldest: Buffer | undefined

  constructor(stream: IncomingStream, fields: Readonly<Record<string, unknown>>, onStall: () => void) {
    this.stream = stream
    this.fields = fields
    this.onStall = onStall
    this.oldest = stream.oldestUnread
  }
}

export class TunnelStalls {
  /** A tunnel holding bytes none of which its reader takes for this long is ended. */
  readonly stallMs: number
  private readonly deadlines = new Deadlines<Watch>((watch) => this.look(watch))
  private readonly log: Log
  private readonly lines = tunnelLines()

  constructor(stallMs: number, log: Log) {
    this.stallMs = stallMs
    this.log = log
  }

  /** Tunnels watched now. */
  get watched(): number {
    return this.deadlines.size
  }

  /**
   * Watches `stream` until the returned function is called; if it stalls first, `tunnel-stalled`
   * is said (with `fields`) and `onStall` runs, once, to end the tunnel (the watch ends with it).
   */
  watch(stream: IncomingStream, fields: Readonly<Record<string, unknown>>, onStall: () => void): () => void {
    const watch = new Watch(stream, fields, onStall)
    this.deadlines.add(watch, this.stallMs)
    return () => {
      this.deadlines.remove(watch)
      // The heap's timer stays armed for its old time after a removal: with no tunnel left it would hold a stopping process that long.
      if (this.deadlines.size === 0) this.deadlines.clear()
    }
  }

  private look(watch: Watch): void {
    const oldest = watch.stream.oldestUnread
    if (oldest !== undefined && oldest === watch.oldest) return this.stalled(watch)
    watch.oldest = oldest
    this.deadlines.add(watch, this.stallMs)
  }

  private stalled(watch: Watch): void {
    const admitted = this.lines.admit()
    if (admitted !== undefined) this.log("tunnel-stalled", { ...watch.fields, held: watch.stream.unreadBytes, message: `an upgraded connection held bytes its reader took none of for ${this.stallMs} ms at least: ended, its bytes released; find why its far end stopped reading (raise --upgrade-stall-timeout if it may pause that long)`, ...admitted })
    watch.onStall()
  }
}
