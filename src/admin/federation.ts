// Admin federation: one admin server's view of the whole mesh (GET /federation on the control
// listener). The peers are the other sidecars' admin control listeners, found through the same
// discovery as endpoints (an endpoint that announces `adminPort`: mDNS TXT "admin", the local
// directory's announcement, an EndpointSlice port named "admin-control"); each is asked for its own golden
// metrics (/golden?scope=self), which the control listener serves without its token, and the views
// are merged with the local one. No token is ever sent: anyone on the LAN can announce an admin
// port of their own, and a token sent there would let them drive every sidecar sharing it. A peer
// that does not answer (or not in time, or too much, or with what is not a view: every field is
// checked before it is merged, and no more series or longer names than a sidecar keeps are taken)
// is kept and marked stale, with its last view, not hidden; one no discovery lists for `FORGET_MS`
// is forgotten.
//
// Bounded: peers are asked only when someone asks this admin (nothing runs while nobody looks),
// for the view and for each series at most once per `MIN_REFRESH_MS` (concurrent askers share one
// round, its answers reused that long: 50 open dashboards cost the peers what one does), at most
// MAX_SERIES_ROUNDS series at once, each call within federationTimeoutMs and federationMaxBytes,
// at most federationMaxPeers peers followed. A series request that finds every place taken waits
// for one at most federationTimeoutMs (each running round ends within it), then is answered busy:
// so a series is answered within twice federationTimeoutMs, however many requests queue (256
// connections of 4 requests each used to wait up to 64 rounds, 64 s at the default).
//
// A peer learned from another host (offHost: Kubernetes, DNS, another host's mDNS) is never fetched
// from at this host's own addresses (src/iip/dialGuard.ts, as the data plane's dials): a LAN host
// announcing `addr=evil.example` (-> 127.0.0.1) and an admin port would make this admin GET its
// own app or admin port and show the answer's parts. Refusals are counted in
// iip_mesh_dials_refused_total and logged (federation.dial-refused, throttled); the peer is listed
// with the refusal as its error. dialLocalEndpoints opts out, as it does for the data plane. From any
// source and whatever dialLocalEndpoints says, no peer admin is fetched from at this process's own
// listeners (src/iip/ownListeners.ts): announced under another node's name, it would be itself.
import { type Log, LogThrottle } from "../iip/log.ts"
import { monotonicMs } from "../mux/clock.ts"
import type { Sidecar } from "../sidecar/sidecar.ts"
import { type GoldenView, mergeViews } from "../telemetry/golden.ts"
import { AdminCallFailed, getAdminJson } from "./adminClient.ts"
import { isCount, viewOf } from "./goldenViewCheck.ts"
import { goldenSeries, type Point } from "./observability.ts"

const MIN_REFRESH_MS = 500
const FORGET_MS = 10 * 60_000

/** Lines logged for fetches refused at an address on this host, at most per window: a hostile host can announce many. */
const REFUSED_LINES = 10
const REFUSED_WINDOW_MS = 60_000

/** Points of a peer's series: 10 minutes in 10 s slots (telemetry/golden.ts). */
const PEER_MAX_POINTS = 60

/**
 * Distinct series (selectors) asked of the peers at once or held for reuse: each holds at most
 * PEER_MAX_POINTS points per peer. Past it a new selector waits for a running round to end (within
 * federationTimeoutMs): a client naming ever new services does not multiply the peers' calls.
 */
export const MAX_SERIES_ROUNDS = 16

export interface PeerStatus {
  /** "host:port" of its admin control listener. */
  readonly admin: string
  readonly node: string | null
  readonly services: ReadonlyArray<string>
  readonly stale: boolean
  /** When it last answered (epoch ms); null: never. */
  readonly lastSeenMs: number | null
  readonly error: string | null
}

export interface FederationView {
  readonly generatedAt: number
  readonly self: { readonly nodes: ReadonlyArray<string>; readonly services: ReadonlyArray<string> }
  readonly peers: ReadonlyArray<PeerStatus>
  /** Peers discovery listed beyond federationMaxPeers: not followed. */
  readonly untracked: number
  /** The local view and every peer's last view (stale ones included), merged. */
  readonly golden: GoldenView
}

/**
 * No place for a series round came within federationTimeoutMs: the admin answers 503
 * federation_busy with this message, and Retry-After the seconds within which a place comes (each
 * running round ends within federationTimeoutMs), at least 1 and at most 60.
 */
