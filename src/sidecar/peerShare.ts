// The places to the local app that the inbound side's legs hand out, shared among the calling peers
// (poolPeers.ts): the HTTP/1.1 pool's sockets (appPool.ts) and the h2c leg's streams (appH2.ts)
// each keep one PeerShare, which counts every request under its peer, holding a place or waiting
// for one, and keeps the waiting ones in order.
//
// A peer's share is the places over the peers that want them now (holding one or waiting for one),
// rounded down, at least one: alone, all of them; with three, a third each, the remainder to
// whoever asks first (and reclaimable like any place past a share). Two peers holding half each so
// leave a third none to wait for. The peers wanting places are counted as a peer's first request
// begins and its last ends (O(1)); the share changes only as that count crosses a step of the
// quotient, and then the peers with requests waiting are judged by it again: a walk over them, none
// while nothing waits (the common case), never more than the count, and for counts past about the
// square root of the places only at the few where the quotient steps (256 places: 85 and 86 peers
// differ, 100 and 101 do not; past 256 peers the share is 1 and stays). A request takes a free
// place whoever sent it (a peer alone may use them all); but when a place frees, a waiting request
// of a peer holding less than its share goes ahead of older ones of peers at theirs (such peers in
// turn, each one's own requests in order; found at once, not by a walk over the requests waiting,
// which a peer at its share can make thousands long). That alone would not do: an answer whose reader takes nothing
// holds its place until the answer idle timeout, so one peer stalling more answers than there are
// places left every other peer's requests waiting for their deadline; and one read steadily but
// slowly, a half window granted less than a second apart, never stalls a second. So, while a
// request of a peer under its share waits, a place held past its peer's share by an answer stalled
// on its reader is taken back: paused (unread) for RECLAIM_STALL_MS, or paused now (waiting on its
// reader, not on its app) with less than READER_FLOOR taken since the last look, a RECLAIM_STALL_MS
// before (each answer counts the bytes it passes on; a look notes the count: one number, no clock
// per chunk). Its leg ends that exchange (overloaded, processed) and the place goes to the waiting
// request. A peer never loses a place within its share, nor one whose answer is taken, so an honest
// busy peer meets no error for using every place while alone.
// Each start and end is O(1) but for that walk (amortized: a line is compacted once most of its
// slots are passed or ended); one timer for the whole share, armed only while such a request waits.
import type { PoolPeer } from "./poolPeers.ts"

/**
 * How long an answer held past its peer's share must have been paused (its reader taking nothing)
 * before its place is taken back for another peer's waiting request. Back-pressure pauses an answer
 * streaming to a reader slower than the app for a round trip at a time; a second with nothing taken
 * is a stalled reader, and the waiting request's deadline (15 s by default) keeps most of its time.
 */
export const RECLAIM_STALL_MS = 1_000

/**
 * Bytes an answer held past its peer's share, waiting on its reader, must pass on between two looks
 * (RECLAIM_STALL_MS apart; pro rata when the event loop made them further apart) while another
 * peer under its share waits, or its place is taken back: 2 MiB a second. The mesh grants an answer
 * in half windows (512 KiB, mesh.ts's stream window over two), so what a reader took in a second is
 * its rate give or take one grant: a reader under about 1 MiB/s leaves its answer paused a second
 * now and then and the stall rule takes it (an 800 KiB/s one at main, one run in two), so a floor
 * that catches the steady ones must lie some grants above that; four grants a second (16 Mbit/s)
 * never cuts a steady reader above 2.5 MiB/s and always finds one under 1.5 MiB/s (a faster one
 * whose consumer lagged for a second within a look may be: one at 3 MB/s was, 1 run in 13 of a
 * test on a loaded machine; measuring over several looks spares it but finds the slow ones
 * seconds later, as a reader's socket buffers fill first). Only the places past a
 * share are judged, and only while another peer is owed one: a reader on a slow link keeps its
 * share at any pace, and all the places while nobody else asks (the answer idle timeout is its
 * only bound then, 512 KiB per 60 s).
 */
export const READER_FLOOR = 2 * 1024 * 1024

