// When a receiver grants its connection credit back (CreditReturn, src/mux/meshCredit.ts, PROTOCOL.md
// §13): the releases of one tick go in one grant at the tick's end, however many and however the
// kernel split the reads; a release after that grant went gets a grant of its own (none is lost);
// far from the reserve, releases wait for a quarter of the credit.
import { describe, expect, it } from "vitest"
import { CreditReturn } from "../../src/mux/meshCredit.ts"

const KiB = 1024

/** The end of this tick: the callbacks queued before this one (a scheduled grant) have run. */
const tickEnd = (): Promise<void> => new Promise((resolve) => process.nextTick(resolve))

describe("a receiver's connection credit grants", () => {
  // Before (each release flushed at once near the reserve), 512 1-byte releases were 512 grants.
  it("512 1-byte releases in one tick, near the reserve: one grant of 512 at the tick's end", async () => {
    const grants: Array<number> = []
    const credit = new CreditReturn(64 * KiB, (bytes) => grants.push(bytes))
    credit.received(512)
    for (let i = 0; i < 512; i++) credit.released(1)
    expect(grants).toEqual([])
    await tickEnd()
    expect(grants).toEqual([512])
  })

  it("a release after the tick's grant went: granted in one more, nothing lost", async () => {
    const grants: Array<number> = []
    const credit = new CreditReturn(64 * KiB, (bytes) => grants.push(bytes))
    credit.received(3)
    credit.released(2)
    await tickEnd()
    credit.released(1)
    await tickEnd()
    expect(grants).toEqual([2, 1])
  })

  it("far from the reserve, releases wait for a quarter of the credit, then go in one grant", async () => {
    const grants: Array<number> = []
    const credit = new CreditReturn(1024 * KiB, (bytes) => grants.push(bytes))
    credit.received(256 * KiB)
    credit.released(256 * KiB - 1)
    await tickEnd()
    expect(grants).toEqual([])
    credit.released(1)
    await tickEnd()
    expect(grants).toEqual([256 * KiB])
  })
})
