// Sidecar A's connection to sidecar B's inbound listener evicted at B's connection cap (1,000,
// src/iip/server.ts evictUnfair) while A's POST runs on it: A's source (127.0.0.1) holds the most
// places (its mesh connection and one busy plain connection of the same address), every other
// place is held by one connection each of 999 other loopback sources, and a newcomer from one more
// source takes A's oldest. B drains it (PROTOCOL.md §11 "Evicted busy"): A's POST, running in B's
// app, still answers 200 (it was a 502 connection loss when B cut it), and the newcomer holds its
// place at once. The cap is not an option of the sidecar, so the places are really taken. While it
// drains, B's metrics count it: in the inbound open connections and channels (it is open, its
// channel busy) and in iip_mesh_inbound_evicted_draining_connections; once closed, in neither.
import type * as http from "node:http"
import { afterEach, describe, expect, it } from "vitest"
import { holdConnection } from "../support/heldConnections.ts"
import { Cleanup, deferred, frame, waitFor, withTimeout } from "../support/iipRaw.ts"
import type { MeshSession } from "../../src/mux/meshSession.ts"
import { parsePrometheusText, value } from "../support/prometheusText.ts"
import { call, type RunningSidecar, sidecarConfig, startApp, startSidecar } from "../support/sidecarHarness.ts"

const CAP = 1000

/** The loopback address of filler `i` (0-based): 127.0.1.1 on, one address each. */
const fillerAddress = (i: number): string => `127.0.${1 + Math.floor(i / 250)}.${1 + (i % 250)}`

/** B's inbound gauges from its metrics text: open connections and channels, and of them evicted and draining. */
const inboundGauges = async (b: RunningSidecar) => {
  const families = parsePrometheusText((await b.sidecar.telemetry.metrics.text()).body)
  return {
    connections: value(families, "iip_mesh_open_connections", { direction: "inbound" }),
    channels: value(families, "iip_mesh_open_channels", { direction: "inbound" }),
    evictedDraining: value(families, "iip_mesh_inbound_evicted_draining_connections")
  }
}

describe("a sidecar's busy connection evicted at its peer's connection cap", () => {
  let cleanup = new Cleanup()
  afterEach(async () => {
    await cleanup.run()
    cleanup = new Cleanup()
  })

  it("drains: the POST running on it still answers 200, and the newcomer gets its place", async () => {
    const got = new Map<string, () => void>()
    const release = deferred()
    cleanup.add(() => release.resolve())
    const app: http.RequestListener = (req, res) => {
      req.resume()
      const name = req.url ?? ""
      const reachedIt = got.get(name)
      // The fillers' first packet (a plain /echo) answers at once; the requests the test holds wait.
      if (reachedIt === undefined) return res.end("ok")
      reachedIt()
      void release.promise.then(() => res.end(`done ${name}`))
    }
    const reached = (name: string) => {
      const d = deferred()
      got.set(name, () => d.resolve())
      return d.promise
    }
    const appListener = await startApp(cleanup, app)
    const sessions: Array<MeshSession> = []
    const b = await startSidecar(cleanup, sidecarConfig({ service: "catalog", app: appListener.address, requestTimeoutMs: 20_000 }), undefined, {
      onInboundMeshConnection: (session) => sessions.push(session)
    })
    const a = await startSidecar(cleanup, sidecarConfig({ service: "store", requestTimeoutMs: 20_000, endpoints: { catalog: [{ address: b.inboundAddress, weight: 1 }] } }))
    const port = b.sidecar.inbound.port
    const slowReached = reached("/slow")
    const post = call(a.outboundPort, { method: "POST", path: "/slow", body: "payload", timeoutMs: 20_000 })
    await withTimeout(slowReached, 5000, "A's POST to reach B's app")
    expect(sessions).toHaveLength(1)
    const [fromA] = sessions
    // A's source's second place, busy too (a plain request B's app holds), so A's mesh (older) goes.
    const otherReached = reached("/other")
    const other = await holdConnection(cleanup, port, "127.0.0.1", "plain")
    other.socket.write(frame(1, "/other", 0, "x"))
    await withTimeout(otherReached, 5000, "the plain request to reach B's app")
    // Every other place: one connection of each of CAP - 2 other sources.
    for (let i = 0; i < CAP - 2; i++) await holdConnection(cleanup, port, fillerAddress(i), "plain")
    const newcomer = await holdConnection(cleanup, port, "127.0.9.1", "plain")
    expect(newcomer.closed).toBe(false)
    await waitFor(() => fromA!.goAwayAcknowledged, 5000, "A to answer the go-away")
    expect(fromA!.closed).toBe(false)
    // The CAP live places, and A's connection draining outside them with the channel its POST runs on
    // (the fillers' plain requests went on channel 0, which no gauge counts).
    const draining = await inboundGauges(b)
    expect(fromA!.peerChannelCount).toBeGreaterThanOrEqual(1)
    expect(draining.connections).toBe(CAP + 1)
    expect(draining.channels).toBeGreaterThanOrEqual(fromA!.peerChannelCount)
    expect(draining.evictedDraining).toBe(1)
    release.resolve()
    const answer = await post
    expect([answer.status, answer.body.toString()]).toEqual([200, "done /slow"])
    await waitFor(() => fromA!.closed, 5000, "the drained connection to close")
    expect(other.closed).toBe(false)
    const drained = await inboundGauges(b)
    expect(drained.evictedDraining).toBe(0)
    expect(drained.connections).toBeLessThanOrEqual(CAP)
  }, 60_000)
})
