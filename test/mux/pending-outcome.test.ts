// PendingOutcome (src/mux/request.ts): the inbound sidecar's answer without a promise chain. The
// first settle counts; the session's listener runs in a microtask after it (never inside the code
// that settled, so a socket the answer came on is released first); awaiting it works too.
import { describe, expect, it } from "vitest"
import { failure, PendingOutcome } from "../../src/mux/request.ts"

describe("PendingOutcome", () => {
  it("tells its listener the first outcome once, in a microtask after the settle", async () => {
    const pending = new PendingOutcome()
    const seen: Array<unknown> = []
    pending.onSettled((outcome) => seen.push(outcome))
    const first = Buffer.from("first")
    pending.settle(first)
    pending.settle(Buffer.from("second"))
    expect(seen).toStrictEqual([])
    await Promise.resolve()
    expect(seen).toStrictEqual([first])
    await Promise.resolve()
    expect(seen).toHaveLength(1)
  })

  it("a listener added after the settle still hears it, in a microtask", async () => {
    const pending = new PendingOutcome()
    const outcome = failure("bad_request", "no", false)
    pending.settle(outcome)
    const seen: Array<unknown> = []
    pending.onSettled((value) => seen.push(value))
    expect(seen).toStrictEqual([])
    await Promise.resolve()
    expect(seen).toStrictEqual([outcome])
  })

  it("can be awaited beside the session's listener", async () => {
    const pending = new PendingOutcome()
    const seen: Array<unknown> = []
    pending.onSettled((value) => seen.push(value))
    const awaited = (async () => await pending)()
    const body = Buffer.from("x")
    pending.settle(body)
    expect(await awaited).toBe(body)
    expect(seen).toStrictEqual([body])
  })
})