export interface SeriesBusy {
  readonly busy: string
  readonly retryAfterSeconds: number
}

/** One series asked of every fresh peer, shared by everyone asking for it while it runs and MIN_REFRESH_MS after. */
interface SeriesRound {
  /** The peers' answers that are series (the others left out); never rejects. */
  readonly points: Promise<ReadonlyArray<ReadonlyArray<Point>>>
  /** When it ended (monotonicMs()); undefined while it runs. */
  endedMs: number | undefined
}

interface Peer {
  readonly admin: string
  node: string | null
  services: Set<string>
  /** When discovery last listed it (monotonicMs()). */
  lastListedMs: number
  /** When it last answered: monotonicMs() for its staleness, epoch ms to show (lastSeenMs); null: never. */
  lastOkMs: number | null
  lastSeenMs: number | null
  error: string | null
  view: GoldenView | undefined
  /** Some endpoint discovery last listed at this admin address came from another host: fetched through the dial guard. */
  offHost: boolean
}

/** A series point a peer sends: [slot start, requests, errors, p99 or null], numbers all. */
const isPoint = (value: unknown): value is Point =>
  Array.isArray(value) && value.length === 4 && isCount(value[0]) && isCount(value[1]) && isCount(value[2]) && (value[3] === null || isCount(value[3]))

const adminAddress = (host: string, port: number) => (host.includes(":") ? `[${host}]:${port}` : `${host}:${port}`)

/** Every call to `peer`'s admin: bounded in time and size, without a token, through the dial guard when it is from another host, never at this process's own listeners (see the top of this file). */
const peerCallOptions = (sidecar: Sidecar, peer: Peer) => ({
  timeoutMs: sidecar.config.federationTimeoutMs,
  maxBytes: sidecar.config.federationMaxBytes,
  peersOnly: peer.offHost && !sidecar.config.dialLocalEndpoints,
  notSelf: sidecar.ownListeners.all
})

export class Federation {
  private readonly peers = new Map<string, Peer>()
  private untracked = 0
  /** When the last view round ended (monotonicMs(): a wall clock stepped back would stop the refreshes for the step). */
  private lastRoundMs = Number.NEGATIVE_INFINITY
  private round: Promise<void> | undefined = undefined
  /** By selector (sorted query), the oldest first. */
  private readonly seriesRounds = new Map<string, SeriesRound>()
  /**
   * The series requests waiting for a place, the oldest first: a round that ends wakes the oldest
   * alone (every waiter woken per round, each racing all the rounds again, cost as much as the
   * square of the waiters).
   */
  private readonly waiting = new Set<() => void>()
  private readonly refusedLines = new LogThrottle(REFUSED_LINES, REFUSED_WINDOW_MS)
  private readonly log: Log

  /** `log`: the admin server's, for refused fetches. */
  constructor(log: Log) {
    this.log = log
  }

  /** The mesh as `sidecar`'s admin sees it, `shown` being the sidecars this admin reports on itself. */
  async view(sidecar: Sidecar, shown: ReadonlyArray<Sidecar>): Promise<FederationView> {
    const config = sidecar.config
    const ownNodes = new Set(shown.map((s) => s.config.node))
    if (monotonicMs() - this.lastRoundMs >= MIN_REFRESH_MS) {
      this.round ??= this.refresh(sidecar, ownNodes).finally(() => {
        this.round = undefined
        this.lastRoundMs = monotonicMs()
      })
    }
    if (this.round !== undefined) await this.round
    const nowMs = monotonicMs()
    const peers = [...this.peers.values()].sort((a, b) => a.admin.localeCompare(b.admin)).map((peer): PeerStatus => ({
      admin: peer.admin,
      node: peer.node,
      services: [...peer.services].sort(),
      stale: peer.error !== null || peer.lastOkMs === null || nowMs - peer.lastOkMs > config.federationStaleMs,
      lastSeenMs: peer.lastSeenMs,
      error: peer.error
    }))
    const local = shown.map((s) => s.telemetry.metrics.golden.view())
    const remote = [...this.peers.values()].flatMap((peer) => (peer.view === undefined ? [] : [peer.view]))
    return {
      generatedAt: Date.now(),
      self: { nodes: [...ownNodes], services: [...new Set(shown.map((s) => s.config.service))] },
      peers,
      untracked: this.untracked,
      golden: mergeViews([...local, ...remote])
    }
  }

