// The peers' share (peerShare.ts) against a model under random operations: requests of a few peers
// ask (take a free place, else wait), end where they hold or wait, the places change (an h2c app's
// SETTINGS), a full line displaces, and looks (fake timers) take back paused answers. After each, every
// peer's held and waiting counts are the model's, none negative; `active` is the number of peers
// with either; the share is the places over them (rounded down, at least one); and every request
// ends in exactly one way (ended, taken back or displaced, never two); only a paused answer past its
// peer's share is taken back.
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest"
import { PeerShare, RECLAIM_STALL_MS, SEAT_HELD, SEAT_NONE, SEAT_WAITING } from "../../src/sidecar/peerShare.ts"
import { PoolPeers } from "../../src/sidecar/poolPeers.ts"
import { ShareRequest } from "../support/shareRequest.ts"

describe("the share against a model", () => {
  beforeEach(() => {
    vi.useFakeTimers({ toFake: ["setTimeout", "clearTimeout", "performance"] })
  })
  afterEach(() => {
    vi.useRealTimers()
  })

  it.each([1, 2, 3])("20,000 random operations (seed %i) keep the counts, the active peers and the share", (seed0) => {
    let seed = seed0
    const rand = (n: number) => {
      seed = (seed * 1_103_515_245 + 12_345) % 2 ** 31
      return seed % n
    }
    let places = 8
    const held = new Set<ShareRequest>()
    const waiting = new Set<ShareRequest>()
    const ends = new Map<ShareRequest, number>()
    const ended = (request: ShareRequest) => ends.set(request, (ends.get(request) ?? 0) + 1)
    const share = new PeerShare<ShareRequest>(places, {
      holders: () => [...held],
      takeBack: (request, count) => {
        // Only a place past its peer's share, of an answer paused (waiting on its reader).
        expect(count).toBeGreaterThan(share.share)
        expect(request.paused).toBe(true)
        held.delete(request)
        ended(request)
      },
      reclaimed: () => {}
    })
    const registry = new PoolPeers()
    const peers = Array.from({ length: 6 }, (_, i) => registry.of(`10.0.0.${i + 1}:1`, undefined))
    const fill = () => {
      while (held.size < places) {
        const next = share.next()
        if (next === undefined) break
        waiting.delete(next)
        held.add(next)
      }
    }
    let n = 0
    let displaced = 0
    for (let op = 0; op < 20_000; op++) {
      const kind = rand(100)
      if (kind < 40) {
        const request = new ShareRequest(peers[rand(peers.length)]!, `r${n++}`)
        if (held.size < places) {
          share.hold(request)
          held.add(request)
        } else if (waiting.size >= places) {
          const out = share.displace(request.peer)
          if (out === undefined) {
            ended(request)
            continue
          }
          waiting.delete(out)
          ended(out)
          displaced++
          share.wait(request)
          waiting.add(request)
        } else {
          share.wait(request)
          waiting.add(request)
        }
      } else if (kind < 70 && held.size > 0) {
        const request = [...held][rand(held.size)]!
        held.delete(request)
        share.leave(request)
        ended(request)
        fill()
      } else if (kind < 80 && waiting.size > 0) {
        const request = [...waiting][rand(waiting.size)]!
        waiting.delete(request)
        share.leave(request)
        ended(request)
      } else if (kind < 95) {
        for (const request of held) if (rand(3) === 0 && !request.paused) (request.paused = true), (request.pausedAt = performance.now())
        vi.advanceTimersByTime(RECLAIM_STALL_MS / 2)
        fill()
      } else {
        places = 2 + rand(10)
        share.resize(places)
        fill()
      }
      for (const request of held) expect(request.seat).toBe(SEAT_HELD)
      for (const request of waiting) expect(request.seat).toBe(SEAT_WAITING)
      let active = 0
      for (const peer of peers) {
        const h = [...held].filter((r) => r.peer === peer).length
        const w = [...waiting].filter((r) => r.peer === peer).length
        expect([peer.held, peer.waiting]).toEqual([h, w])
        if (h + w > 0) active++
      }
      expect(share.active).toBe(active)
      expect(share.share).toBe(Math.max(1, Math.floor(places / Math.max(1, active))))
      expect(share.waitingCount).toBe(waiting.size)
    }
    // Each way out was taken, many times.
    expect([share.shareReclaimed > 50, share.sharePassed > 50, displaced > 50]).toEqual([true, true, true])
    for (const [request, count] of ends) {
      expect(count, request.name).toBe(1)
      expect(request.seat).toBe(SEAT_NONE)
    }
  })
})
