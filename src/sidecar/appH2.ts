// The inbound side's leg to an app that speaks cleartext HTTP/2 (`--app-protocol h2c`, gRPC apps):
// one pooled session per app, made again when it closes or goes away, closed when idle; each mesh
// request is one stream on it (appH2Exchange.ts), its head built by appH2RequestHead.ts. The leg
// keeps what its exchanges share: one timer for their deadlines, the holds of answers waiting to
// go back whole, the gRPC methods seen to stream, and the places among the streams open to the app:
// at most `maxStreams` (`--app-h2-max-streams`) on all its sessions, and on the current one no more
// than the app's SETTINGS_MAX_CONCURRENT_STREAMS (until a new session's SETTINGS come in, it carries one
// stream: an app announcing fewer than B's may refuse the rest, RFC 9113 §5.1.2); a session the app
// sent GOAWAY keeps its streams, and those waiting go to a new one at once; as many again
// wait for a place, in order, within their deadlines; past that a request is refused `overloaded`,
// not processed (a gRPC caller reads UNAVAILABLE), and counted. A session (appH2Session.ts: the
// sidecar's own HTTP/2, src/h2, over a socket dialed to the app) queues little past the app's limit.
// Long-lived streams hold a place for as long as they live (a watch, a subscription; or a peer's on
// purpose): gRPC calls of a method seen to stream (an answer's second message) or from their
// request's second message (not a unary call's large message, which streams too: counted, a burst
// of uploads was refused), other requests whose body streams, event streams. They
// take half the places at most (at least one), waiting or open, as event streams take half the
// HTTP/1.1 pool (appPool.ts); past that one is refused at once, `overloaded`, not processed, and
// counted, and the other calls keep the rest. Without it four server streams that never end took
// all four places and every unary call waited out its deadline (h2c-stream-share.test.ts). A
// method's calls before B sees one of its answers carry a second message are not known to stream:
// each is an ordinary call, and joins the share as that message comes, or is cut then past it
// (appH2ExchangeCore.ts knownStreaming): kept, first calls of new streaming methods took every place.
// Every call B cuts, or its caller cancels, or its deadline ends, is a reset B sends the app, and
// nghttp2 (node's HTTP/2 server, grpc-js's) bounds a client's resets: past them the app sends GOAWAY
// INTERNAL_ERROR, which ends the session, every call on it, other callers' too (one
// caller's 1,200 cancels ended another's call: h2c-reset-budget.test.ts). B keeps each session's
// count as nghttp2 does, and opens no stream on a session whose budget could not reset every stream
// open there: the next goes on a fresh session, the old one drains (its streams finish there, each
// still able to be reset). A few drain at once; past that new calls are refused `overloaded`.
// Each calling peer has a share of the places, as of the HTTP/1.1 pool's sockets (peerShare.ts):
// a freed place goes first to a waiting call of a peer under its share, and while one waits, a
// stream held past its peer's share by an answer stalled on its reader is taken back (reset
// CANCEL, `overloaded` to its caller, processed: never retried). Without it one calling pod holding
// streams at window 0 took every place, and every other caller of the app waited out its deadline.
// The waiting line is shared so too: full, a call of a peer waiting less than its share takes the
// line's place of the newest call of the peer waiting past it (refused, not processed), else the
// staller's calls filled the line and every other caller was refused at once.
import { Deadlines } from "../mux/deadlines.ts"
import type { PendingOutcome } from "../mux/request.ts"
import { AnswerHolds } from "./answerHolds.ts"
import { AppH2Exchange } from "./appH2Exchange.ts"
import type { AppH2ExchangeCore, CancelSource, H2Leg } from "./appH2ExchangeCore.ts"
import type { AppH2Request } from "./appH2RequestHead.ts"
import { AppH2Session, type SessionOwner } from "./appH2Session.ts"
import type { OnInvalidHeader } from "./headerFilter.ts"
import { HeldAnswers } from "./heldAnswers.ts"
import type { InboundObservation } from "./observe.ts"
import { PeerShare, STALLED_READER, type ShareLeg } from "./peerShare.ts"
import type { PoolPeer } from "./poolPeers.ts"

/** An answer held to go back whole streams instead once it is not over this long after the end of the read its head came in (of the turn, a head that came outside a read) (what a streaming answer's first message may wait). */
const WHOLE_ANSWER_WAIT_MS = 1
/**
 * A gRPC answer that holds exactly one whole message when that wait ends, of a method none of whose
 * answers carried a second one, is a unary answer waiting for its trailers (late when the app
 * paused, a GC say): it waits this much longer rather than stream (three mesh messages instead of
 * one, at both sidecars, for no earlier answer: a unary caller has nothing before the trailers).
 * The price is a server stream's first message, when its method has not yet shown a second one
 * and it pauses after the first: that message waits this long, once per method.
 */
