// A load-balance client's backends share one bound on `connect-failed` lines (10 a minute
// together), as a sidecar's endpoints do: backends that keep failing logged a line per try each.
// Four backends, each a listener on 127.0.0.1 port 0 closing every connection it gets; calls
// until 20 tries reached them.
import { afterEach, describe, expect, it } from "vitest"
import { countingListener } from "../support/countingListener.ts"
import { Cleanup } from "../support/iipRaw.ts"
import { startLb } from "./support.ts"

describe("connect-failed lines of a load-balance client whose backends all fail", () => {
  const cleanup = new Cleanup()
  afterEach(() => cleanup.run())

  it("are at most 10 over all backends, the tries counted on the listeners", async () => {
    const dead = await Promise.all([1, 2, 3, 4].map(() => countingListener(cleanup)))
    const events: Array<string> = []
    const lb = startLb(cleanup, { backends: dead.map((listener) => `127.0.0.1:${listener.port}#1`).join(","), client: { log: (event) => void events.push(event) } })
    const tries = () => dead.reduce((total, listener) => total + listener.connections(), 0)
    for (let i = 0; i < 200 && tries() < 20; i++) await lb.call("/x", "x", { timeoutMs: 10_000 }).catch(() => undefined)
    expect(tries()).toBeGreaterThanOrEqual(20)
    expect(events.filter((event) => event === "connect-failed").length).toBeGreaterThan(0)
    expect(events.filter((event) => event === "connect-failed").length).toBeLessThanOrEqual(10)
  })
})
