// A peer sidecar that goes away right after its hello on every connection (round three of the red
// team): sidecar A dials it for one request, then is idle. Each dial succeeded, so A's client for
// that endpoint started its back-off over each time and, keeping a channel open ahead, redialled it
// in a loop for good (from the CLI: 438 connections and 1.1 s of CPU in 5 s after one request). Now
// a connection that ends before it answered anything counts as a failed dial (src/iip/client.ts;
// the library's own test: test/iip/goaway-churn.test.ts). The calling app gets a 502 or, retried within its deadline, a 504.
import { afterEach, beforeEach, describe, expect, it } from "vitest"
import { Cleanup, waitFor } from "../support/iipRaw.ts"
import { goAwayAtOnce } from "../support/meshTest.ts"
import { call, sidecarConfig, startSidecar } from "../support/sidecarHarness.ts"

describe("a peer that goes away on every connection right after its hello", () => {
  let cleanup: Cleanup
  beforeEach(() => {
    cleanup = new Cleanup()
  })
  afterEach(() => cleanup.run())

  it("is redialled with back-off while A is idle, not in a loop; each request ends in a 502 or 504", async () => {
    const { port, accepts } = await goAwayAtOnce(cleanup, true)
    const a = await startSidecar(cleanup, sidecarConfig({ service: "shop", endpoints: { rogue: [{ address: `127.0.0.1:${port}`, weight: 1 }] }, tracing: false, requestTimeoutMs: 3000 }))
    const answer = await call(a.outboundPort, { headers: { host: "rogue" } })
    // Retried on new connections while the deadline lasts: a 502 (connection lost) or the 504.
    expect([502, 504]).toContain(answer.status)
    expect(answer.headers["x-iip-mesh-error"]).toMatch(/^outbound; reason=(connection_lost|deadline)$/)
    // Idle from here. The client's back-off (100 ms doubling, jittered to 50-100 %) spaces five
    // more dials by at least 50 + 100 + 200 + 400 ms; in the loop they took ~60 ms.
    const from = accepts.length
    await waitFor(() => accepts.length >= from + 5, 15_000, "five more dials")
    expect(accepts[from + 4]! - accepts[from]!).toBeGreaterThanOrEqual(600)
    expect([502, 504]).toContain((await call(a.outboundPort, { headers: { host: "rogue" } })).status)
  })
})