/** An answer taken back, as its caller and the log are told: why it was judged stalled. */
export const STALLED_READER = `this answer's reader took none of it for ${RECLAIM_STALL_MS} ms, or under ${READER_FLOOR} bytes a second while it waited on that reader`

/** Where a request stands in its peer's counts: in none, among its waiting requests, among its held places. */
export const SEAT_NONE = 0
export const SEAT_WAITING = 1
export const SEAT_HELD = 2
export type Seat = typeof SEAT_NONE | typeof SEAT_WAITING | typeof SEAT_HELD

/** A request as the share counts it: its leg's exchange keeps these fields for it. */
export interface Shared {
  /** Whom it counts under (undefined: nobody's share, as a request a leg is given directly: it waits in order, and neither passes nor takes back). */
  readonly peer: PoolPeer | undefined
  seat: Seat
  /** Its place among the waiting requests while it waits (emptied when its peer's line gives it a place first). */
  slot: number
  /** Its answer is paused (its reader takes nothing), since pausedAt (performance.now()). */
  readonly paused: boolean
  readonly pausedAt: number
  /** Bytes of its answer passed on to the mesh so far (counted by its leg, chunk by chunk). */
  readonly taken: number
  /** `taken` at the share's look numbered `lookNoted` (the look's own; a look before the last one's is no measure). */
  takenNoted: number
  lookNoted: number
}

/** What a leg does for its share. */
export interface ShareLeg<T extends Shared> {
  /** The requests holding a place now (a copy, or one that taking one back does not change); undefined entries are skipped. */
  holders(): Iterable<T | undefined>
  /** Ends `request` to give its place to another peer's waiting request (out of the share's counts already); its peer held `held` places, past its share. */
  takeBack(request: T, held: number): void
  /** Places were taken back from `peer` (`count` at one look), which held `held` of them. */
  reclaimed(peer: string, count: number, held: number): void
}

/** One peer's waiting requests, in order from `head`; one taken or ended is skipped when reached. */
interface Line<T> {
  readonly items: Array<T | undefined>
  head: number
}

/**
 * Slots passed at the front of a line before it is cut off: a line that never empties (requests
 * waiting all the while, under a long overload) would otherwise grow a slot per request for ever.
 * Cut once they are past this and half the line, its cost is spread over those requests.
 */
const PASSED_KEPT = 1024

/** Whether a line whose first `head` slots were passed is cut now. */
const cutDue = (head: number, length: number): boolean => head > PASSED_KEPT && head * 2 > length

/** Keeps, from `head` on, only the requests of `items` still waiting, in order, from its start. */
const keepWaiting = <T extends Shared>(items: Array<T | undefined>, head: number): void => {
  let kept = 0
  for (let i = head; i < items.length; i++) {
    const request = items[i]
    if (request !== undefined && request.seat === SEAT_WAITING) items[kept++] = request
  }
  items.length = kept
}

/** The first request of `line` still waiting, taken out of it; undefined when none is. */
const takeFromLine = <T extends Shared>(line: Line<T>): T | undefined => {
  const items = line.items
  while (line.head < items.length) {
    const request = items[line.head]
    items[line.head++] = undefined
    if (request === undefined || request.seat !== SEAT_WAITING) continue
    if (cutDue(line.head, items.length)) {
      items.splice(0, line.head)
      line.head = 0
    }
    return request
  }
  return undefined
}

