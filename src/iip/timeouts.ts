// The timeouts of a server's connections (PROTOCOL.md §15): a new connection must complete its
// first packet (a mesh dialer's hello) in time, a packet once started must be completed in time
// (slowloris), a connection this side paused at its budget stays paused only while what it holds
// is being released (else its work is stuck, and a paused socket cannot see its peer leave), a
// connection whose peer takes nothing this side writes is closed at the write timeout (its queued
// bytes hold the server's write budget, budget.ts), and a connection with nothing in flight and no
// traffic for long is closed, so idle or stalled sockets cannot hold the connection slots. One
// sweep fiber per server (lazySweeper.ts: on Effect's Clock, so tests drive it with TestClock; on
// its monotonic time, so a wall clock step neither switches the timeouts off nor fires them at
// once) compares each connection's packet, release and write counters with what it saw last time:
// nothing per packet, nothing per request.
import type { Connection } from "../mux/connection.ts"
import { LazySweeper } from "./lazySweeper.ts"
import type { Log } from "./log.ts"
import type { Supervisor } from "./supervisor.ts"

export interface TimeoutOptions {
  /** From accept to the first whole packet; 0: no limit. */
  readonly firstPacketMs: number
  /**
   * From the start of a packet to its end, while this side is reading; also the longest a
   * connection stays paused while nothing it holds is released; 0: no limit.
   */
  readonly packetMs: number
  /** No request in flight and no packet received for this long; 0: never. */
  readonly idleMs: number
  /** The writer waits for the socket and the peer takes nothing for this long; 0: never. */
  readonly writeMs: number
}

/** Bytes the kernel must take of a write under way to count as the peer reading (the write timeout). */
const writeProgressBytes = 512 * 1024

export const defaultTimeouts: TimeoutOptions = { firstPacketMs: 10_000, packetMs: 30_000, idleMs: 300_000, writeMs: 60_000 }

interface Watch {
  /** When it was accepted; -1 when the sweeper had not started yet (its first sweep sets it). */
  openedAt: number
  /** The connection has nothing in flight. */
  isIdle: () => boolean
  packets: number
  /** The connection's budget releases when last seen. */
  releases: number
  /** When the packet or release count last moved. */
  progressAt: number
  /** When the packet now partly read was first seen partly read; -1 when none is. */
  partialAt: number
  /** The writer's count of writes its socket took (PacketWriter.writesTaken) when last seen. */
  writesTaken: number
  /** The socket's bytes its kernel had not taken (PacketWriter.socketUnsent) at the last progress, or at a new write. */
  socketUnsent: number
  /** When the writer was last seen not waiting for its peer, or its peer took some of what it was sent. */
  writeProgressAt: number
}

export class ConnectionTimeouts {
  private readonly watched = new Map<Connection, Watch>()
  private stopped = false
  private readonly options: TimeoutOptions
  private readonly sweeper: LazySweeper
  private readonly log: Log

  constructor(options: TimeoutOptions, supervisor: Supervisor, log: Log) {
    this.options = options
    // Every quarter of the shortest timeout, so each fires at most a quarter late.
    const { firstPacketMs, packetMs, idleMs, writeMs } = options
    const tickMs = Math.max(5, Math.floor(Math.min(...[firstPacketMs, packetMs, idleMs, writeMs].filter((ms) => ms > 0)) / 4))
    this.sweeper = new LazySweeper(supervisor, tickMs, (now) => this.sweep(now))
    this.log = log
  }

  /** Watches `connection` from now on; called again (after a mesh upgrade) it replaces `isIdle`. */
  watch(connection: Connection, isIdle: () => boolean): void {
    const known = this.watched.get(connection)
    if (known !== undefined) {
      known.isIdle = isIdle
      return
    }
    const { firstPacketMs, packetMs, idleMs, writeMs } = this.options
    if (this.stopped || (firstPacketMs <= 0 && packetMs <= 0 && idleMs <= 0 && writeMs <= 0)) return
    const now = this.sweeper.now
    this.watched.set(connection, { openedAt: now, isIdle, packets: 0, releases: 0, progressAt: now, partialAt: -1, writesTaken: 0, socketUnsent: -1, writeProgressAt: now })
    this.sweeper.wake()
  }

