// The IIP server's connection cap (src/iip/server.ts, `maxConnections`) shared between sources
// once every connection has proven itself (a whole packet read). Before, a connection that had
// read one packet kept its place for good: one host (mTLS off or permissive; or one pod with a
// valid certificate) opening `maxConnections` connections, each sending one hello or request and
// kept alive, had every honest sidecar that dialled afterwards refused for as long as it liked.
// Now a newcomer whose source (its address; IPv6: its prefix) would still hold fewer places than
// the source holding the most takes one of that source's places: its connection idle longest, one
// with a request in flight only when none of those looked at is idle (its requests then end as a
// connection loss). Two loopback sources: 127.0.0.2 (the hog) and 127.0.0.1 (the honest peer).
import * as net from "node:net"
import * as tls from "node:tls"
import { afterEach, beforeAll, beforeEach, describe, expect, it } from "vitest"
import type { WorkloadCredentials } from "../../src/identity/credentials.ts"
import { spiffeIdOfCertificate } from "../../src/identity/spiffe.ts"
import { IipClient } from "../../src/iip/client.ts"
import type { IncomingRequest } from "../../src/iip/server.ts"
import type { ServerTlsOptions } from "../../src/iip/tls.ts"
import { type Held, holdConnection } from "../support/heldConnections.ts"
import { Cleanup, frame, waitFor, withTimeout } from "../support/iipRaw.ts"
import { collectLog, type LogEvent, settle, startClient, startServer } from "../support/meshTest.ts"
import { makeTestPki } from "../support/testPki.ts"

const CAP = 8
const HOG = "127.0.0.2"
const SERVER = "spiffe://iip-mesh.local/svc/server"
const HOG_ID = "spiffe://iip-mesh.local/svc/hog"
const HONEST_ID = "spiffe://iip-mesh.local/svc/honest"

const holdMany = async (cleanup: Cleanup, port: number, count: number, localAddress: string, mode: "plain" | "mesh", credentials?: WorkloadCredentials) => {
  const held: Array<Held> = []
  for (let i = 0; i < count; i++) held.push(await holdConnection(cleanup, port, localAddress, mode, credentials))
  return held
}

const open = (held: ReadonlyArray<Held>) => held.filter((h) => !h.closed).length
const evictions = (events: ReadonlyArray<LogEvent>) => events.filter((e) => e.event === "connection-evicted")

/** A handler that answers only once its connection goes (recording why) or the test lets it. */
const holding = () => {
  const aborted: Array<string> = []
  let started = 0
  const handler = (request: IncomingRequest) =>
    new Promise<Uint8Array>((resolve) => {
      started++
      request.signal.addEventListener("abort", () => {
        aborted.push(String(request.signal.reason))
        resolve(new Uint8Array())
      })
    })
  return { handler, aborted, started: () => started }
}