export class PeerShare<T extends Shared> {
  /**
   * Places one peer holds before its waiting requests yield to those of peers under theirs: the
   * places over the peers wanting them (`active`), rounded down, at least one. So one peer alone
   * has them all, each of n busy peers keeps a nth even while the others are busy too, and no group
   * of peers, each within its share, leaves another none.
   */
  share: number
  /** Peers with a request holding a place or waiting for one. */
  active = 0
  /** Requests waiting for a place now (a gauge's). */
  waitingCount = 0
  /** Freed places given to a peer under its share ahead of an older request of a peer at its share (a metric's). */
  sharePassed = 0
  /** Exchanges ended to take their place back: held past their peer's share, stalled (a metric's). */
  shareReclaimed = 0
  private readonly leg: ShareLeg<T>
  /** Requests waiting, in order; a slot taken out of order is left undefined. */
  private readonly waiting: Array<T | undefined> = []
  private waitingHead = 0
  /**
   * Each peer's waiting requests (peers with none have no line), and the peers under their share
   * with requests waiting, longest so first: a freed place passed to one of them costs the same
   * however many requests or peers wait ahead of it, not a walk over them.
   */
  private readonly lines = new Map<PoolPeer, Line<T>>()
  private readonly hungry = new Set<PoolPeer>()
  /** The last peer seen waiting more requests than its share (displace: of a line bounded to the places, at most one can). */
  private overWaiting: PoolPeer | undefined = undefined
  /**
   * The places fell (resize) while requests waited: the line may be longer than the places now, so
   * more than one peer may wait past the smaller share, and overWaiting names none of them (it was
   * set under the larger share). displace looks for one then, until a look finds none.
   */
  private overStale = false
  /** Armed while a request of a peer under its share may be waiting: the look for places to take back. */
  private reclaimTimer: NodeJS.Timeout | undefined = undefined
  /** The looks so far, from 1 (a request's lookNoted names one; 0, none), and when the last one was (performance.now()). */
  private looks = 1
  private lookedAt = 0
  private places: number
  private stopped = false

  constructor(places: number, leg: ShareLeg<T>) {
    this.places = places
    this.share = shareOf(places, 0)
    this.leg = leg
  }

  /** The places changed (an h2c app's SETTINGS): the share is of them now; peers waiting are judged by it. */
  resize(places: number): void {
    this.places = places
    this.reshare()
  }

  /** The share again, after the places or the peers wanting them changed; peers waiting are judged by it. */
  private reshare(): void {
    const share = shareOf(this.places, this.active)
    if (share === this.share) return
    if (share < this.share && this.waitingCount > 0) this.overStale = true
    this.share = share
    for (const peer of this.lines.keys()) this.review(peer)
  }

  /** `request` takes a place: counted among its peer's. */
  hold(request: T): void {
    request.seat = SEAT_HELD
    const peer = request.peer
    if (peer === undefined) return
    if (peer.held++ === 0 && peer.waiting === 0) this.joined()
    if (peer.hungry) this.review(peer)
  }

  /** A peer wants places now (its first request holds one or waits): the share may be smaller. */
  private joined(): void {
    this.active++
    this.reshare()
  }

  /** `request` waits for a place, after those waiting now. */
  wait(request: T): void {
    if (this.waiting.length - this.waitingHead > 2 * this.waitingCount + PASSED_KEPT) this.keepWaiting()
    request.seat = SEAT_WAITING
    this.waitingCount++
    request.slot = this.waiting.length
    this.waiting.push(request)
    const peer = request.peer
    if (peer === undefined) return
    if (peer.waiting++ === 0 && peer.held === 0) this.joined()
    if (peer.waiting > this.share) this.overWaiting = peer
    let line = this.lines.get(peer)
    if (line === undefined) this.lines.set(peer, (line = { items: [], head: 0 }))
    else if (line.items.length - line.head > 2 * peer.waiting + PASSED_KEPT) {
      keepWaiting(line.items, line.head)
      line.head = 0
    }
    line.items.push(request)
    this.review(peer)
  }

  /** `request` ended, or gave its place back: out of its peer's counts (its slots among the waiting, if any, are skipped when reached). */
  leave(request: T): void {
    const seat = request.seat
    if (seat === SEAT_NONE) return
    const peer = request.peer
    if (seat === SEAT_WAITING) {
      this.waitingCount--
      if (peer !== undefined && --peer.waiting === 0) this.lines.delete(peer)
    } else if (peer !== undefined) peer.held--
    request.seat = SEAT_NONE
    if (peer === undefined) return
    // Its last request: it wants no place now, the others' share may be larger.
    if (peer.held === 0 && peer.waiting === 0) {
      this.active--
      this.reshare()
    }
    // Nothing to review for a peer with no request waiting and none before (the common case).
    if (peer.waiting > 0 || peer.hungry) this.review(peer)
  }