const ONE_MESSAGE_WAIT_MS = 20
/** Methods remembered as streaming (their paths come from callers: bounded, forgotten all at once when full). */
const STREAMING_METHODS_KEPT = 1024


/**
 * The resets a session may send the app at once, and those it may send a second after: under
 * nghttp2's own (stream_reset_burst 1,000, stream_reset_rate 33 a second, since 1.57; node 24
 * bundles 1.70), by a margin, as nghttp2 refills by whole seconds and B's count is its own view.
 */
const APP_RESET_BURST = 900
const APP_RESET_PER_SECOND = 30
/** Sessions drained for their resets at once, beyond those B's limit needs to spread its streams over (each carries at most APP_RESET_BURST). */
const RESET_DRAINS = 2

export class AppH2Leg implements H2Leg, ShareLeg<AppH2Exchange>, SessionOwner {
  private session: AppH2Session | undefined = undefined
  readonly address: string
  readonly onInvalid: OnInvalidHeader | undefined
  /** The exchanges' deadlines and waits for a whole answer: one timer each for the leg, not two per call. */
  readonly deadlines = new Deadlines<AppH2ExchangeCore>((exchange) => exchange.deadlinePassed())
  readonly holds = new AnswerHolds(WHOLE_ANSWER_WAIT_MS)
  readonly oneMessageHolds = new AnswerHolds(ONE_MESSAGE_WAIT_MS)
  /** gRPC methods (paths) one of whose answers carried a second message: theirs never wait past the first wait. */
  private readonly streamingMethods = new Set<string>()

  /** A streamed answer whose stream stays paused this long (the mesh takes nothing of it) is given up: the answer idle timeout. */
  readonly answerIdleMs: number
  /** Streams open to the app at once, on all its sessions (lowered to the app's own limit); as many again may wait. */
  readonly maxStreams: number
  /** Streams open to the app now, from the request until node closes the stream. */
  private openStreams = 0
  /**
   * Those of them on the current session, which the app's limit bounds: a session the app sent
   * GOAWAY (a graceful restart) keeps its streams until they end, and those waiting go to a new
   * session at once, not behind them.
   */
  private currentStreams = 0
  /**
   * The places as the calling peers share them, and the exchanges waiting for one, in order: one
   * that a deadline or cancel ends where it waits leaves at once (leftWaiting).
   */
  readonly peers: PeerShare<AppH2Exchange>
  /** The exchanges holding a place (the share's look for stalled ones walks them, once a second while a peer under its share waits). */
  private readonly holding = new Set<AppH2Exchange>()
  /** Places were taken back from `peer` (`count` at one look), which held `held` of them. */
  private readonly onReclaimed: (peer: string, count: number, held: number) => void
  /** Requests refused for want of a place (a counter reads it). */
  refused = 0
  /** Long-lived streams admitted now, open or waiting (appH2ExchangeCore.ts says which are). */
  private longStreams = 0
  /** Long-lived streams refused past their share (a counter reads it). */
  longStreamsRefused = 0
  /** The current session's app's SETTINGS_MAX_CONCURRENT_STREAMS, kept from its SETTINGS. */
  private announcedStreams = Infinity
  /** The current session's SETTINGS came in: until then it carries only the stream that made it. */
  private appSettled = false
  /** A stream went out on the current session before its SETTINGS (the one that made it). */
  private unsettledStreamOut = false
  /** The resets the current session may still send the app (its bucket, as nghttp2 keeps it), as of resetsAt (performance.now()). */
  private resetTokens = APP_RESET_BURST
  private resetsAt = 0
  /** Sessions left to drain for want of resets, until they close: the streams still open on each. */
  private readonly resetDrains = new Map<AppH2Session, number>()
  /** Their bound: enough to spread B's places over (APP_RESET_BURST each), and RESET_DRAINS more. */
  private readonly maxResetDrains: number
  /** Armed while exchanges wait for the current session's budget to refill (as many drain as may): the next reset's worth of time. */
  private refillTimer: NodeJS.Timeout | undefined = undefined
  /** Sessions drained for their resets, and calls refused with as many draining as may (counters read them). */
  sessionsRotated = 0
  resetRefused = 0

  private readonly host: string
  private readonly port: number

  /** Every session until its socket closes (the current one, and those still ending): the leg's close destroys them. */
  private readonly sessions = new Set<AppH2Session>()