  stop(): void {
    this.stopped = true
    this.watched.clear()
  }

  /** Closes the connections whose timeouts passed; says whether any is still watched. */
  private sweep(now: number): boolean {
    if (this.stopped) return false
    const { firstPacketMs, packetMs, idleMs, writeMs } = this.options
    for (const [connection, watch] of this.watched) {
      if (connection.closed) {
        this.watched.delete(connection)
        continue
      }
      if (watch.openedAt < 0) {
        watch.openedAt = now
        watch.progressAt = now
        watch.writeProgressAt = now
      }
      // A peer that takes none of what this side sends holds its bytes (the server's write budget)
      // and, while that is spent twice over, every connection's reading: whatever else it does, it is closed.
      // Taking some is progress: a write done, or the kernel taking 512 KiB of one under way (one
      // write can hold a whole read's answers, which a slow honest reader takes for minutes; less
      // is what buffers take after a peer stopped reading, as answerIdleTimeoutMs counts it).
      const writer = connection.writer
      const unsent = writer.socketUnsent
      if (!writer.waitingForPeer || writer.writesTaken !== watch.writesTaken || watch.socketUnsent - unsent >= writeProgressBytes) {
        watch.writesTaken = writer.writesTaken
        watch.socketUnsent = unsent
        watch.writeProgressAt = now
      } else if (unsent > watch.socketUnsent) {
        watch.socketUnsent = unsent
      } else if (writeMs > 0 && now - watch.writeProgressAt >= writeMs) {
        this.expire(connection, "write-timeout", `the peer took nothing written for ${writeMs} ms`, false)
        continue
      }
      const packets = connection.packetsReceived
      const releases = connection.budget.releases
      if (packets !== watch.packets || releases !== watch.releases) {
        watch.packets = packets
        watch.releases = releases
        watch.progressAt = now
        watch.partialAt = connection.midPacket && !connection.readingPaused ? now : -1
        continue
      }
      if (connection.readingPaused) {
        // This side stopped reading: the clock of a packet in progress stops too. Paused for its
        // answers to drain, the peer's reading pace decides (a slow reader of large answers is
        // not stuck; a peer that reads nothing meets the write timeout above). Paused at its budget while
        // nothing it holds is released for a packet timeout, its work is stuck, and a paused
        // socket cannot even see its peer leave: it is closed.
        watch.partialAt = -1
        if (!connection.budget.pausedForBudget) watch.progressAt = now
        else if (packetMs > 0 && now - watch.progressAt >= packetMs) {
          this.expire(connection, "stalled", `reading paused for ${packetMs} ms while nothing it holds was released`, false)
        }
        continue
      }
      if (packets === 0 && firstPacketMs > 0 && now - watch.openedAt >= firstPacketMs) {
        this.expire(connection, "no-first-packet", `no complete first packet within ${firstPacketMs} ms`, false)
      } else if (connection.midPacket) {
        if (watch.partialAt < 0) watch.partialAt = now
        else if (packetMs > 0 && now - watch.partialAt >= packetMs) {
          this.expire(connection, "packet-timeout", `a packet was started and not completed within ${packetMs} ms`, false)
        }
      } else if (idleMs > 0 && now - watch.progressAt >= idleMs && watch.isIdle()) {
        this.expire(connection, "idle-timeout", `idle for ${idleMs} ms`, true)
      }
    }
    return this.watched.size > 0
  }

  private expire(connection: Connection, event: string, reason: string, graceful: boolean): void {
    this.watched.delete(connection)
    this.log(event, { remote: connection.remoteAddress, reason })
    connection.close(reason, graceful)
  }
}
