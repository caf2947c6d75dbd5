// Budgets of inbound work (PROTOCOL.md §8, §15): how many requests, bytes and channels a peer may
// make this process hold before it has answered them. Each connection has its own budget, and all
// connections of a server share one. A connection over its own budget stops reading from its
// socket until its handlers catch up (TCP pushes back on that peer alone); when the shared budget
// is spent, new work from any connection is refused at once (typed `overloaded`), so one greedy
// peer can neither exhaust memory nor make everybody else's requests hang. All connections of one
// source (the peer's address, SourceBudgets) hold at most half of the shared requests and bytes:
// past that, that source's new work is refused `overloaded` while other sources' is still taken,
// so one peer opening many connections cannot take every place (as maxTunnelsPerPeer for tunnels). What a server's
// connections queue to send, answers their peers do not read, has a budget of all of them too
// (WriteBudget): past it the connections holding more than their share stop reading. Plain counters: the sessions charge and release on every request, the writers on
// every packet, so nothing here allocates.

export interface BudgetLimits {
  /** Requests read and not yet answered. */
  readonly maxRequests: number
  /** Bytes read and not yet consumed: queued bodies, unfinished messages, unread stream chunks. */
  readonly maxBytes: number
  /** Channels the peers opened. */
  readonly maxChannels: number
}

/** Defaults of the budgets (README, PROTOCOL.md §15): a server's, and the per-connection ones a dialer states for the calls its acceptor makes to it (§10). */
export const defaultBudgets = {
  maxQueuedRequestsPerConnection: 1024,
  maxQueuedBytesPerConnection: 64 * 1024 * 1024,
  maxQueuedRequests: 16_384,
  maxQueuedBytes: 512 * 1024 * 1024,
  maxQueuedWriteBytes: 512 * 1024 * 1024,
  maxChannels: 65_536
} as const

export const unlimitedBudget: BudgetLimits = { maxRequests: Infinity, maxBytes: Infinity, maxChannels: Infinity }

/** One pool of requests, bytes and channels: one connection's, or a whole server's. */
export class Budget {
  requests = 0
  bytes = 0
  channels = 0
  /**
   * Unread bytes of tunnels (long-lived requests' bodies, InboundBudget.chargeTunnel): a pool of
   * their own, as large as `maxBytes` (one connection's tunnels take at most its own `maxBytes` of
   * the server's), so tunnels whose far end stops reading never spend the budget of ordinary
   * requests. A tunnel whose bytes do not fit is ended (streams.ts), never counted in `bytes`.
   */
  tunnelBytes = 0
  /** Of `bytes`, what answers being gathered whole for plain peers hold (InboundBudget.chargeGathered). */
  gathered = 0
  readonly limits: BudgetLimits

  constructor(limits: BudgetLimits) {
    this.limits = limits
  }

  /** Over its request or byte limit: no more work should be taken in. */
  get full(): boolean {
    return this.requests > this.limits.maxRequests || this.bytes > this.limits.maxBytes
  }

  get channelsFull(): boolean {
    return this.channels >= this.limits.maxChannels
  }
}

/**
 * A source's part of a server's shared budget: the requests and bytes of all connections from one
 * peer address (IPv6: its prefix). Made when its first connection is accepted, dropped when its
 * last closes (SourceBudgets); its channels are not counted (maxChannelsPerConnection bounds them).
 */
export class SourceBudget {
  readonly budget: Budget
  /** Connections holding it: it leaves its SourceBudgets at 0. */
  connections = 0
  readonly key: string
  private readonly owner: Map<string, SourceBudget>

  constructor(key: string, limits: BudgetLimits, owner: Map<string, SourceBudget>) {
    this.key = key
    this.budget = new Budget(limits)
    this.owner = owner
  }

  /** One of its connections is gone (InboundBudget.releaseAll, once each). */
  leave(): void {
    if (--this.connections === 0) this.owner.delete(this.key)
  }
}

/**
 * The server's sources and their parts of its shared budget: each source may hold half of the
 * shared requests and bytes. Half, as maxTunnelsPerPeer: one peer, however many connections it
 * opens, leaves the other half to every other peer; a single peer alone still has half the budget,
 * more than one connection's own (64 of 512 MiB by default, 32 of 128 MiB in a sidecar).
 */
export class SourceBudgets {
  private readonly bySource = new Map<string, SourceBudget>()
  private readonly limits: BudgetLimits

  constructor(shared: BudgetLimits) {
    // Rounded up: a server allowed one request still takes it from any source.
    this.limits = { maxRequests: Math.ceil(shared.maxRequests / 2), maxBytes: Math.ceil(shared.maxBytes / 2), maxChannels: Infinity }
  }

  /** Sources holding a connection now. */
  get size(): number {
    return this.bySource.size
  }