  /**
   * A waiting line bounded to the places (the h2c leg's) is full and a request of `peer` asks to
   * wait: the newest waiting request of a peer waiting more than its share, out of the line (its leg
   * refuses it, nothing sent) to make room, so that one peer's requests cannot keep the others' out
   * of the line as its answers hold the places. At most one peer waits past its share in a line no
   * longer than the places (after the places fell, several may: overStale). None (the asker is
   * refused) when no peer does, or when the asker waits its share already.
   */
  displace(peer: PoolPeer | undefined): T | undefined {
    if (peer === undefined) return undefined
    // The share as it will be with the asker among the peers wanting places (a new one makes it smaller).
    const share = peer.held === 0 && peer.waiting === 0 ? shareOf(this.places, this.active + 1) : this.share
    if (peer.waiting >= share) return undefined
    let over = this.overWaiting
    if ((over === undefined || over.waiting <= share) && (this.overStale || share < this.share)) over = this.findOver(share)
    if (over === undefined || over === peer || over.waiting <= share) return undefined
    const line = this.lines.get(over)!
    const items = line.items
    while (items.length > line.head) {
      const request = items.pop()
      if (request === undefined || request.seat !== SEAT_WAITING) continue
      // Its slot among all the waiting is skipped when reached (its seat is none).
      this.leave(request)
      return request
    }
    return undefined
  }

  /**
   * After the share fell (fewer places, more peers), or as a new peer asks: the peer waiting most
   * past `share` (no more than the share now), named overWaiting (a walk over the waiting peers'
   * lines, no more of them than the places; each finds one to displace, or ends the looks).
   */
  private findOver(share: number): PoolPeer | undefined {
    let over: PoolPeer | undefined
    for (const peer of this.lines.keys()) if (peer.waiting > share && (over === undefined || peer.waiting > over.waiting)) over = peer
    if (over === undefined) this.overStale = false
    this.overWaiting = over
    return over
  }

  /**
   * Keeps `peer` among the hungry (requests waiting, under its share) while it is one, and only
   * then. Becoming one arms the look for places to take back: as it waits, or later, when a
   * place of its own ends while it waits and the place goes to another's request.
   */
  private review(peer: PoolPeer): void {
    const hungry = peer.waiting > 0 && peer.held < this.share
    if (hungry === peer.hungry) return
    peer.hungry = hungry
    if (!hungry) return void this.hungry.delete(peer)
    this.hungry.add(peer)
    this.armReclaim()
  }

  /**
   * The request a freed place goes to, counted on it: the first waiting, unless its peer holds its
   * share and a peer under its share waits; then that peer's first (of the peer hungry longest,
   * which goes to the back of them if still hungry, so several share the freed places in turn).
   */
  next(): T | undefined {
    const waiting = this.waiting
    let head = this.waitingHead
    while (head < waiting.length && (waiting[head] === undefined || waiting[head]!.seat !== SEAT_WAITING)) waiting[head++] = undefined
    this.waitingHead = head
    if (head === waiting.length) {
      waiting.length = 0
      this.waitingHead = 0
      return undefined
    }
    let request = waiting[head]!
    let peer = request.peer
    if (peer !== undefined && peer.held >= this.share && this.hungry.size > 0) {
      peer = this.hungry.values().next().value!
      this.hungry.delete(peer)
      this.hungry.add(peer)
      request = takeFromLine(this.lines.get(peer)!)!
      this.sharePassed++
    } else if (peer !== undefined) takeFromLine(this.lines.get(peer)!)
    waiting[request.slot] = undefined
    if (request.slot === head) this.waitingHead = head + 1
    if (cutDue(this.waitingHead, waiting.length)) this.cutPassed()
    this.seat(request)
    return request
  }

  /** `request` leaves the waiting for a place (its peer still wants places: the share stays). */
  private seat(request: T): void {
    this.waitingCount--
    request.seat = SEAT_HELD
    const peer = request.peer
    if (peer === undefined) return
    if (--peer.waiting === 0) this.lines.delete(peer)
    peer.held++
    this.review(peer)
  }

  /**
   * Keeps only the requests still waiting in the line, in order: those that ended where they waited
   * (their deadlines, often short) leave slots behind one that waits longer, which no place freed
   * passes. Done once they are most of the line, its cost is spread over them.
   */
  private keepWaiting(): void {
    keepWaiting(this.waiting, this.waitingHead)
    this.waitingHead = 0
    this.renumber()
  }

