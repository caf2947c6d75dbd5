// An IipClient redialling a server that keeps failing (a listener on 127.0.0.1 port 0 closing every
// connection it gets, so each attempt fails) logs `connect-failed` within a LogThrottle: without one
// an endpoint failing for hours logged a line per attempt, at back-off rate, times the number of
// endpoints. The default bound is per client; a throttle given in the options (as the sidecar's
// endpoint registry gives one to all its clients) bounds the lines of every client sharing it, and
// the first line after a window says how many were left out (suppressedBefore).
import { afterEach, describe, expect, it } from "vitest"
import { LogThrottle } from "../../src/iip/log.ts"
import { countingListener } from "../support/countingListener.ts"
import { Cleanup, waitFor } from "../support/iipRaw.ts"
import { settle, startClient } from "../support/meshTest.ts"

type Line = { readonly event: string; readonly fields: Record<string, unknown> }

describe("connect-failed lines of a client redialling a failing server", () => {
  const cleanup = new Cleanup()
  afterEach(() => cleanup.run())

  /** A client of `port` that redials at once (1-2 ms back-off) while a call waits; its lines in `lines`. */
  const failingClient = (port: number, lines: Array<Line>, connectFailedLines?: LogThrottle) => {
    const client = startClient(cleanup, port, {
      maxConnections: 1,
      keepAlive: false,
      reconnect: { baseMs: 1, maxMs: 2 },
      log: (event, fields) => void lines.push({ event, fields: { ...fields } }),
      ...(connectFailedLines === undefined ? {} : { connectFailedLines })
    })
    void settle(client.call("/x", "x", { timeoutMs: 60_000 }))
    return client
  }

  const connectFailed = (lines: ReadonlyArray<Line>) => lines.filter((line) => line.event === "connect-failed")

  it("a client alone logs at most 10 lines a minute however many attempts fail", async () => {
    const server = await countingListener(cleanup)
    const lines: Array<Line> = []
    failingClient(server.port, lines)
    await waitFor(() => server.connections() >= 50, 20_000, "50 failed attempts")
    expect(connectFailed(lines).length).toBeGreaterThan(0)
    expect(connectFailed(lines).length).toBeLessThanOrEqual(10)
  })

  it("clients sharing a throttle log within it together; the first line of the next window counts the lines left out", async () => {
    let nowMs = 0
    const shared = new LogThrottle(3, 60_000, () => nowMs)
    const servers = [await countingListener(cleanup), await countingListener(cleanup)]
    const lines: Array<Line> = []
    for (const server of servers) failingClient(server.port, lines, shared)
    await waitFor(() => servers.every((server) => server.connections() >= 20), 20_000, "20 failed attempts to each server")
    expect(connectFailed(lines)).toHaveLength(3)
    nowMs = 60_000
    await waitFor(() => connectFailed(lines).length > 3, 20_000, "a line in the next window")
    const next = connectFailed(lines)[3]!
    expect(next.fields.suppressedBefore).toBeGreaterThanOrEqual(40 - 3 - 2)
    expect(next.fields.failures).toBeGreaterThan(1)
  })
})