  /** The budget of `source`, or undefined when it holds no connection. */
  of(source: string): Budget | undefined {
    return this.bySource.get(source)?.budget
  }

  /** A connection from `source` is accepted: its source's part, made for its first one. */
  join(source: string): SourceBudget {
    let part = this.bySource.get(source)
    if (part === undefined) {
      part = new SourceBudget(source, this.limits, this.bySource)
      this.bySource.set(source, part)
    }
    part.connections++
    return part
  }
}

/**
 * A connection's accounting: its own budget, its source's (SourceBudget) and the shared one.
 * Charging past its own budget pauses the connection's reading; releasing back under half resumes it.
 */
export class InboundBudget {
  readonly own: Budget
  readonly shared: Budget
  /** What all connections of its peer's source hold (a budget of its own for a client's connection: unlimited). */
  readonly source: Budget
  private readonly sourcePart: SourceBudget | undefined
  private paused = false
  /** Releases so far: a paused connection whose count stands still holds work that is stuck. */
  releases = 0
  /** Set by releaseAll: the connection is gone and late releases must not touch the shared budget. */
  private closed = false
  /** Of `own.bytes`, what `hold` counts: only more reading gives it back, so it never pauses reading. */
  private held = 0
  /** This connection's part of the shared tunnels' pool (Budget.tunnelBytes). */
  private tunnelBytes = 0
  /** Pushes running and the bytes of their bodies, counted apart from the requests (chargePush). */
  private pushes = 0
  private pushBytes = 0
  private readonly pause: () => void
  private readonly resume: () => void

  constructor(own: BudgetLimits, shared: Budget, pause: () => void, resume: () => void, source?: SourceBudget) {
    this.own = new Budget(own)
    this.shared = shared
    this.sourcePart = source
    this.source = source === undefined ? new Budget(unlimitedBudget) : source.budget
    this.pause = pause
    this.resume = resume
  }

  /** The server as a whole, or this connection's source, holds all it may: refuse new work instead of queueing it. */
  get sharedFull(): boolean {
    return this.shared.full || this.source.full
  }

  /**
   * sharedFull, this connection's `hold` set aside: judged at a packet's header, what the
   * connection holds so are the packets read before it in the same read (handed on and charged
   * already, counted twice until the read ends) or parts of its own, so a packet would be refused
   * for itself (as `overOwn` sets them aside).
   */
  get sharedFullBesidesHeld(): boolean {
    const held = this.held
    return this.shared.requests > this.shared.limits.maxRequests || this.shared.bytes - held > this.shared.limits.maxBytes ||
      this.source.requests > this.source.limits.maxRequests || this.source.bytes - held > this.source.limits.maxBytes
  }

  /** Bytes this connection holds from its peer, apart from what only more reading gives back (`hold`). */
  get bytesTaken(): number {
    return this.own.bytes - this.held
  }

  /** Reading is paused because this connection holds all it may. */
  get pausedForBudget(): boolean {
    return this.paused
  }

  charge(requests: number, bytes: number): void {
    if (this.closed) return
    this.own.requests += requests
    this.own.bytes += bytes
    this.shared.requests += requests
    this.shared.bytes += bytes
    this.source.requests += requests
    this.source.bytes += bytes
    if (!this.paused && this.overOwn) {
      this.paused = true
      this.pause()
    }
  }

  release(requests: number, bytes: number): void {
    if (this.closed) return
    this.releases++
    this.own.requests -= requests
    this.own.bytes -= bytes
    this.shared.requests -= requests
    this.shared.bytes -= bytes
    this.source.requests -= requests
    this.source.bytes -= bytes
    this.resumeIfRelieved()
  }

  /**
   * Over its own request or byte limit, what `hold` counts aside: a packet whole and charged
   * would otherwise count twice while its read ends, and a peer that keeps within the credit this
   * side grants (§13 `conncredit`) would have it pause.
   */
  private get overOwn(): boolean {
    return this.own.requests > this.own.limits.maxRequests || this.own.bytes - this.held > this.own.limits.maxBytes
  }

  /** Back under half of both limits (hysteresis, so it does not flap): a paused reader goes on. */
  private resumeIfRelieved(): void {
    if (this.paused && this.own.requests <= this.own.limits.maxRequests / 2 && this.own.bytes - this.held <= this.own.limits.maxBytes / 2) {
      this.paused = false
      this.resume()
    }
  }

  /**
   * Counts bytes the connection holds that pausing would not give back (the packet being read,
   * parts of an unfinished message: only more reading finishes them), so without pausing.
   */
  hold(bytes: number): void {
    if (this.closed) return
    this.held += bytes
    this.own.bytes += bytes
    this.shared.bytes += bytes
    this.source.bytes += bytes
  }