  /** The sidecar's budget for the bytes its answers hold, past which the longest stalled are taken back (heldAnswers.ts). */
  readonly held: HeldAnswers

  constructor(host: string, port: number, onInvalid: OnInvalidHeader | undefined, answerIdleMs: number, maxStreams: number, onReclaimed: (peer: string, count: number, held: number) => void = () => {}, held = new HeldAnswers(Number.POSITIVE_INFINITY)) {
    this.held = held
    this.host = host
    this.port = port
    this.address = `${host}:${port}`
    this.onInvalid = onInvalid
    this.answerIdleMs = answerIdleMs
    this.maxStreams = maxStreams
    this.peers = new PeerShare(maxStreams, this)
    this.onReclaimed = onReclaimed
    this.maxResetDrains = Math.ceil(maxStreams / APP_RESET_BURST) + RESET_DRAINS
  }

  /**
   * Whether the current session could reset one more stream beside all those open on it (no session
   * yet: a fresh one can). Refills its bucket to now. Asked once per call's admission (start: its
   * refusal, admit, and the session its stream opens on) and once per stream opened from the waiting
   * line: what changes the answer (a stream counted on the session, a reset sent, another session)
   * happens only between those, and the bucket's refill in between is microseconds' worth, so the
   * answer is passed on, not asked again (a clock read and a division each time).
   */
  resetRoom(): boolean {
    if (this.session === undefined) return true
    const now = performance.now()
    this.resetTokens = Math.min(APP_RESET_BURST, this.resetTokens + ((now - this.resetsAt) * APP_RESET_PER_SECOND) / 1000)
    this.resetsAt = now
    return this.resetTokens >= this.currentStreams + 1
  }

  /** B reset a stream on `session`: one of its budget spent (a draining one's was kept for its streams). */
  resetSent(session: AppH2Session): void {
    if (session === this.session) this.resetTokens--
  }

  /**
   * Whether a new call is refused (counted): the current session has no reset to spare for it
   * (`room`: resetRoom's answer) and as many sessions drain for theirs as may. Asked before admit.
   */
  refuseForResets(room: boolean): boolean {
    if (room || this.resetDrains.size < this.maxResetDrains) return false
    this.resetRefused++
    return true
  }

  /** Exchanges waiting for a place now (a gauge reads it). */
  get waitingStreams(): number {
    return this.peers.waitingCount
  }

  /**
   * A place for `exchange`'s stream: taken now (true), or it waits for one (false, opened by
   * streamClosed), or, with as many waiting as may, it is refused (undefined). `room`: resetRoom's answer.
   */
  admit(exchange: AppH2Exchange, room: boolean): boolean | undefined {
    const places = this.placesNow()
    if (this.peers.waitingCount === 0 && this.mayOpen(room)) {
      this.seat(exchange)
      return true
    }
    if (this.peers.waitingCount >= places) {
      this.refused++
      // A peer waiting past its share gives up its newest waiting call to a peer under its share (peerShare.ts).
      const displaced = this.peers.displace(exchange.peer)
      if (displaced === undefined) return undefined
      displaced.displaced(places)
    }
    this.peers.wait(exchange)
    return false
  }

  /** `exchange` takes a place: counted among the open streams and its peer's places. */
  private seat(exchange: AppH2Exchange): void {
    this.openStreams++
    this.peers.hold(exchange)
    this.holding.add(exchange)
  }

  /**
   * Whether a long-lived stream is refused now (counted): half the places, at least one, are held by
   * long-lived streams already. Asked before admit; one admitted is counted by longStreamTaken.
   */
  refuseLongStream(): boolean {
    if (this.longStreams < this.longStreamShare()) return false
    this.longStreamsRefused++
    return true
  }

  /** The places long-lived streams may hold: half of those there are now, at least one. */
  longStreamShare(): number {
    return Math.max(1, Math.floor(this.placesNow() / 2))
  }

  /** A long-lived stream took a place or waits for one (admitted, or known to stream once open). */
  longStreamTaken(): void {
    this.longStreams++
  }

  /** A long-lived stream gave its place back, or left the waiting line. */
  longStreamEnded(): void {
    this.longStreams--
  }

  /** A waiting exchange ended where it waited (its deadline, a cancel). */
  leftWaiting(exchange: AppH2Exchange): void {
    this.peers.leave(exchange)
  }

