// A dialer's own limits on the calls its acceptor makes to it (PROTOCOL.md §10, calls in both
// directions), kept by the serving side of a dialer's MeshSession (meshServing.ts). A dialer
// states `maxRequests` and `maxBytes` in its hello as an acceptor does, but it cannot stop reading
// past them (it reads its own calls' answers there: two peers each waiting for the other to read
// would both stall), so it refuses instead: a call read while it holds `maxRequests` of the
// acceptor's calls, or whose body does not fit in `maxBytes` beside the bytes it holds, is
// answered `overloaded`, processed: false. A call is held from its read until its answer has left
// the writer, not merely been queued there (the acceptor counts it until it reads the answer, so
// it never counts less): an acceptor that reads none of its answers makes the dialer hold
// `maxRequests` of them at most, not the write queue's hard limit. One that goes on past the limit
// and reads nothing gets refusals; once twice the limit of answers waits unwritten, the connection
// is closed, logged.
import type { Connection } from "./connection.ts"

/** Connections closed so in this process: each line says how many so far, and goes out at the 1st, 2nd, 4th, 8th... */
let closedSoFar = 0

/** What a dialer stated in its hello; absent: no limit. */
export interface StatedLimitValues {
  readonly maxRequests?: number | undefined
  readonly maxBytes?: number | undefined
}

/** A call just read: taken, refused (`overloaded`, not processed), or the connection was closed. */
export type StatedVerdict = "take" | "refuse" | "closed"

export class StatedLimits {
  private readonly connection: Connection
  private readonly maxRequests: number
  private readonly maxBytes: number
  private readonly log: (event: string, fields: Record<string, unknown>) => void
  /** Whole answers to the peer's calls queued in the writer's batch numbered `batch` (PacketWriter.wholeWrites), not yet written. */
  private unwritten = 0
  private batch = -1

  constructor(connection: Connection, limits: StatedLimitValues, log: (event: string, fields: Record<string, unknown>) => void) {
    this.connection = connection
    this.maxRequests = limits.maxRequests ?? Infinity
    this.maxBytes = limits.maxBytes ?? Infinity
    this.log = log
  }

  /** The refusal's message, for the caller. */
  get refusalMessage(): string {
    return `the client holds all it stated it may of this connection's calls (maxRequests ${this.maxRequests}, maxBytes ${this.maxBytes}); retry later`
  }

  /**
   * A whole answer to one of the peer's calls was queued. Counted while it waits in the batch: one
   * written at once, or sent behind a stream's lane, is not (the count is never above the truth).
   */
  answered(): void {
    const writer = this.connection.writer
    if (writer.wholeWaiting === 0) return
    if (writer.wholeWrites !== this.batch) {
      this.batch = writer.wholeWrites
      this.unwritten = 0
    }
    this.unwritten++
  }

  /** Whole answers queued and not yet written. */
  private get waiting(): number {
    return this.connection.writer.wholeWrites === this.batch ? this.unwritten : 0
  }

  /** A call (not a push) whose first packet carries `bodyBytes` was just read. */
  verdict(bodyBytes: number): StatedVerdict {
    const budget = this.connection.budget
    const waiting = this.waiting
    const bytes = budget.bytesTaken
    // Before the call is charged: one alone always goes, as its sender sends it (§13).
    if (budget.own.requests + waiting < this.maxRequests && (bytes === 0 || bytes + bodyBytes <= this.maxBytes)) return "take"
    if (waiting < 2 * this.maxRequests) return "refuse"
    closedSoFar++
    // Powers of two: a peer dialed again and again cannot flood the log.
    if ((closedSoFar & (closedSoFar - 1)) === 0) {
      this.log("peer-not-reading", { remote: this.connection.remoteAddress, maxRequests: this.maxRequests, answersWaiting: waiting, closedSoFar })
    }
    this.connection.close(`the peer calls past the ${this.maxRequests} requests it may have outstanding and reads none of the answers (${waiting} of them wait to be written)`, false)
    return "closed"
  }
}
