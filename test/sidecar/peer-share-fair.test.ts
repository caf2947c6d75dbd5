// The peers' share (peerShare.ts), its counts and its looks alone: the share is the places over the
// peers holding or waiting for one (a peer alone has them all, three busy ones a third each, the
// remainder to whoever asks), kept as peers come and go; and a look takes back, from a peer past
// its share while another waits under its own, an answer stalled on its reader (paused a stall) or
// one waiting on it now that took less than READER_FLOOR since the last look; never one whose reader
// took more, nor one waiting on its app (not paused). Fake timers drive the looks (a second apart).
// The legs' use of it against real peers: hostile-share-takers.test.ts, hostile-stalled-answers-*.test.ts.
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest"
import { PeerShare, READER_FLOOR, RECLAIM_STALL_MS, SEAT_HELD, SEAT_NONE } from "../../src/sidecar/peerShare.ts"
import { PoolPeers } from "../../src/sidecar/poolPeers.ts"
import { ShareRequest } from "../support/shareRequest.ts"


/** A share of `places` whose leg's holders are the requests holding a place; those taken back are listed. */
const shareOf = (places: number) => {
  const held = new Set<ShareRequest>()
  const takenBack: Array<string> = []
  const share = new PeerShare<ShareRequest>(places, {
    holders: () => [...held],
    takeBack: (request) => {
      takenBack.push(request.name)
      held.delete(request)
    },
    reclaimed: () => {}
  })
  const peers = new PoolPeers()
  const peer = (n: number) => peers.of(`10.0.0.${n}:1`, undefined)
  /** `request` asks: takes a free place, else waits. */
  const ask = (request: ShareRequest) => {
    if (held.size < places) {
      share.hold(request)
      held.add(request)
    } else share.wait(request)
  }
  /** `request` ends; its place goes to the next waiting one, if any. */
  const end = (request: ShareRequest) => {
    held.delete(request)
    share.leave(request)
    const next = share.next()
    if (next !== undefined) held.add(next)
  }
  return { share, held, takenBack, peer, ask, end }
}

describe("the share among the peers wanting places", () => {
  it("a peer alone has every place; a second asking makes it half, a third a third (rounded down), and as they leave it grows back", () => {
    const { share, peer, ask, end, held } = shareOf(10)
    const [x, y, z] = [peer(1), peer(2), peer(3)]
    const xs = Array.from({ length: 10 }, (_, i) => new ShareRequest(x, `x${i}`))
    for (const request of xs) ask(request)
    expect([share.active, share.share, x.held]).toEqual([1, 10, 10])
    const y0 = new ShareRequest(y, "y0")
    ask(y0)
    expect([share.active, share.share]).toEqual([2, 5])
    const z0 = new ShareRequest(z, "z0")
    ask(z0)
    // 10 / 3: three each, the tenth place to whoever asks.
    expect([share.active, share.share]).toEqual([3, 3])
    // Freed places go to y and z (under their share) ahead of nobody else.
    end(xs[0]!)
    end(xs[1]!)
    expect([x.held, y.held, z.held]).toEqual([8, 1, 1])
    // z's request ends: two peers again, a share of 5.
    end(z0)
    expect([share.active, share.share, z.held, z.waiting]).toEqual([2, 5, 0, 0])
    end(y0)
    expect([share.active, share.share]).toEqual([1, 10])
    for (const request of [...held]) end(request)
    expect([share.active, share.share, share.waitingCount]).toEqual([0, 10, 0])
  })

  it("three busy peers (each always more waiting) each hold a third of 9 places, and of 10 three or four", () => {
    for (const places of [9, 10]) {
      const { share, peer, ask, end, held } = shareOf(places)
      const peers = [peer(1), peer(2), peer(3)]
      let n = 0
      // The first peer takes every place while alone, then the others ask as much.
      for (const p of peers) for (let i = 0; i < places; i++) ask(new ShareRequest(p, `r${n++}`))
      let seed = 7
      for (let round = 0; round < 2_000; round++) {
        // A held request ends at random (a cheap LCG: the same run each time), and its peer asks again.
        seed = (seed * 1_103_515_245 + 12_345) % 2 ** 31
        const done = [...held][seed % held.size]!
        end(done)
        ask(new ShareRequest(done.peer, `r${n++}`))
      }
      expect(share.share).toBe(3)
      for (const p of peers) {
        expect(p.held).toBeGreaterThanOrEqual(3)
        expect(p.held).toBeLessThanOrEqual(places - 6)
      }
    }
  })
})