  /** `exchange`'s stream on `session` closed: its place goes to the next exchange waiting, if any. */
  streamClosed(session: AppH2Session, exchange: AppH2Exchange): void {
    this.openStreams--
    this.peers.leave(exchange)
    this.holding.delete(exchange)
    if (session === this.session) this.currentStreams--
    else this.drainedStreamClosed(session)
    this.openWaiting()
  }

  /** Exchanges waiting take the places free now, in order (a stream closed, or the app raised its limit). */
  private openWaiting(): void {
    // resetRoom asked again for each (the stream opened before it counts on the session), not once B's limit is reached.
    while (this.peers.waitingCount > 0 && this.openStreams < this.maxStreams) {
      const room = this.resetRoom()
      if (!this.mayOpen(room)) break
      // Counted on its place by next(): the place is its own from here (its peer's share's turn).
      const next = this.peers.next()!
      // A long-lived call taken while the share was larger (before the session's SETTINGS told the
      // app's limit: half of B's until then) is past it now: refused, not left in the line ahead of
      // the unary calls behind it until a long-lived stream ends (h2c-stream-share.test.ts).
      if (next.longLived && this.longStreams > this.longStreamShare()) {
        this.peers.leave(next)
        this.longStreamsRefused++
        next.pastShare()
        continue
      }
      this.openStreams++
      this.holding.add(next)
      next.open(room)
    }
  }

  /**
   * A stream may open now: B's limit has a place on all sessions, the app's on the current one, and
   * the current session's SETTINGS came in, or it has none yet (the stream makes it). An app that
   * announces fewer streams than B's limit refuses those opened before it said so; its SETTINGS
   * come first thing, so the wait is one round trip. `room`: resetRoom's answer.
   */
  private mayOpen(room: boolean): boolean {
    if (this.openStreams >= this.maxStreams) return false
    // No reset to spare on the current session: the stream goes on a fresh one (sessionForStream),
    // if another may drain; else it waits for a stream there to end or the budget to refill (no
    // stream may end: a timer opens the line again then).
    if (!room) {
      if (this.resetDrains.size < this.maxResetDrains) return true
      this.refillTimer ??= setTimeout(this.onRefill, Math.ceil(1000 / APP_RESET_PER_SECOND))
      return false
    }
    return this.currentStreams < this.announcedStreams && (this.appSettled || !this.unsettledStreamOut)
  }

  /**
   * The current session is gone (closed, or the app sent GOAWAY: its open streams may still end
   * there): the next stream makes another, and those waiting, for its SETTINGS or for its places,
   * go on now, within B's limit.
   */
  gone(session: AppH2Session): void {
    if (this.session !== session) return
    this.session = undefined
    this.currentStreams = 0
    // Its app's limit went with it (one of 0 would otherwise refuse every request, no session made again).
    this.announce(Infinity)
    this.appSettled = false
    this.unsettledStreamOut = false
    if (this.peers.waitingCount > 0) this.openWaiting()
  }

  /** The current session's app's limit (Infinity: none known): the peers' share is of the places it leaves. */
  private announce(streams: number): void {
    this.announcedStreams = streams
    this.peers.resize(this.placesNow())
  }

  /** Ours, or fewer when the current session's app announced fewer (before its SETTINGS: ours, the waiting budget's measure). */
  placesNow(): number {
    return Math.min(this.maxStreams, this.announcedStreams)
  }

  /**
   * The session a stream that took its place (admit, openWaiting) opens on, counted there: the pooled
   * one, made again once the last one closed, failed or went away. `room`: resetRoom's answer when
   * the place was taken, in the same turn (nothing counted on the session since).
   */
  sessionForStream(room: boolean): AppH2Session {
    // (One closing already is made again by current(): its close would never come to end a drain.)
    const open = this.session
    if (!room && open !== undefined && !open.over) this.drainForResets(open)
    const session = this.current()
    this.currentStreams++
    return session
  }

  /**
   * The current session has no reset to spare for another stream: it takes no more (the next makes
   * a fresh one) and closes once its streams end, each still able to be reset within its budget.
   * Closed only with no stream left: a graceful close cuts the streams still open after its grace
   * (closeTimeoutMs), where those streams' own deadlines should bound them.
   */
  private drainForResets(session: AppH2Session): void {
    this.sessionsRotated++
    this.resetDrains.set(session, this.currentStreams)
    // current() makes the next session, its count and its budget afresh; this one's GOAWAY and end
    // no longer touch the leg (gone: not the current session).
    this.session = undefined
    if (this.currentStreams === 0) session.connection.close()
  }

  private readonly onRefill = (): void => {
    this.refillTimer = undefined
    if (this.peers.waitingCount > 0) this.openWaiting()
  }

