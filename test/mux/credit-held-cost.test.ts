// What a peer's connection credit grant (PROTOCOL.md §13 `conncredit`) costs the sender while
// calls and streams wait for credit (src/mux/meshHeldCalls.ts, src/mux/meshCredit.ts). A peer may
// grant 1 byte at a time: a grant that lets nothing pass must not look at every held call, and a
// grant must not wake every stream waiting for credit when only the first can take any.
import { describe, expect, it } from "vitest"
import { OwnChannel } from "../../src/mux/meshChannels.ts"
import type { Call } from "../../src/mux/meshChannels.ts"
import { CreditWindow } from "../../src/mux/meshCredit.ts"
import { HeldCalls } from "../../src/mux/meshHeldCalls.ts"
import { SendWindow } from "../../src/mux/streams.ts"
import { emptyMeta } from "../../src/protocol/mesh.ts"

const KiB = 1024

/** A held call on `channel` whose channel the queue's scans are counted by. */
const countedCall = (channel: OwnChannel, looks: { count: number }): Call =>
  ({
    get channel() {
      looks.count++
      return channel
    }
  }) as unknown as Call

describe("the cost of a credit grant to the sender", () => {
  it("held calls that all wait for credit: a grant that lets none pass looks at none of them", () => {
    const credit = new CreditWindow(64 * KiB)
    credit.debit(64 * KiB)
    const held = new HeldCalls(Infinity, credit)
    const looks = { count: 0 }
    for (let i = 0; i < 1000; i++) {
      const channel = new OwnChannel(i + 1)
      held.hold(countedCall(channel, looks), "/x", Buffer.alloc(KiB), emptyMeta, 8192, 0)
    }
    looks.count = 0
    for (let grant = 0; grant < 100; grant++) {
      credit.add(1)
      expect(held.next()).toBeUndefined()
    }
    expect(looks.count).toBe(0)
    // Room for the first: it goes, in order.
    credit.add(KiB)
    expect(held.next()).toBeDefined()
  })

  it("a bodyless held call behind a body on its own channel: after one look, grants that change nothing look at none", () => {
    const credit = new CreditWindow(64 * KiB)
    credit.debit(64 * KiB)
    const held = new HeldCalls(Infinity, credit)
    const looks = { count: 0 }
    const channel = new OwnChannel(1)
    held.hold(countedCall(channel, looks), "/x", Buffer.alloc(KiB), emptyMeta, 8192, 0)
    for (let i = 0; i < 100; i++) held.hold(countedCall(channel, looks), "/y", Buffer.alloc(0), emptyMeta, 8192, 0)
    looks.count = 0
    expect(held.next()).toBeUndefined()
    const first = looks.count
    for (let grant = 0; grant < 100; grant++) {
      credit.add(1)
      expect(held.next()).toBeUndefined()
    }
    expect(looks.count).toBe(first)
    // A bodyless call on another channel passes the body waiting for credit.
    const other = new OwnChannel(2)
    const passing = countedCall(other, looks)
    held.hold(passing, "/z", Buffer.alloc(0), emptyMeta, 8192, 0)
    expect(held.next()?.call).toBe(passing)
  })

  it("a grant wakes the streams waiting for credit in order, only as many as it can serve", async () => {
    const credit = new CreditWindow(256 * KiB)
    const reserve = 64 * KiB
    expect(credit.takeNow(256 * KiB)).toBe(256 * KiB - reserve)
    let woken = 0
    const waits = Array.from({ length: 100 }, () => {
      const window = new SendWindow(KiB * KiB)
      return credit.waitWith(window, 16 * KiB).then(() => {
        woken++
        credit.takeNow(16 * KiB)
      })
    })
    // One byte above the reserve: the first stream can take it, no other.
    credit.add(1)
    await new Promise((resolve) => setImmediate(resolve))
    expect(woken).toBe(1)
    // 40 KiB more: the next three (16 KiB each) wake, in order.
    credit.add(40 * KiB)
    await new Promise((resolve) => setImmediate(resolve))
    expect(woken).toBe(4)
    credit.add(256 * KiB)
    await Promise.all(waits.slice(0, 16))
  })

  it("a woken stream that takes nothing (its window closed) passes its turn on: the room is not left to sleepers", async () => {
    const credit = new CreditWindow(256 * KiB)
    credit.takeNow(256 * KiB)
    const order: Array<string> = []
    const closing = credit.waitWith(new SendWindow(KiB), 16 * KiB).then(() => {
      order.push("closed, declines")
      credit.add(0)
    })
    const next = credit.waitWith(new SendWindow(KiB), 16 * KiB).then(() => {
      order.push("next")
      return credit.takeNow(16 * KiB)
    })
    credit.add(16 * KiB)
    await closing
    expect(await next).toBe(16 * KiB)
    expect(order).toStrictEqual(["closed, declines", "next"])
  })
})
