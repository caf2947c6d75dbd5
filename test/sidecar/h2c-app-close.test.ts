// B's stop against an h2c app that never answers (appH2.ts's close): the inbound side drains within
// its drain timeout, then the app leg closes its sessions and destroys them, with their sockets,
// whatever the app does. Before, an app that took the connection and never sent a byte (no
// SETTINGS, no FIN) held the stop for ever: node's session.close() ends the socket and waits for the
// app's FIN before its 'close', even after destroy(). This failed (the stop did not end in 20 s).
import { afterEach, beforeEach, describe, expect, it } from "vitest"
import { startRawH2App } from "../support/h2Raw.ts"
import { Cleanup, startRawServer, waitFor, withTimeout } from "../support/iipRaw.ts"
import { call, LOOPBACK, type RunningSidecar, sidecarConfig, startSidecar } from "../support/sidecarHarness.ts"

/** B in front of the app at `port` (drain timeout 1 s), A in front of B; a call through them that may wait 120 s: B and the call's answer. */
const callThrough = async (cleanup: Cleanup, port: number) => {
  const b = await startSidecar(cleanup, sidecarConfig({ service: "inventory", app: `${LOOPBACK}:${port}`, appProtocol: "h2c", tracing: false, drainTimeoutMs: 1000 }))
  const a = await startSidecar(cleanup, sidecarConfig({ service: "store", tracing: false, requestTimeoutMs: 120_000, endpoints: { inventory: [{ address: b.inboundAddress, weight: 1 }] } }))
  return { b, answer: call(a.outboundPort, { method: "GET", path: "/slow", headers: { host: "inventory", "x-iip-timeout-ms": "120000" } }) }
}

/** B's stop ends (a bound far past its 1 s drain, far short of the call's 120 s), and the call fails rather than hang. */
const stopEnds = async (b: RunningSidecar, answer: Promise<{ readonly status: number }>) => {
  await withTimeout(b.stop(), 20_000, "B's stop")
  expect((await withTimeout(answer, 20_000, "the call's end")).status).toBeGreaterThanOrEqual(500)
}

describe("B's stop against an h2c app that never answers", () => {
  let cleanup: Cleanup
  beforeEach(() => {
    cleanup = new Cleanup()
  })
  afterEach(() => cleanup.run())

  it("an app that takes the connection and never sends a byte does not hold the stop", async () => {
    const silent = await startRawServer(cleanup, () => {})
    const { b, answer } = await callThrough(cleanup, silent.port)
    await waitFor(() => silent.sockets.size === 1, 10_000, "B's connection to the app")
    await stopEnds(b, answer)
    // Its connection is closed: the app, reading now, sees its end.
    for (const socket of silent.sockets) socket.resume()
    await waitFor(() => silent.sockets.size === 0, 10_000, "B's connection to the app to close")
  }, 60_000)

  it("an app that takes the request and never answers it does not hold the stop", async () => {
    const requests: Array<number> = []
    const silent = await startRawH2App(cleanup, (_socket, stream) => void requests.push(stream))
    const { b, answer } = await callThrough(cleanup, silent.port)
    await waitFor(() => requests.length === 1, 10_000, "the app to get the request")
    await stopEnds(b, answer)
  }, 60_000)
})
