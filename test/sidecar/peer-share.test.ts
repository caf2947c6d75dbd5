// The peers' share's waiting line (peerShare.ts), its counts alone: bounded to the places (the h2c
// leg's line: as many wait as may be open), when it is full a peer waiting under its share takes the
// place in the line of the newest waiting request of the peer waiting past its share; nobody's is
// taken when no peer waits past its share, or when the asker waits its share already; after the
// places fell (an h2c app's SETTINGS), each peer waiting past the smaller share gives way; a peer
// asking for the first time is counted among the peers wanting places (its share is theirs). A line that
// never empties, or whose requests end where they wait behind one that waits on, keeps its size,
// not a slot for every request that ever waited. The legs' use of it
// against real peers: hostile-stalled-answers-h2c.test.ts, app-pool-share.test.ts.
import { describe, expect, it } from "vitest"
import { PeerShare, SEAT_NONE, SEAT_WAITING } from "../../src/sidecar/peerShare.ts"
import { PoolPeers } from "../../src/sidecar/poolPeers.ts"
import { ShareRequest } from "../support/shareRequest.ts"

const PLACES = 4

/** A share of PLACES places, all held by `x`, with `waiting` requests waiting: how many of each peer's, in order. */
const fullLine = (waiting: Array<"x" | "y" | "z">) => {
  const share = new PeerShare<ShareRequest>(PLACES, { holders: () => [], takeBack: () => {}, reclaimed: () => {} })
  const peers = new PoolPeers()
  const of = { x: peers.of("10.0.0.1:1", undefined), y: peers.of("10.0.0.2:1", undefined), z: peers.of("10.0.0.3:1", undefined) }
  for (let i = 0; i < PLACES; i++) share.hold(new ShareRequest(of.x, `x-held${i}`))
  const requests = waiting.map((peer, i) => new ShareRequest(of[peer], `${peer}${i}`))
  for (const request of requests) share.wait(request)
  return { share, of, requests }
}

describe("the peers' waiting line", () => {
  it("a peer under its share takes the line's place of the newest request of the peer waiting past its share", () => {
    const { share, of, requests } = fullLine(["x", "x", "x", "x"])
    const displaced = share.displace(of.y)
    expect(displaced?.name).toBe("x3")
    expect(displaced?.seat).toBe(SEAT_NONE)
    expect([of.x.waiting, share.waitingCount]).toEqual([3, 3])
    const asker = new ShareRequest(of.y, "y")
    share.wait(asker)
    // The asker's peer holds nothing: it goes ahead of x's older requests as a place frees.
    expect(share.next()).toBe(asker)
    expect(share.next()).toBe(requests[0])
  })

  it("nobody's is taken when no peer waits past its share, or when the asker waits its share already, or from the asker's own peer", () => {
    // With the asker, three peers: a share of one place each, which x and y wait.
    const shared = fullLine(["x", "y"])
    expect(shared.share.displace(shared.of.z)).toBeUndefined()
    const atShare = fullLine(["x", "x", "x", "y"])
    expect(atShare.share.displace(atShare.of.y)).toBeDefined()
    const asker = fullLine(["x", "x", "x", "y"])
    asker.share.wait(new ShareRequest(asker.of.y, "y-more"))
    expect(asker.share.displace(asker.of.y)).toBeUndefined()
    const own = fullLine(["x", "x", "x", "x"])
    expect(own.share.displace(own.of.x)).toBeUndefined()
    expect(own.requests.every((request) => request.seat === SEAT_WAITING)).toBe(true)
    expect(own.share.displace(undefined)).toBeUndefined()
  })

  it("places fewer (an h2c app's SETTINGS) while the line is full: a peer now waiting past the smaller share gives way", () => {
    const { share, of } = fullLine(["x", "x", "y", "y"])
    // Half of 4 each (two peers): nobody waits past the share of 2.
    expect(share.share).toBe(2)
    expect(share.displace(of.y)).toBeUndefined()
    // The app allows 2 now: a share of 1, which x and y both wait past; the asker takes the newest of one of them.
    share.resize(2)
    const displaced = share.displace(of.z)
    expect(displaced?.name).toMatch(/^(x1|y3)$/)
    // Then the other, each down to its share of 1: the line as long as the places again.
    expect(share.displace(of.z)?.name).toMatch(/^(x1|y3)$/)
    expect([of.x.waiting, of.y.waiting, share.waitingCount]).toEqual([1, 1, 2])
    expect(share.displace(of.z)).toBeUndefined()
  })

  it("a new peer asking counts among the peers wanting places: the share is a third then, and the peer waiting most past it gives way", () => {
    const { share, of } = fullLine(["x", "x", "x", "y"])
    // x and y: a share of 2, which x waits past (the newest of its three goes), y does not.
    expect(share.displace(of.z)?.name).toBe("x2")
    share.wait(new ShareRequest(of.z, "z"))
    // Three peers now: a share of one place (4 / 3, rounded down); x waits 2, past it.
    expect([share.active, share.share]).toEqual([3, 1])
    expect(share.displace(new PoolPeers().of("10.0.0.4:1", undefined))?.name).toBe("x1")
  })

  it("a line that never empties (10,000 requests through it, 10 always waiting, two peers) keeps its size", () => {
    const { share, of } = fullLine([])
    const line = (share as unknown as { readonly waiting: ReadonlyArray<unknown> }).waiting
    const lineOf = (share as unknown as { readonly lines: Map<unknown, { readonly items: ReadonlyArray<unknown> }> }).lines
    let longest = 0
    for (let i = 0; i < 10; i++) share.wait(new ShareRequest(i % 2 === 0 ? of.x : of.y, `w${i}`))
    for (let i = 0; i < 10_000; i++) {
      const next = share.next()!
      share.leave(next)
      share.wait(new ShareRequest(i % 2 === 0 ? of.x : of.y, `n${i}`))
      longest = Math.max(longest, line.length, ...[...lineOf.values()].map((l) => l.items.length))
    }
    expect(share.waitingCount).toBe(10)
    expect(longest).toBeLessThan(2 * 1024 + 10)
  })

  it("requests ending where they wait (10,000, their deadlines) behind one that waits on, no place freed, leave no slots behind", () => {
    const { share, of } = fullLine(["x"])
    const line = (share as unknown as { readonly waiting: ReadonlyArray<unknown> }).waiting
    const lineOf = (share as unknown as { readonly lines: Map<unknown, { readonly items: ReadonlyArray<unknown> }> }).lines
    let longest = 0
    for (let i = 0; i < 10_000; i++) {
      const request = new ShareRequest(i % 2 === 0 ? of.x : of.y, `d${i}`)
      share.wait(request)
      share.leave(request)
      longest = Math.max(longest, line.length, ...[...lineOf.values()].map((l) => l.items.length))
    }
    expect([share.waitingCount, of.x.waiting, of.y.waiting]).toEqual([1, 1, 0])
    expect(longest).toBeLessThan(2 * 1024 + 10)
    // The one that waited on is still first.
    expect(share.next()?.name).toBe("x0")
  })
})
