// The arithmetic of one connection's share of A's budget for h2c request-body windows
// (src/sidecar/h2BodyCredit.ts), as outboundH2Session.ts (admit) and outboundH2Call.ts (room,
// take, release) use it; the wire behaviour is h2c-body-connection-share.test.ts's.
import { describe, expect, it } from "vitest"
import { BODY_WINDOW, BodyCredit, BodyShare, MAX_BODY_WINDOW } from "../../src/sidecar/h2BodyCredit.ts"
import { configDefaults } from "../../src/config/settings.ts"

const MiB = 1024 * 1024

describe("BodyCredit: one connection's share", () => {
  it("at the defaults a whole connection's first windows (--h2-max-streams of them) fit its share, one more is refused, another connection's are admitted", () => {
    const credit = new BodyCredit(configDefaults().outboundH2MaxHeldBodyBytes)
    const hog = new BodyShare()
    for (let i = 0; i < configDefaults().h2MaxStreams; i++) expect(credit.admit(hog)).toBe(true)
    expect(hog.granted).toBe(credit.share)
    expect(credit.admit(hog)).toBe(false)
    expect(credit.refused).toBe(1)
    expect(credit.admit(new BodyShare())).toBe(true)
    expect(credit.granted).toBe(credit.share + BODY_WINDOW)
  })

  it("a connection's bodies grow within half its share, counted apart from its first windows: its own new bodies still have the whole share; all comes back", () => {
    const credit = new BodyCredit(4 * MiB)
    const own = new BodyShare()
    const windows: Array<number> = []
    // Bodies that move: each grows while room says so.
    for (let i = 0; i < 8 && credit.admit(own); i++) {
      let window = BODY_WINDOW
      for (let extra = credit.room(own, window); extra > 0; extra = credit.room(own, window)) {
        credit.take(own, extra)
        window += extra
      }
      windows.push(window)
    }
    expect(own.grown).toBeLessThanOrEqual(credit.share / 2)
    expect(Math.max(...windows)).toBeLessThanOrEqual(MAX_BODY_WINDOW)
    expect(own.grown).toBeGreaterThan(0)
    // The whole share: first windows of the same connection (the grown bodies' own among them).
    let firsts = 0
    while (credit.admit(own)) firsts++
    expect((windows.length + firsts) * BODY_WINDOW).toBe(credit.share)
    expect(own.granted).toBe(credit.share + own.grown)
    for (const window of windows) credit.release(own, window)
    for (let i = 0; i < firsts; i++) credit.release(own, BODY_WINDOW)
    expect({ granted: credit.granted, own: own.granted, grown: own.grown }).toStrictEqual({ granted: 0, own: 0, grown: 0 })
  })

  it("a budget smaller than four first windows still admits one body per connection", () => {
    const credit = new BodyCredit(2 * BODY_WINDOW)
    const first = new BodyShare()
    expect(credit.admit(first)).toBe(true)
    expect(credit.admit(first)).toBe(false)
    expect(credit.admit(new BodyShare())).toBe(true)
    expect(credit.admit(new BodyShare())).toBe(false)
  })
})
