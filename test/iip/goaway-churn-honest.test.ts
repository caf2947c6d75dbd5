// An honest peer restarted gracefully, again and again, while this client carries no call to it
// (src/iip/client.ts `churned`): each restart drains the client's idle connection, which answered
// nothing, and the red team's back-off for connections that end unused (against a peer that goes
// away right after its hello: test/iip/goaway-churn.test.ts) counted each as a failed dial. The
// count only cleared on an answer, so after five restarts a second apart the first call waited
// 400-800 ms for the redial's back-off before anything was dialled (main: at once). A connection
// that lived as long as the back-off's cap is not churn: such a peer is redialled at most that
// often anyway.
import * as Effect from "effect/Effect"
import { afterEach, beforeEach, describe, expect, it } from "vitest"
import type { IipServer } from "../../src/iip/server.ts"
import { Cleanup } from "../support/iipRaw.ts"
import { settle, startClient, startServer } from "../support/meshTest.ts"

const maxMs = 800

const serve = (cleanup: Cleanup, port = 0): Promise<IipServer> =>
  startServer(cleanup, { port }).then((server) => {
    server.handle("/x", () => "ok")
    return server
  })

describe("an honest peer restarted while the client is idle", () => {
  let cleanup: Cleanup
  beforeEach(() => {
    cleanup = new Cleanup()
  })
  afterEach(() => cleanup.run())

  it("five graceful restarts a back-off cap apart do not hold the next call back", async () => {
    let server = await serve(cleanup)
    const port = server.address.port
    const client = startClient(cleanup, port, { reconnect: { baseMs: 100, maxMs } })
    expect(await client.mode()).toBe("mesh")
    for (let round = 0; round < 5; round++) {
      // The time between restarts (the scenario, not a wait for an event): the connection up now
      // lives a back-off cap before its peer drains it.
      await new Promise((resolve) => setTimeout(resolve, maxMs + 100))
      await Effect.runPromise(server.drain(2000))
      await server.close()
      server = await serve(cleanup, port)
      // The client reconnects unasked (a channel is kept open ahead) or on this; no call is answered.
      if (round < 4) expect(await client.mode(5000)).toBe("mesh")
    }
    const started = performance.now()
    const outcome = await settle(client.call("/x", "hi", { timeoutMs: 300 }))
    expect(outcome.ok ? "answered" : String(outcome.error)).toBe("answered")
    expect(performance.now() - started).toBeLessThan(300)
  })
})
