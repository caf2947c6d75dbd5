// The sidecar's endpoint registry gives all its clients one bound on `connect-failed` lines (10 a
// minute together): its clients dial per request (waitForReconnect false), so endpoints that keep
// failing logged a line per try, times the number of endpoints. Four endpoints, each a listener on
// 127.0.0.1 port 0 closing every connection it gets; requests until every one has failed several tries.
import { afterEach, describe, expect, it } from "vitest"
import { countingListener } from "../support/countingListener.ts"
import { Cleanup } from "../support/iipRaw.ts"
import { call, sidecarConfig, startSidecar } from "../support/sidecarHarness.ts"

describe("connect-failed lines of a sidecar whose endpoints all fail", () => {
  const cleanup = new Cleanup()
  afterEach(() => cleanup.run())

  it("are at most 10 over all endpoints, the tries counted on the listeners", async () => {
    const dead = await Promise.all([1, 2, 3, 4].map(() => countingListener(cleanup)))
    const events: Array<string> = []
    const store = await startSidecar(
      cleanup,
      sidecarConfig({ service: "store", endpoints: { catalog: dead.map((listener) => ({ address: `127.0.0.1:${listener.port}`, weight: 1 })) } }),
      (event) => void events.push(event)
    )
    const tries = () => dead.reduce((total, listener) => total + listener.connections(), 0)
    for (let i = 0; i < 200 && tries() < 20; i++) {
      const answer = await call(store.outboundPort, { headers: { host: "catalog" }, timeoutMs: 10_000 })
      expect(answer.status).toBeGreaterThanOrEqual(500)
    }
    expect(tries()).toBeGreaterThanOrEqual(20)
    expect(events.filter((event) => event === "connect-failed").length).toBeGreaterThan(0)
    expect(events.filter((event) => event === "connect-failed").length).toBeLessThanOrEqual(10)
  })
})