  /**
   * The series of a service or an edge over the whole mesh: this admin's sidecars' and every fresh
   * peer's (asked within the same bounds, shared: peerSeries), counts summed per 10 s slot, p99 the largest.
   * Undefined when there is none, or when `left` aborted (the asker went) while it waited for a place;
   * busy when no place came within federationTimeoutMs.
   */
  async series(sidecar: Sidecar, shown: ReadonlyArray<Sidecar>, query: URLSearchParams, left: AbortSignal): Promise<{ readonly points: ReadonlyArray<Point> } | SeriesBusy | undefined> {
    const local = goldenSeries(shown, query)
    const selector = new URLSearchParams([...query.entries()].filter(([key]) => ["service", "caller", "callee"].includes(key)))
    selector.set("scope", "self")
    selector.sort()
    const remote = await this.peerSeries(sidecar, selector, left)
    if (remote === undefined || "busy" in remote) return remote
    const found = [...(local === undefined ? [] : [local.points]), ...remote]
    if (found.length === 0) return undefined
    // Slots start on multiples of 10 s everywhere: summed by start time (hosts' clocks may differ a little).
    const byStart = new Map<number, [number, number, number, number | null]>()
    for (const points of found) {
      for (const [start, requests, errors, p99] of points) {
        const sum = byStart.get(start) ?? [start, 0, 0, null]
        sum[1] += requests
        sum[2] += errors
        if (p99 !== null) sum[3] = Math.max(sum[3] ?? 0, p99)
        byStart.set(start, sum)
      }
    }
    return { points: [...byStart.values()].sort((a, b) => a[0] - b[0]).slice(-60) }
  }

  /**
   * The fresh peers' series for `selector`: the round running or ended within MIN_REFRESH_MS for
   * it, else a new one once fewer than MAX_SERIES_ROUNDS are held. Undefined, asking nobody, once
   * `left` aborts while it waits for a place: a waiter whose client went used to stay and take the
   * next place, so a client sending requests and closing queued rounds without bound. Busy, asking
   * nobody, when no place came within federationTimeoutMs: older waiters took each one that did.
   * Waiters get places in the order they came, each woken once, by the round whose place it takes.
   */
  private async peerSeries(sidecar: Sidecar, selector: URLSearchParams, left: AbortSignal): Promise<ReadonlyArray<ReadonlyArray<Point>> | SeriesBusy | undefined> {
    const config = sidecar.config
    const key = selector.toString()
    let gone: Promise<void> | undefined
    let deadline: Promise<void> | undefined
    let timer: ReturnType<typeof setTimeout> | undefined
    let passed = false
    /** Handed a place by a round that ended; passed on to the next waiter unless taken. */
    let woken = false
    let placed = false
    try {
      for (;;) {
        if (left.aborted) return undefined
        const nowMs = monotonicMs()
        for (const [held, round] of this.seriesRounds) if (round.endedMs !== undefined && nowMs - round.endedMs >= MIN_REFRESH_MS) this.seriesRounds.delete(held)
        const shared = this.seriesRounds.get(key)
        if (shared !== undefined) return shared.points
        // A newcomer finds no place free while others wait: each ended round woke one of them.
        if (woken || this.waiting.size === 0) {
          if (this.seriesRounds.size < MAX_SERIES_ROUNDS) {
            placed = true
            break
          }
          const ended = [...this.seriesRounds].find(([, round]) => round.endedMs !== undefined)
          if (ended !== undefined) {
            this.seriesRounds.delete(ended[0])
            placed = true
            break
          }
        }
        // A place that came at the deadline is still taken (checked above): busy only without one.
        if (passed) {
          return {
            busy: `all ${MAX_SERIES_ROUNDS} places for series rounds were taken for ${config.federationTimeoutMs} ms (federationTimeoutMs): ask again`,
            retryAfterSeconds: Math.min(60, Math.max(1, Math.ceil(config.federationTimeoutMs / 1000)))
          }
        }
        // Every place is a round still running (each ends within federationTimeoutMs): wait for one.
        gone ??= new Promise((resolve) => left.addEventListener("abort", () => resolve(), { once: true }))
        deadline ??= new Promise((resolve) => {
          timer = setTimeout(() => {
            passed = true
            resolve()
          }, config.federationTimeoutMs)
        })
        woken = false
        let wake!: () => void
        const turn = new Promise<void>((resolve) => (wake = () => {
          woken = true
          resolve()
        }))
        this.waiting.add(wake)
        await Promise.race([gone, deadline, turn])
        this.waiting.delete(wake)
      }
    } finally {
      clearTimeout(timer)
      if (woken && !placed) this.wakeOldest()
    }
    const nowMs = monotonicMs()
    const fresh = [...this.peers.values()].filter((p) => p.error === null && p.lastOkMs !== null && nowMs - p.lastOkMs <= config.federationStaleMs)
    const points = Promise.allSettled(fresh.map((peer) => this.fetch(sidecar, peer, `/golden/series?${selector}`))).then((answers) => {
      // Set before anyone awaiting the round resumes: the waiter woken for its place finds it ended.
      round.endedMs = monotonicMs()
      this.wakeOldest()
      const found: Array<ReadonlyArray<Point>> = []
      for (const answer of answers) {
        // A peer's JSON may be null: reading its points threw, and the round rejected for every asker sharing it.
        if (answer.status !== "fulfilled" || typeof answer.value !== "object" || answer.value === null) continue
        const points = (answer.value as { points?: unknown }).points
        if (Array.isArray(points) && points.length <= PEER_MAX_POINTS && points.every(isPoint)) found.push(points)
      }
      return found
    })
    const round: SeriesRound = { points, endedMs: undefined }
    this.seriesRounds.set(key, round)
    return points
  }