describe("places at the connection cap shared between sources", () => {
  let cleanup: Cleanup
  beforeEach(() => {
    cleanup = new Cleanup()
  })
  afterEach(() => cleanup.run())

  const serve = async (options: Parameters<typeof startServer>[1] = {}) => {
    const log = collectLog()
    const held = holding()
    const server = await startServer(cleanup, { maxConnections: CAP, log: log.log, ...options })
    server.handle("/echo", (request) => request.data).handle("/hold", held.handler)
    return { server, events: log.events, held }
  }

  for (const mode of ["plain", "mesh"] as const) {
    it(`${mode}: one source holding every place with proven connections makes way for another source's peer, down to its fair share`, async () => {
      const { server, events } = await serve()
      const hog = await holdMany(cleanup, server.address.port, CAP, HOG, mode)
      expect(server.connectionCount).toBe(CAP)
      const honest = startClient(cleanup, server.address.port, { mesh: mode === "mesh", maxConnections: 1 })
      expect((await honest.call("/echo", "honest")).toString()).toBe("honest")
      await waitFor(() => open(hog) === CAP - 1, 5000, "one hog connection to be evicted")
      const evicted = evictions(events)
      expect(evicted).toHaveLength(1)
      expect(String(evicted[0]!.fields["remote"])).toMatch(/^127\.0\.0\.2:/)
      expect(String(evicted[0]!.fields["reason"])).toContain("fair share")
      // More sources, one connection each: each takes a place of the hog's while it holds more than one more than they do.
      const others = []
      for (let i = 3; i < 3 + CAP - 2; i++) others.push(await holdConnection(cleanup, server.address.port, `127.0.0.${i}`, mode))
      await waitFor(() => open(hog) === 1, 5000, "the hog to be down to one place")
      expect(open(others)).toBe(CAP - 2)
      // Every source holds one now: a newcomer from yet another is refused, nobody is evicted for it.
      const late = net.connect({ host: "127.0.0.1", port: server.address.port, localAddress: "127.0.0.20" })
      cleanup.add(() => late.destroy())
      late.on("error", () => {})
      await withTimeout(new Promise((resolve) => late.once("close", resolve)), 5000, "the late newcomer to be refused")
      expect(events.some((e) => e.event === "connection-refused")).toBe(true)
      expect(open(hog)).toBe(1)
      expect(open(others)).toBe(CAP - 2)
      expect((await honest.call("/echo", "still")).toString()).toBe("still")
    }, 30_000)
  }

  it("many sources holding one place each: a newcomer from another is refused, nobody evicted", async () => {
    const { server, events } = await serve()
    const held = []
    for (let i = 2; i < 2 + CAP; i++) held.push(await holdConnection(cleanup, server.address.port, `127.0.0.${i}`, "plain"))
    const client = startClient(cleanup, server.address.port, { mesh: false, maxConnections: 1, connectTimeoutMs: 2000 })
    const result = await settle(client.call("/echo", "x", { timeoutMs: 3000 }))
    expect(result.ok).toBe(false)
    expect(open(held)).toBe(CAP)
    expect(evictions(events)).toEqual([])
    expect(events.some((e) => e.event === "connection-refused")).toBe(true)
  }, 30_000)

  it("a connection that proved nothing still makes way first: the hog's proven ones keep their places", async () => {
    const { server, events } = await serve()
    const hog = await holdMany(cleanup, server.address.port, CAP - 1, HOG, "plain")
    const silent = net.connect({ host: "127.0.0.1", port: server.address.port, localAddress: "127.0.0.3" })
    cleanup.add(() => silent.destroy())
    silent.on("error", () => {})
    let silentClosed = false
    silent.once("close", () => (silentClosed = true))
    await waitFor(() => server.connectionCount === CAP, 5000, "the silent connection to be held")
    const honest = startClient(cleanup, server.address.port, { mesh: false, maxConnections: 1 })
    expect((await honest.call("/echo", "honest")).toString()).toBe("honest")
    await waitFor(() => silentClosed, 5000, "the silent connection to be evicted")
    expect(open(hog)).toBe(CAP - 1)
    expect(evictions(events).map((e) => e.fields["reason"])).toEqual(["no whole packet at the connection limit"])
  }, 30_000)

  it("the hog's idle connection goes, not one with a request in flight", async () => {
    const { server, held: handler } = await serve()
    const hog = await holdMany(cleanup, server.address.port, CAP, HOG, "plain")
    // Every hog connection but the fifth has a request the handler holds.
    hog.forEach((h, i) => i !== 4 && h.socket.write(frame(1, "/hold", 0, "wait")))
    await waitFor(() => handler.started() === CAP - 1, 5000, "the held requests to reach the handler")
    const honest = startClient(cleanup, server.address.port, { mesh: false, maxConnections: 1 })
    expect((await honest.call("/echo", "honest")).toString()).toBe("honest")
    await waitFor(() => hog[4]!.closed, 5000, "the idle hog connection to be evicted")
    expect(open(hog)).toBe(CAP - 1)
    expect(handler.aborted).toEqual([])
  }, 30_000)

  it("a hog with a request in flight on every connection: one connection is cut, its request ends as a connection loss, logged", async () => {
    const { server, events, held: handler } = await serve()
    const hog = await holdMany(cleanup, server.address.port, CAP, HOG, "plain")
    for (const h of hog) h.socket.write(frame(1, "/hold", 0, "wait"))
    await waitFor(() => handler.started() === CAP, 5000, "the held requests to reach the handler")
    const answeredBefore = hog.map((h) => h.answered)
    const honest = startClient(cleanup, server.address.port, { mesh: false, maxConnections: 1 })
    expect((await honest.call("/echo", "honest")).toString()).toBe("honest")
    await waitFor(() => open(hog) === CAP - 1 && handler.aborted.length === 1, 5000, "one busy hog connection to be cut")
    const cut = hog.findIndex((h) => h.closed)
    // Its request got no answer: the hog saw the connection go, the handler its cancellation.
    expect(hog[cut]!.answered).toBe(answeredBefore[cut])
    expect(handler.aborted[0]).toContain("evicted")
    const evicted = evictions(events)
    expect(evicted).toHaveLength(1)
    expect(String(evicted[0]!.fields["reason"])).toContain("in flight")
  }, 30_000)

  describe("with TLS", () => {
    let pki: Awaited<ReturnType<typeof makeTestPki>>
    let server: WorkloadCredentials
    beforeAll(async () => {
      pki = await makeTestPki("places")
      server = await pki.credentials(SERVER)
    })
    const tlsOptions = (acceptPlain: boolean): ServerTlsOptions => ({
      credentials: { key: server.privateKeyPem, cert: server.certificateChainPem, ca: server.trustBundlePem },
      requireClientCertificate: true,
      acceptPlain,
      identifyPeer: (certificate) => spiffeIdOfCertificate(certificate)?.text ?? { reason: "peer_identity", message: "no SPIFFE ID" }
    })
    const mtlsClient = (port: number, credentials: WorkloadCredentials) => {
      const context = tls.createSecureContext({ key: credentials.privateKeyPem, cert: credentials.certificateChainPem, ca: credentials.trustBundlePem })
      const client = new IipClient({ host: "127.0.0.1", port, maxConnections: 1, log: () => {}, tls: {
          secureContext: () => context,
          requireAlpn: true,
          checkPeer: (certificate) => (spiffeIdOfCertificate(certificate)?.text === SERVER ? undefined : { reason: "peer_identity", message: "not the server" })
        }
      })
      cleanup.add(() => client.close())
      return client
    }

    it("mTLS: a pod with a valid certificate holding every place makes way for another identity's", async () => {
      const { server: iip, events } = await serve({ tls: tlsOptions(false) })
      const hog = await holdMany(cleanup, iip.address.port, CAP, HOG, "mesh", await pki.credentials(HOG_ID))
      expect(iip.connectionCount).toBe(CAP)
      const honest = mtlsClient(iip.address.port, await pki.credentials(HONEST_ID))
      expect((await honest.call("/echo", "honest")).toString()).toBe("honest")
      await waitFor(() => open(hog) === CAP - 1, 5000, "one hog connection to be evicted")
      const evicted = evictions(events)
      expect(evicted).toHaveLength(1)
      expect(evicted[0]!.fields["identity"]).toBe(HOG_ID)
    }, 30_000)

    // A TLS newcomer owed a place takes the one past the limit and claims a hog's connection only
    // once its handshake is done: sockets that never finish one (no certificate needed to open
    // them) would otherwise close a proven connection each, and have its peer redial and handshake.
    it("mTLS: handshakes begun and never finished close none of the proven connections; a verified newcomer then gets its place", async () => {
      const { server: iip, events } = await serve({ tls: tlsOptions(false) })
      const hog = await holdMany(cleanup, iip.address.port, CAP, HOG, "mesh", await pki.credentials(HOG_ID))
      const stalled: Array<net.Socket> = []
      let stalledClosed = 0
      for (let i = 0; i < 5; i++) {
        const socket = net.connect({ host: "127.0.0.1", port: iip.address.port, localAddress: "127.0.0.3" })
        cleanup.add(() => socket.destroy())
        socket.on("error", () => {})
        socket.once("close", () => stalledClosed++)
        await withTimeout(new Promise((resolve) => socket.once("connect", resolve)), 5000, "the stalled socket to connect")
        // A TLS record header announcing a 512-byte handshake, then one byte of it.
        socket.write(Buffer.from([0x16, 0x03, 0x01, 0x02, 0x00, 0x01]))
        stalled.push(socket)
      }
      // Each runs its handshake in one of the places past the limit.
      await waitFor(() => events.filter((e) => e.event === "connection-refused").length === 0 && iip.connectionCount === CAP, 5000, "the stalled sockets to be held")
      expect(stalledClosed).toBe(0)
      expect(open(hog)).toBe(CAP)
      expect(evictions(events).every((e) => String(e.fields["reason"]).startsWith("handshake unfinished"))).toBe(true)
      const honest = mtlsClient(iip.address.port, await pki.credentials(HONEST_ID))
      expect((await honest.call("/echo", "honest")).toString()).toBe("honest")
      await waitFor(() => open(hog) === CAP - 1, 5000, "one hog connection to make way")
      expect(iip.connectionCount).toBe(CAP)
      expect(stalledClosed).toBe(0)
    }, 30_000)

    // Past the limit the handshakes are the unproven: a flood of stalled ones from one source
    // closes its own there, not another source's handshake under way.
    it("mTLS: a flood of stalled handshakes past the limit closes its own, not another source's under way", async () => {
      const { server: iip } = await serve({ tls: tlsOptions(false) })
      await holdMany(cleanup, iip.address.port, CAP, HOG, "mesh", await pki.credentials(HOG_ID))
      const stall = async (localAddress: string) => {
        const socket = net.connect({ host: "127.0.0.1", port: iip.address.port, localAddress })
        cleanup.add(() => socket.destroy())
        socket.on("error", () => {})
        const state = { closed: false }
        socket.once("close", () => (state.closed = true))
        await withTimeout(new Promise((resolve) => socket.once("connect", resolve)), 5000, "the stalled socket to connect")
        socket.write(Buffer.from([0x16, 0x03, 0x01, 0x02, 0x00, 0x01]))
        return state
      }
      const underWay = await stall("127.0.0.1")
      const flood: Array<{ closed: boolean }> = []
      for (let i = 0; i < 40; i++) flood.push(await stall("127.0.0.3"))
      // 40 for the 15 places left past the limit: 25 of the flood's closed, each by a newer one of its own.
      await waitFor(() => flood.filter((f) => f.closed).length === 25, 5000, "the flood to close its own")
      expect(underWay.closed).toBe(false)
    }, 30_000)

    it("mTLS permissive: plain IIP connections of one host holding every place make way for a TLS peer", async () => {
      const { server: iip } = await serve({ tls: tlsOptions(true) })
      const hog = await holdMany(cleanup, iip.address.port, CAP, HOG, "plain")
      const honest = mtlsClient(iip.address.port, await pki.credentials(HONEST_ID))
      expect((await honest.call("/echo", "honest")).toString()).toBe("honest")
      await waitFor(() => open(hog) === CAP - 1, 5000, "one hog connection to be evicted")
    }, 30_000)
  })
})