  /** Gives back what `hold` counted. */
  unhold(bytes: number): void {
    if (this.closed) return
    this.held -= bytes
    this.release(0, bytes)
  }

  /**
   * Counts `bytes` a tunnel holds unread in the server's tunnels' pool, which neither pauses this
   * connection nor refuses anyone's requests; false (nothing taken) when the pool, or this
   * connection's share of it, has no room (tunnelRoomFor): the tunnel is then ended, its bytes
   * never counted elsewhere. True, counting nothing, once the connection is gone.
   */
  chargeTunnel(bytes: number, window: number): boolean {
    if (this.closed) return true
    if (!this.tunnelRoomFor(bytes, window)) return false
    this.shared.tunnelBytes += bytes
    this.tunnelBytes += bytes
    return true
  }

  /**
   * The server's tunnels' pool has room for `bytes` more of a stream with this `window`. The pool
   * is as large as `maxBytes`, and never smaller than the window (maxBytes may be set below one):
   * else it would end every tunnel whose app falls a window behind, and admit none but the first.
   * One connection's tunnels take at most its own `maxBytes` of it (at least a window), so one
   * peer stalling many tunnels cannot fill the pool and get every other peer's tunnel ended as
   * soon as it falls behind: its own are ended first.
   */
  tunnelRoomFor(bytes: number, window: number): boolean {
    return this.tunnelBytes + bytes <= Math.max(this.own.limits.maxBytes, window) && this.shared.tunnelBytes + bytes <= Math.max(this.shared.limits.maxBytes, window)
  }

  releaseTunnel(bytes: number): void {
    if (this.closed) return
    this.shared.tunnelBytes -= bytes
    this.tunnelBytes -= bytes
  }

  /**
   * Takes in a push (a one-way request) with `bytes` of body. Its sender cannot see a push end, so
   * it cannot keep them within the budget this side states (PROTOCOL.md §10), and the connection
   * never pauses for one (a cancel read after it would wait unread). Pushes have an allowance of
   * their own, as large as the connection's budget, and count in the shared one; false (nothing
   * taken) past it: the push is dropped, as one is when the server is full. A push alone is always
   * taken, whatever its size (else one larger than the budget would never run, as a request alone always goes).
   */
  chargePush(bytes: number): boolean {
    if (this.closed) return false
    if (this.pushes >= this.own.limits.maxRequests || (this.pushes > 0 && this.pushBytes + bytes > this.own.limits.maxBytes)) return false
    this.pushes++
    this.pushBytes += bytes
    this.shared.requests++
    this.shared.bytes += bytes
    this.source.requests++
    this.source.bytes += bytes
    return true
  }

  /** A push taken by chargePush has run. */
  releasePush(bytes: number): void {
    if (this.closed) return
    this.pushes--
    this.pushBytes -= bytes
    this.shared.requests--
    this.shared.bytes -= bytes
    this.source.requests--
    this.source.bytes -= bytes
  }

  /**
   * Takes `bytes` more of an answer gathered whole for a plain peer (serverSession.ts) that holds
   * `mine` already, if they fit in both budgets' bytes; false (nothing taken) when they do not, or
   * once the connection is gone (the answer would go nowhere). A gather alone in a budget (the
   * connection's only one, the server's only one) is not held to that budget, as a request alone
   * is always read: one larger than it would otherwise be refused "retry later" every time it is
   * asked (the packet limit bounds it). Given back with releaseGathered once the answer is whole
   * or refused. It never pauses reading: the answers are this side's, reading less would not
   * shrink them.
   */
  chargeGathered(bytes: number, mine: number): boolean {
    if (this.closed) return false
    if (this.own.gathered !== mine && this.own.bytes - this.held + bytes > this.own.limits.maxBytes) return false
    if (this.shared.gathered !== mine && this.shared.bytes + bytes > this.shared.limits.maxBytes) return false
    if (this.source.gathered !== mine && this.source.bytes + bytes > this.source.limits.maxBytes) return false
    this.own.gathered += bytes
    this.shared.gathered += bytes
    this.source.gathered += bytes
    this.own.bytes += bytes
    this.shared.bytes += bytes
    this.source.bytes += bytes
    return true
  }

  /** Gives back what chargeGathered took. */
  releaseGathered(bytes: number): void {
    if (this.closed) return
    this.own.gathered -= bytes
    this.shared.gathered -= bytes
    this.source.gathered -= bytes
    this.release(0, bytes)
  }

  /** Takes one channel from both budgets; false (nothing taken) when either is spent. */
  openChannel(): boolean {
    if (this.closed) return false
    if (this.own.channelsFull || this.shared.channelsFull) return false
    this.own.channels++
    this.shared.channels++
    return true
  }