  /** The place a round left goes to the oldest waiter, if any (it takes it before any newcomer: its wake is a microtask). */
  private wakeOldest(): void {
    for (const wake of this.waiting) {
      this.waiting.delete(wake)
      wake()
      return
    }
  }

  /** Peers from discovery (the sidecars of this admin left out), then one call to each. */
  private async refresh(sidecar: Sidecar, ownNodes: ReadonlySet<string>): Promise<void> {
    const config = sidecar.config
    const nowMs = monotonicMs()
    let untracked = 0
    for (const endpoints of Object.values(sidecar.discovery.snapshot().services)) {
      for (const endpoint of endpoints) {
        if (endpoint.adminPort === undefined || (endpoint.node !== undefined && ownNodes.has(endpoint.node))) continue
        const admin = adminAddress(endpoint.host, endpoint.adminPort)
        let peer = this.peers.get(admin)
        if (peer === undefined) {
          if (this.peers.size >= config.federationMaxPeers) {
            untracked++
            continue
          }
          peer = { admin, node: null, services: new Set(), lastListedMs: nowMs, lastOkMs: null, lastSeenMs: null, error: null, view: undefined, offHost: false }
          this.peers.set(admin, peer)
        }
        // Guarded if any endpoint at this address came from another host in this listing.
        peer.offHost = (peer.lastListedMs === nowMs && peer.offHost) || endpoint.offHost === true
        peer.lastListedMs = nowMs
        peer.node = endpoint.node ?? peer.node
        peer.services.add(endpoint.service)
      }
    }
    this.untracked = untracked
    for (const [admin, peer] of this.peers) if (nowMs - peer.lastListedMs > FORGET_MS) this.peers.delete(admin)
    await Promise.all([...this.peers.values()].map(async (peer) => {
      try {
        const view = viewOf(await this.fetch(sidecar, peer, "/golden?scope=self"))
        if (view === undefined) throw new Error("the answer is not a golden metrics view")
        peer.view = view
        peer.lastOkMs = monotonicMs()
        peer.lastSeenMs = Date.now()
        peer.error = null
      } catch (error) {
        peer.error = error instanceof Error ? error.message : String(error)
      }
    }))
  }

  /** GET `path` of `peer`'s admin (peerCallOptions); a fetch the dial guard refused is counted and logged, then fails as any other. */
  private async fetch(sidecar: Sidecar, peer: Peer, path: string): Promise<unknown> {
    try {
      return await getAdminJson(`http://${peer.admin}${path}`, peerCallOptions(sidecar, peer))
    } catch (error) {
      if (error instanceof AdminCallFailed && error.notPeer === true) {
        const service = [...peer.services].sort()[0] ?? ""
        sidecar.telemetry.metrics.dialRefused(service, peer.admin)
        const admitted = this.refusedLines.admit()
        if (admitted !== undefined) this.log("federation.dial-refused", { admin: peer.admin, service, reason: error.why ?? "not-peer", ...admitted })
      }
      throw error
    }
  }
}
