// An IipClient redialling a server that keeps failing (a listener on 127.0.0.1 port 0 closing every
// connection it gets, so each attempt fails) logs `connect-failed` within a LogThrottle: without one
// an endpoint failing for hours logged a line per attempt, at back-off rate, times the number of
// endpoints. The default bound is per client; a throttle given in the options (as the sidecar's
// endpoint registry gives one to all its clients) bounds the lines of every client sharing it, and
// the first line after a window says how many were left out (suppressedBefore).
import { afterEach, describe, expect, it } from "vitest"
import { connectFailedThrottle } from "../../src/iip/client.ts"
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

  it("a server that starts failing has its first failure logged though clients sharing the throttle used up the window", async () => {
    // The registry's throttle, its window held open (the clock does not move): only the lines' order matters.
    const shared = connectFailedThrottle(true, () => 0)
    const old = await countingListener(cleanup)
    const lines: Array<Line> = []
    failingClient(old.port, lines, shared)
    await waitFor(() => old.connections() >= 30, 20_000, "30 failed attempts to the old server")
    const before = connectFailed(lines).length
    expect(before).toBeGreaterThan(0)
    const fresh = await countingListener(cleanup)
    failingClient(fresh.port, lines, shared)
    await waitFor(() => fresh.connections() >= 5, 20_000, "5 failed attempts to the new server")
    const ofFresh = connectFailed(lines).filter((line) => line.fields.address === `127.0.0.1:${fresh.port}`)
    // Its first failure, and none of its repeats while the old server's fill the window.
    expect(ofFresh).toHaveLength(1)
    expect(ofFresh[0]!.fields.failures).toBe(1)
    expect(connectFailed(lines).length).toBeLessThanOrEqual(10)
  })
})