  /** Gives back a channel the peer closed. */
  closeChannel(): void {
    if (this.closed) return
    this.own.channels--
    this.shared.channels--
  }

  /** The connection is gone: everything it held goes back to the shared budget and its source's, which it leaves. */
  releaseAll(): void {
    if (this.closed) return
    this.closed = true
    this.source.requests -= this.own.requests + this.pushes
    this.source.bytes -= this.own.bytes + this.pushBytes
    this.source.gathered -= this.own.gathered
    this.sourcePart?.leave()
    this.shared.requests -= this.own.requests
    this.shared.bytes -= this.own.bytes
    this.shared.channels -= this.own.channels
    this.shared.tunnelBytes -= this.tunnelBytes
    this.shared.requests -= this.pushes
    this.shared.bytes -= this.pushBytes
    this.tunnelBytes = 0
    this.pushes = 0
    this.pushBytes = 0
    this.shared.gathered -= this.own.gathered
    this.own.gathered = 0
    this.own.requests = 0
    this.own.bytes = 0
    this.own.channels = 0
    this.held = 0
  }
}

/** A server connection, as a WriteBudget sees it: what its writer holds of the budget, and its reading. */
export interface WriteBudgetMember {
  /** Bytes of the budget its writer holds now. */
  readonly writeCharged: number
  pauseReading(): void
  resumeReading(): void
}

/**
 * Bytes of answers (and everything else a server sends) queued in its connections' writers and
 * sockets, all connections together. A connection's writer charges what it queues and gives back
 * what its socket took (writer.ts). Past `maxBytes` a connection holding more than its share of it
 * (`maxBytes` / connections) stops reading new requests until it holds under half its share or the
 * sum is back under half the bound; the others, whose peers take what they are sent, go on being
 * read, so a few peers that read slowly or not at all cannot stop everybody else's (nor make mesh
 * peers' pings go unanswered). Past twice the bound no connection reads until the sum is back under
 * 1.5 times it: so peers that send requests and never read their answers cannot make the process
 * hold more than twice the bound, plus what the read under way when it was crossed still answers.
 * Those peers are closed at their write timeout (timeouts.ts), which gives their bytes back. Under
 * the bound its cost is a counter add and two compares per packet; past it a set look-up.
 */
export class WriteBudget {
  bytes = 0
  readonly maxBytes: number
  /** Past `maxBytes`: members over their share are paused (in `overShare`); until under half of it. */
  exceeded = false
  /** Past twice `maxBytes`: every member is paused; until under 1.5 times it. */
  private full = false
  private readonly members = new Set<WriteBudgetMember>()
  private readonly overShare = new Set<WriteBudgetMember>()

  constructor(maxBytes: number) {
    this.maxBytes = maxBytes
  }

  /** A server connection: paused with the others while the budget is spent twice over (at once if it is). */
  join(member: WriteBudgetMember): void {
    this.members.add(member)
    if (this.full) member.pauseReading()
  }

  /** The connection is gone (its reading with it); its writer gives its bytes back when it closes. */
  leave(member: WriteBudgetMember): void {
    this.members.delete(member)
    this.overShare.delete(member)
  }

  /**
   * Called when `bytes` grew past the bound, or changed while it is exceeded; `member`: the
   * connection whose writer changed it. Pauses and resumes as the class says.
   */
  check(member?: WriteBudgetMember): void {
    const max = this.maxBytes
    if (!this.exceeded) {
      if (this.bytes <= max) return
      this.exceeded = true
      const share = max / this.members.size
      for (const each of this.members) if (each.writeCharged > share) this.pauseOverShare(each)
    } else if (this.bytes <= max / 2) {
      this.exceeded = false
      for (const each of this.overShare) each.resumeReading()
      this.overShare.clear()
      if (this.full) {
        this.full = false
        for (const each of this.members) each.resumeReading()
      }
      return
    } else if (member !== undefined && this.members.has(member)) {
      const share = max / this.members.size
      if (!this.overShare.has(member)) {
        if (member.writeCharged > share) this.pauseOverShare(member)
      } else if (member.writeCharged <= share / 2) {
        this.overShare.delete(member)
        member.resumeReading()
      }
    }
    if (!this.full) {
      if (this.bytes > 2 * max) {
        this.full = true
        for (const each of this.members) each.pauseReading()
      }
    } else if (this.bytes <= 1.5 * max) {
      this.full = false
      for (const each of this.members) each.resumeReading()
    }
  }

  private pauseOverShare(member: WriteBudgetMember): void {
    this.overShare.add(member)
    member.pauseReading()
  }
}

/** The write budget of connections no server bounds (a client's): counted, never exceeded. */
export const unlimitedWriteBudget = new WriteBudget(Infinity)