describe("a look for places to take back", () => {
  beforeEach(() => {
    vi.useFakeTimers({ toFake: ["setTimeout", "clearTimeout", "performance"] })
  })
  afterEach(() => {
    vi.useRealTimers()
  })

  it("takes, past a share while another peer waits under its own, the answer whose reader took under the floor since the last look; not one above it, nor one waiting on its app", () => {
    const { share, peer, ask, takenBack } = shareOf(4)
    const [x, y] = [peer(1), peer(2)]
    const [slow, above, appBound, fast] = ["slow", "above", "appBound", "fast"].map((name) => new ShareRequest(x, name))
    // The slow one last among the holders: the look judges the others first (it stops once it took enough).
    for (const request of [above, appBound, fast, slow]) ask(request!)
    // Each second: the slow reader 1.5 MiB, the one above the floor 2.5 MiB, the fast one 100 MiB,
    // each pausing its answer (its reader the slower) just now, never for a stall; the app-bound
    // one takes a little and never pauses (its app is the slower).
    const second = () => {
      for (const [request, bytes] of [[slow, 1.5], [above, 2.5], [fast, 100]] as const) {
        request!.taken += bytes * 1024 * 1024
        request!.paused = true
        request!.pausedAt = performance.now()
      }
      appBound!.taken += 1024
    }
    ask(new ShareRequest(y, "y0"))
    expect([share.share, x.held, y.waiting]).toEqual([2, 4, 1])
    vi.advanceTimersByTime(RECLAIM_STALL_MS - 1)
    second()
    // The first look notes what each took: no measure yet, and none stalled.
    vi.advanceTimersByTime(1)
    expect(takenBack).toEqual([])
    vi.advanceTimersByTime(RECLAIM_STALL_MS - 1)
    second()
    vi.advanceTimersByTime(1)
    expect(takenBack).toEqual(["slow"])
    expect(slow!.seat).toBe(SEAT_NONE)
    // The place went to y (the test's leg hands it on as the pool would: next()).
    expect(share.next()?.name).toBe("y0")
    expect([x.held, y.held]).toEqual([3, 1])
    expect(READER_FLOOR).toBe(2 * 1024 * 1024)
  })

  it("takes the slowest of the answers under the floor first, not the first it finds: a reader near the floor keeps its place while a slower one is there", () => {
    const { peer, ask, takenBack } = shareOf(4)
    const [x, y] = [peer(1), peer(2)]
    // Oldest first among the holders (the legs' order): the one near the floor, then the slowest.
    const [near, slowest, other, last] = ["near", "slowest", "other", "last"].map((name) => new ShareRequest(x, name))
    for (const request of [near, slowest, other, last]) ask(request!)
    ask(new ShareRequest(y, "y0"))
    const second = () => {
      for (const [request, bytes] of [[near, 1.9], [slowest, 0.1], [other, 50], [last, 50]] as const) {
        request!.taken += bytes * 1024 * 1024
        request!.paused = true
        request!.pausedAt = performance.now()
      }
    }
    vi.advanceTimersByTime(RECLAIM_STALL_MS - 1)
    second()
    vi.advanceTimersByTime(1)
    vi.advanceTimersByTime(RECLAIM_STALL_MS - 1)
    second()
    vi.advanceTimersByTime(1)
    // One waits: one place taken back, the slowest reader's.
    expect(takenBack).toEqual(["slowest"])
  })

  it("a look skipped (nobody waiting under its share) measures nothing: the next one only notes", () => {
    const { share, peer, ask, end, takenBack } = shareOf(2)
    const [x, y] = [peer(1), peer(2)]
    const [a, b] = [new ShareRequest(x, "a"), new ShareRequest(x, "b")]
    ask(a)
    ask(b)
    const y0 = new ShareRequest(y, "y0")
    ask(y0)
    vi.advanceTimersByTime(RECLAIM_STALL_MS)
    // y's request ends where it waits (its deadline): the next look finds nobody to take for.
    share.leave(y0)
    vi.advanceTimersByTime(RECLAIM_STALL_MS)
    expect(x.held).toBe(2)
    // Much later y asks again; b's reader took nothing since the first look, and paused half a stall before the look.
    vi.advanceTimersByTime(10 * RECLAIM_STALL_MS)
    ask(new ShareRequest(y, "y1"))
    vi.advanceTimersByTime(RECLAIM_STALL_MS / 2)
    b.paused = true
    b.pausedAt = performance.now()
    vi.advanceTimersByTime(RECLAIM_STALL_MS / 2)
    expect(takenBack).toEqual([])
    // A second on, paused all the while: a stall (and under the floor).
    vi.advanceTimersByTime(RECLAIM_STALL_MS)
    expect(takenBack).toEqual(["b"])
    expect(a.seat).toBe(SEAT_HELD)
    end(a)
  })
})