  /** Cuts the passed slots off the front of the waiting line; those still waiting learn their new slots. */
  private cutPassed(): void {
    const waiting = this.waiting
    waiting.splice(0, this.waitingHead)
    this.waitingHead = 0
    this.renumber()
  }

  private renumber(): void {
    const waiting = this.waiting
    for (let i = 0; i < waiting.length; i++) {
      const request = waiting[i]
      if (request !== undefined) request.slot = i
    }
  }

  private armReclaim(): void {
    // Unref'd: the waiting requests' own deadlines keep what must run; this alone keeps nothing alive.
    // Never after stop: its requests still waiting end there, and their peers may turn hungry.
    if (this.reclaimTimer === undefined && !this.stopped) this.reclaimTimer = setTimeout(this.onReclaimTimer, RECLAIM_STALL_MS).unref()
  }

  /**
   * While requests of peers under their share wait, takes back for each a place held past its
   * peer's share by an answer stalled on its reader (paused for RECLAIM_STALL_MS, or paused now
   * with less than READER_FLOOR taken since the last look); looks again a stall later while any
   * waits. Each look notes what every answer held took so far, for the next look's measure.
   */
  private readonly onReclaimTimer = (): void => {
    this.reclaimTimer = undefined
    if (this.stopped) return
    // Only hungry peers' requests: a freed place goes to them first (next), never back to the peer it was taken from.
    let starved = 0
    for (const peer of this.hungry) starved += peer.waiting
    // A look skipped still takes its number, which no request notes: what was noted before it
    // measures nothing at the next (the timer stops only here, so a pause always skips one).
    const look = ++this.looks
    if (starved === 0) return
    const now = performance.now()
    const stalledSince = now - RECLAIM_STALL_MS
    // The floor over the time since the last look (longer than a stall when the event loop lagged).
    const floor = (READER_FLOOR * (now - this.lookedAt)) / RECLAIM_STALL_MS
    this.lookedAt = now
    // The stalled ones, with what each took since the last look (one paused a stall: nothing), taken
    // slowest first: a reader near the floor keeps its place while a slower (or dead) one holds one.
    const stalled: Array<{ readonly request: T; readonly took: number }> = []
    for (const request of this.leg.holders()) {
      const peer = request?.peer
      if (request === undefined || peer === undefined || request.seat !== SEAT_HELD) continue
      const since = request.takenNoted
      const measured = request.lookNoted === look - 1
      request.takenNoted = request.taken
      request.lookNoted = look
      // Paused: it waits on its reader now, not on its app; for a stall, or after little taken since the last look.
      if (peer.held <= this.share || !request.paused) continue
      if (request.pausedAt <= stalledSince) stalled.push({ request, took: 0 })
      else if (measured && request.taken - since < floor) stalled.push({ request, took: request.taken - since })
    }
    stalled.sort((a, b) => a.took - b.took)
    const taken = new Map<PoolPeer, number>()
    for (const { request } of stalled) {
      if (starved === 0) break
      const peer = request.peer!
      // Its peer may be within its share now, after places taken back before.
      if (request.seat !== SEAT_HELD || peer.held <= this.share) continue
      starved--
      this.shareReclaimed++
      taken.set(peer, (taken.get(peer) ?? 0) + 1)
      const held = peer.held
      // Out of its peer's counts now, whenever its leg gives the place back (an h2c stream's at its close).
      this.leave(request)
      this.leg.takeBack(request, held)
    }
    for (const [peer, count] of taken) this.leg.reclaimed(peer.key, count, peer.held + count)
    this.armReclaim()
  }

  /** No look for places to take back from now on (the leg closes). */
  stop(): void {
    this.stopped = true
    if (this.reclaimTimer !== undefined) clearTimeout(this.reclaimTimer)
    this.reclaimTimer = undefined
  }
}

/** The places over the peers wanting them (alone or none: all), rounded down, at least one. */
const shareOf = (places: number, active: number): number => Math.max(1, Math.floor(places / Math.max(1, active)))
