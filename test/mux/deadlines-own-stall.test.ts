// The session's deadline heap (src/mux/deadlines.ts) when this process stalls right after its one
// timer was re-armed for an item nearly due. The heap re-arms lazily (a removed item leaves the
// timer armed; it fires, finds nothing due and re-arms for the new earliest), so the delay it is
// armed for is whatever is left of the earliest item's wait, down to 1 ms: no item's timeout. An
// item that came due during our stall must still wait the stall's lateness more (lateTimer.ts), not
// just those few ms: an answer that needs our process awake for more than one poll phase (a
// request body still to be written, a streamed answer waiting for our credit) would otherwise
// fail a call its peer could have answered in time. Real timers: the stall is a busy-wait.
import { describe, expect, it } from "vitest"
import { Deadlines, type Expiring } from "../../src/mux/deadlines.ts"
import { busyWait } from "../support/busyWait.ts"

interface Item extends Expiring {
  readonly name: string
}
const item = (name: string): Item => ({ name, deadlineSlot: -1, deadlineAt: 0 })

const stallMs = 800

describe("Deadlines when this process stalls", () => {
  it(`an item due during our ${stallMs} ms stall, the timer re-armed for it shortly before, waits the lateness more, not what was left of the armed delay`, async () => {
    let expiredAt = 0
    const deadlines = new Deadlines<Item>(() => (expiredAt = performance.now()))
    const answered = item("answered")
    deadlines.add(answered, 100)
    deadlines.add(item("pending"), 200)
    // Answered: the timer stays armed for 100 ms, fires with nothing due and re-arms for "pending", 100 ms ahead
    // (a first fire up to 100 ms late, on a loaded machine, still finds nothing due).
    deadlines.remove(answered)
    let wokeAt = 0
    setTimeout(() => {
      busyWait(stallMs)
      wokeAt = performance.now()
    }, 110)
    await new Promise<void>((resolve) => {
      const poll = setInterval(() => {
        if (expiredAt === 0) return
        clearInterval(poll)
        resolve()
      }, 10)
    })
    // Late by ~700 ms: "pending" (a 200 ms wait of its own) waits at least that more, not the 100 ms the timer was armed for.
    expect(wokeAt).toBeGreaterThan(0)
    expect(expiredAt - wokeAt).toBeGreaterThan(190)
    expect(deadlines.size).toBe(0)
  })
})