  /** A stream closed on a session that is not the current one: a session drained for its resets closes after its last. */
  private drainedStreamClosed(session: AppH2Session): void {
    const left = this.resetDrains.get(session)
    if (left === undefined) return
    this.resetDrains.set(session, left - 1)
    if (left === 1) session.connection.close()
  }

  /** The current session's app's SETTINGS came in (SessionOwner). */
  settled(session: AppH2Session): void {
    if (this.session !== session) return
    this.announce(session.announcedStreams)
    this.appSettled = true
    // A limit raised (or first known) while exchanges wait: they take the new places now, not only
    // once a stream closes (behind streams the app holds they would wait out their deadlines, places free).
    if (this.peers.waitingCount > 0) this.openWaiting()
  }

  /** A session's socket closed (SessionOwner): a drain it was counted in is over. */
  closed(session: AppH2Session): void {
    this.sessions.delete(session)
    if (this.resetDrains.delete(session) && this.peers.waitingCount > 0) this.openWaiting()
  }

  private current(): AppH2Session {
    const open = this.session
    if (open !== undefined && !open.over) return open
    // A field HTTP/2 names single-value (user-agent, content-type...) that a peer gave twice goes to
    // the app as it came, as the HTTP/1.1 leg carries it (node's client refused it unless told not to).
    // A session that ends (idle, after the app's GOAWAY, or its own error) ends its socket and
    // destroys it past closeTimeoutMs if the app never sends its FIN (h2ConnectionCore.ts).
    const session = new AppH2Session(this.host, this.port, this)
    this.sessions.add(session)
    this.announce(Infinity)
    this.currentStreams = 0
    this.appSettled = false
    this.resetTokens = APP_RESET_BURST
    this.resetsAt = performance.now()
    // The caller opens the session's first stream now.
    this.unsettledStreamOut = true
    this.session = session
    return session
  }

  /**
   * One request: settles `pending` (the session's, no promise per call) exactly once; the caller's
   * cancel or the deadline resets the stream, also while the answer streams.
   */
  forward(request: AppH2Request, observation: InboundObservation, cancel: CancelSource, pending: PendingOutcome, peer?: PoolPeer): void {
    new AppH2Exchange(this, request, observation, pending, peer).start(cancel)
  }

  /** The share's look for stalled streams: those holding a place (a copy: one taken back leaves the set as its stream closes). */
  holders(): Array<AppH2Exchange> {
    return [...this.holding]
  }

  takeBack(exchange: AppH2Exchange, held: number): void {
    exchange.takenBack(`its stream to the app at ${this.address} was taken back for another peer's waiting request: ${held} of the ${this.placesNow()} places (--app-h2-max-streams, or the app's SETTINGS) held by ${exchange.peer!.key}, past its share of ${this.peers.share}, and ${STALLED_READER}; retry later`)
  }

  reclaimed(peer: string, count: number, held: number): void {
    this.onReclaimed(peer, count, held)
  }

  streams(path: string): boolean {
    return this.streamingMethods.has(path)
  }

  /** An answer of `path` carried a second message. */
  noteStreaming(path: string): void {
    // Emptied only to make room for a new one: every later answer of a method already kept would
    // otherwise empty a full set again and again.
    if (this.streamingMethods.has(path)) return
    if (this.streamingMethods.size >= STREAMING_METHODS_KEPT) this.streamingMethods.clear()
    this.streamingMethods.add(path)
  }

  close(): Promise<void> {
    // Those still waiting for a place end now, not processed: opened as the closing session's
    // streams close, they would make a session again after the close.
    this.peers.stop()
    for (let next = this.peers.next(); next !== undefined; next = this.peers.next()) next.closedWaiting()
    this.session = undefined
    // The leg's timers go with it: the deadlines' one timer stays armed for a finished call's
    // deadline (deadlines.ts re-arms lazily), which kept the process alive that long after a stop.
    this.deadlines.clear()
    if (this.refillTimer !== undefined) clearTimeout(this.refillTimer)
    this.holds.clear()
    this.oneMessageHolds.clear()
    // The inbound side has drained (or its drain timeout passed): what is still open to the app is
    // cut now, sessions and sockets, whatever the app does (it may send nothing, not even a FIN).
    const closed: Array<Promise<void>> = []
    for (const session of this.sessions) {
      const socket = session.socket
      if (!socket.destroyed) closed.push(new Promise((resolve) => socket.once("close", () => resolve())))
      session.connection.destroy("leg-closed")
      socket.destroy()
    }
    return Promise.all(closed).then(() => {})
  }
}
