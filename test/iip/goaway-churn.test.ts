// Go-away games of a mesh server against the client (src/iip/client.ts), round three of the red
// team; a hand-played acceptor on 127.0.0.1:0 answers each connection's hello, then says go-away:
// - with its FIN, in the same write (`closing`, as when evicted at its cap, or a plain stop). Each
//   dial succeeded, so the back-off started over each time, and the client keeps a channel open
//   ahead even when idle: after one call it redialled in a tight loop for good (about 85 connections
//   a second from sidecar A after one request, a fifth of a core). A connection that ends before it
//   answered anything now counts for the back-off as a failed dial does, until a call is answered;
// - and never closes, nor answers. A drained connection is never used again, yet the client kept
//   each one open for as long as the peer did: one more socket per call, for good (40 calls, 41
//   sockets). It now closes one once nothing on it is waited for.
import { afterEach, beforeEach, describe, expect, it } from "vitest"
import { Cleanup, waitFor } from "../support/iipRaw.ts"
import { goAwayAtOnce, settle, startClient } from "../support/meshTest.ts"

const typedErrors = ["ConnectionClosed", "RequestTimeout", "ConnectFailed", "RemoteError"]

describe("a mesh server that goes away on every connection at once", () => {
  let cleanup: Cleanup
  beforeEach(() => {
    cleanup = new Cleanup()
  })
  afterEach(() => cleanup.run())

  it.each([true, false])("closing: %s: an idle client redials with back-off, not in a loop (6 connections take at least half the back-off's sum)", async (closing) => {
    const server = await goAwayAtOnce(cleanup, closing)
    const client = startClient(cleanup, server.port, { reconnect: { baseMs: 100, maxMs: 1000 } })
    // One call starts the first connection; it ends in a typed error, never an answer.
    const outcome = await settle(client.call("/x", "hi", { timeoutMs: 2000 }))
    expect(outcome.ok ? "answered" : (outcome.error as { _tag: string })._tag).toBeOneOf(typedErrors)
    // Then the client is idle. Back-off 100 ms doubling to 1 s, jittered to 50-100 %: the 2nd to
    // 6th dials wait at least 50 + 100 + 200 + 400 + 500 ms. In a loop they took ~70 ms.
    await waitFor(() => server.accepts.length >= 6, 15_000, "six connections")
    const spread = server.accepts[5]! - server.accepts[0]!
    expect(spread).toBeGreaterThanOrEqual(1000)
  })

  it("without its FIN, answering nothing: the client closes each drained connection once no call on it is waited for (none left open)", async () => {
    const server = await goAwayAtOnce(cleanup, false, false)
    const client = startClient(cleanup, server.port, { reconnect: { baseMs: 1, maxMs: 1 } })
    for (let i = 0; i < 10; i++) {
      const outcome = await settle(client.call("/x", "hi", { timeoutMs: 200 }))
      expect(outcome.ok ? "answered" : (outcome.error as { _tag: string })._tag).toBeOneOf(typedErrors)
    }
    expect(server.accepts.length).toBeGreaterThanOrEqual(2)
    // The server reads each socket (its end shows): what the client keeps open stays open.
    await waitFor(() => server.sockets.size === 0, 5000, `the client to close its drained connections (${server.sockets.size} open)`)
  })
})
