// A mesh connection evicted at the IIP server's connection cap (src/iip/server.ts evictUnfair,
// fairPlaces.ts) while every connection looked at of the source holding the most places has a
// request in flight. It is drained, not cut (PROTOCOL.md §11 "Evicted busy"): its place is free at
// once (the newcomer gets in, live places never pass the cap), its peer is told a go-away
// expecting an answer whose body says `closing` (this connection only: not a server stopping, so
// the client does not report the peer going away), a request the peer sends on it after that is
// refused `draining`, not processed, and what was running finishes with its answer reaching the
// peer; the connection closes once drained, or 5 s after the eviction whatever still runs. Such
// connections count with the evicted sockets still closing against maxConnections: past it an
// eviction closes untold, as before. A server stopping waits for them as for its live ones, and
// closing it closes them. Two loopback sources: the hog (or the peer) on 127.0.0.1 or
// .2, newcomers from .3 and up. The deadline and the count run on the TestClock (Server.make
// inside it.effect), sockets are real.
import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import { TestClock } from "effect/testing"
import * as net from "node:net"
import { afterEach, beforeEach } from "vitest"
import * as Server from "../../src/iip/server.ts"
import type { IncomingRequest } from "../../src/iip/server.ts"
import { Status } from "../../src/protocol/constants.ts"
import {
  AcceptorControlChannel,
  decodeEnvelope,
  decodeErrorBody,
  emptyMeta,
  encodeEnvelope,
  encodeHello,
  EnvelopeFlag,
  EnvelopeKind,
  MeshErrorCode,
  MeshPath
} from "../../src/protocol/mesh.ts"
import { until, useCleanup } from "../support/effectIo.ts"
import type { MeshSession } from "../../src/mux/meshSession.ts"
import { holdConnection } from "../support/heldConnections.ts"
import { Cleanup, frame, RawParser, waitFor, withTimeout } from "../support/iipRaw.ts"
import { collectLog, helloOf, settle, startClient, startServer } from "../support/meshTest.ts"

const CAP = 2
const META = 8192

interface GoAway {
  readonly requestId: number
  readonly oneway: boolean
  readonly body: Record<string, unknown>
}

/**
 * A hand-played mesh dialer from `localAddress` that sends a request on `path` (channel 1) at once
 * and records the server's go-aways and its answers, by channel. It answers a go-away only when
 * told (`answerGoAway`), and may send more requests on new channels.
 */
const busyMeshDialer = async (cleanup: Cleanup, port: number, localAddress: string, path: string, body: string) => {
  const socket = net.connect({ host: "127.0.0.1", port, localAddress, allowHalfOpen: true })
  cleanup.add(() => socket.destroy())
  const peer = { socket, hello: false, ended: false, goAways: [] as Array<GoAway>, answers: new Map<number, { kind: number; body: Buffer }>() }
  const parser = new RawParser()
  socket.on("error", () => {})
  socket.on("data", (chunk: Buffer) => {
    for (const packet of parser.push(chunk)) {
      if (packet.path === MeshPath.hello) {
        peer.hello = true
        continue
      }
      const envelope = decodeEnvelope(packet.data, META)
      const payload = packet.data.subarray(envelope.bodyOffset)
      if (packet.path === MeshPath.goAway && packet.channelId === AcceptorControlChannel) {
        peer.goAways.push({ requestId: envelope.requestId, oneway: (envelope.flags & EnvelopeFlag.oneway) !== 0, body: JSON.parse(payload.toString()) })
      } else if (envelope.kind !== EnvelopeKind.request) peer.answers.set(packet.channelId, { kind: envelope.kind, body: Buffer.from(payload) })
    }
  })
  socket.once("end", () => (peer.ended = true))
  socket.once("close", () => (peer.ended = true))
  socket.write(frame(1, MeshPath.hello, 0, encodeHello(helloOf(), false)))
  await waitFor(() => peer.hello || peer.ended, 5000, "the hello's answer")
  if (peer.ended) throw new Error(`the ${localAddress} connection was closed at accept`)
  const request = (channelId: number, requestPath: string, requestBody: string) =>
    socket.write(frame(Status.RequestWhole, requestPath, channelId, encodeEnvelope(EnvelopeKind.request, 0, 1, emptyMeta, Buffer.from(requestBody), META)))
  const answerGoAway = () => {
    const goAway = peer.goAways[0]!
    socket.write(frame(Status.ResponseWhole, MeshPath.goAway, AcceptorControlChannel, encodeEnvelope(EnvelopeKind.response, 0, goAway.requestId, emptyMeta, new Uint8Array(), META)))
  }
  request(1, path, body)
  return { peer, request, answerGoAway }
}

/** Handlers: /echo, and /hold which answers its body once `release(body)` is called (never, else). */
const holdingRoutes = (server: Server.IipServer) => {
  const started: Array<string> = []
  const releases = new Map<string, () => void>()
  server.handle("/echo", (request) => request.data)
  server.handle("/hold", (request: IncomingRequest) =>
    new Promise<Uint8Array>((resolve) => {
      const body = Buffer.from(request.data).toString()
      started.push(body)
      releases.set(body, () => resolve(Buffer.from(`done ${body}`)))
    }))
  return { started, release: (body: string) => releases.get(body)!() }
}

/**
 * A hand-played dialer from 127.0.0.2 whose request (`body` on /hold) runs, its source's other
 * place busy too (a plain connection's /hold), so the dialer's (oldest) is the one a newcomer from
 * 127.0.0.3 evicts; resolves once the dialer is told go-away or closed.
 */
const evictBusyDialer = async (cleanup: Cleanup, port: number, started: ReadonlyArray<string>, body: string) => {
  const dialer = await busyMeshDialer(cleanup, port, "127.0.0.2", "/hold", body)
  await waitFor(() => started.includes(body), 5000, "the held request to reach the handler")
  const other = await holdConnection(cleanup, port, "127.0.0.2", "plain")
  other.socket.write(frame(1, "/hold", 0, "other"))
  await waitFor(() => started.includes("other"), 5000, "the second held request to reach the handler")
  await holdConnection(cleanup, port, "127.0.0.3", "plain")
  await waitFor(() => dialer.peer.goAways.length > 0 || dialer.peer.ended, 5000, "the go-away")
  return { dialer, other }
}

describe("a busy mesh connection evicted at the connection cap (real clock)", () => {
  let cleanup: Cleanup
  beforeEach(() => {
    cleanup = new Cleanup()
  })
  afterEach(() => cleanup.run())

  it("drains: the newcomer gets the place at once, and the request it was running still answers the peer", async () => {
    const log = collectLog()
    const server = await startServer(cleanup, { maxConnections: CAP, log: log.log })
    const { started, release } = holdingRoutes(server)
    const states: Array<string> = []
    const peer = startClient(cleanup, server.address.port, { maxConnections: 1, onPeerState: (state) => states.push(state) })
    const running = settle(peer.call("/hold", "running"))
    await waitFor(() => started.includes("running"), 5000, "the held request to reach the handler")
    const [mesh] = [...server.meshSessions]
    // The source's other place busy too, so the peer's (oldest) is the one evicted.
    const other = await holdConnection(cleanup, server.address.port, "127.0.0.1", "plain")
    other.socket.write(frame(1, "/hold", 0, "other"))
    await waitFor(() => started.includes("other"), 5000, "the second held request to reach the handler")
    const newcomer = await holdConnection(cleanup, server.address.port, "127.0.0.3", "plain")
    expect(newcomer.closed).toBe(false)
    expect(server.connectionCount).toBe(CAP)
    expect(server.meshSessions.has(mesh!)).toBe(false)
    expect(mesh!.closed).toBe(false)
    // The peer took the go-away (it answers it) before the request ends.
    await waitFor(() => mesh!.goAwayAcknowledged, 5000, "the peer to answer the go-away")
    release("running")
    const outcome = await withTimeout(running, 5000, "the running request to end")
    expect(outcome).toEqual({ ok: true, value: Buffer.from("done running") })
    await waitFor(() => mesh!.closed, 5000, "the drained connection to close")
    expect(states).toEqual([])
    expect(other.closed).toBe(false)
    expect(log.events.filter((e) => e.event === "connection-evicted")).toHaveLength(1)
  }, 30_000)

  it("a request the peer sends after the go-away is refused draining, not processed; the one running answers; then it closes", async () => {
    const server = await startServer(cleanup, { maxConnections: CAP })
    const { started, release } = holdingRoutes(server)
    const { dialer } = await evictBusyDialer(cleanup, server.address.port, started, "running")
    expect(dialer.peer.ended).toBe(false)
    expect(dialer.peer.goAways).toHaveLength(1)
    const [goAway] = dialer.peer.goAways
    expect(goAway!.oneway).toBe(false)
    expect(goAway!.body.closing).toBe(true)
    // It crosses the go-away: refused, not processed, never handled.
    dialer.request(3, "/echo", "after the go-away")
    await waitFor(() => dialer.peer.answers.has(3), 5000, "the refusal")
    const refusal = dialer.peer.answers.get(3)!
    expect(refusal.kind).toBe(EnvelopeKind.error)
    expect(decodeErrorBody(refusal.body)).toMatchObject({ code: MeshErrorCode.draining, processed: false })
    // Counted while it drains (outside connectionCount), with the channel its request runs on.
    expect(server.evictedDraining.connections).toBe(1)
    expect(server.evictedDraining.channels).toBeGreaterThanOrEqual(1)
    // Drained only once the go-away is answered and nothing runs.
    dialer.answerGoAway()
    release("running")
    await waitFor(() => dialer.peer.answers.has(1), 5000, "the running request's answer")
    expect(dialer.peer.answers.get(1)).toEqual({ kind: EnvelopeKind.response, body: Buffer.from("done running") })
    await waitFor(() => dialer.peer.ended, 5000, "the drained connection to close")
    expect(server.connectionCount).toBe(CAP)
    await waitFor(() => server.evictedDraining.connections === 0, 5000, "the drained connection to leave the count")
    expect(server.evictedDraining).toEqual({ connections: 0, channels: 0 })
  }, 30_000)

  it("a server stopping (drain) waits for its draining evicted connections too, as for its live ones", async () => {
    const server = await startServer(cleanup, { maxConnections: CAP })
    const { started, release } = holdingRoutes(server)
    const { dialer, other } = await evictBusyDialer(cleanup, server.address.port, started, "running")
    dialer.answerGoAway()
    let stopped = false
    const stopping = Effect.runPromise(server.drain(10_000)).then(() => (stopped = true))
    // Its live connections done (the newcomer idle, the other's request answered): the evicted one still runs.
    release("other")
    await waitFor(() => other.answered > 1, 5000, "the other request's answer")
    await waitFor(() => server.connectionCount === 0, 5000, "the live connections to close")
    expect(stopped).toBe(false)
    expect(dialer.peer.ended).toBe(false)
    release("running")
    await withTimeout(stopping, 5000, "the drain to end")
    // The server's drain ends once it has closed the connection; the peer reads the answer, then the FIN.
    await waitFor(() => dialer.peer.ended, 5000, "the peer to read the connection's end")
    expect(dialer.peer.answers.get(1)).toEqual({ kind: EnvelopeKind.response, body: Buffer.from("done running") })
  }, 30_000)

  it("a peer that closes its evicted connection while it drains leaves the count (no place, no channel still counted)", async () => {
    const server = await startServer(cleanup, { maxConnections: CAP })
    const { started, release } = holdingRoutes(server)
    const { dialer } = await evictBusyDialer(cleanup, server.address.port, started, "running")
    expect(server.evictedDraining.connections).toBe(1)
    dialer.peer.socket.destroy()
    await waitFor(() => server.evictedDraining.connections === 0, 5000, "the closed connection to leave the count")
    expect(server.evictedDraining).toEqual({ connections: 0, channels: 0 })
    // The live places are untouched: the newcomer and the source's other connection.
    expect(server.connectionCount).toBe(CAP)
    release("running")
  }, 30_000)
})

describe("a busy evicted mesh connection on the TestClock", () => {
  it.effect("is closed 5 s after its eviction if its request never ends", () =>
    Effect.gen(function*() {
      const cleanup = yield* useCleanup
      const { events, log } = collectLog()
      const server = yield* Server.make({ maxConnections: CAP, keepAlive: false, drainTimeoutMs: 0, log })
      const { started } = holdingRoutes(server)
      const { dialer, other } = yield* Effect.promise(() => evictBusyDialer(cleanup, server.address.port, started, "never"))
      dialer.answerGoAway()
      yield* TestClock.adjust("4999 millis")
      expect(dialer.peer.ended).toBe(false)
      expect(server.evictedDraining.connections).toBe(1)
      yield* TestClock.adjust("1 millis")
      yield* until(() => dialer.peer.ended, "the deadline's close")
      yield* until(() => server.evictedDraining.connections === 0, "the closed connection to leave the count")
      expect(server.evictedDraining).toEqual({ connections: 0, channels: 0 })
      expect(dialer.peer.answers.has(1)).toBe(false)
      expect(events.some((e) => e.event === "evicted-drain-deadline")).toBe(true)
      expect(other.closed).toBe(false)
    }))

  it.effect("with nothing running it waits for the go-away's answer: a request the peer sent before reading the go-away is refused draining, not cut", () =>
    Effect.gen(function*() {
      const cleanup = yield* useCleanup
      const server = yield* Server.make({ maxConnections: CAP, keepAlive: false, drainTimeoutMs: 0, log: () => {} })
      const meshes: Array<MeshSession> = []
      server.onMeshConnection((mesh) => meshes.push(mesh))
      const { started, release } = holdingRoutes(server)
      const { dialer } = yield* Effect.promise(() => evictBusyDialer(cleanup, server.address.port, started, "running"))
      release("running")
      yield* until(() => dialer.peer.answers.has(1), "the running request's answer")
      // Nothing runs, the go-away unanswered: the sweeps must leave it open, the peer may have sent more.
      yield* TestClock.adjust("100 millis")
      dialer.request(3, "/echo", "sent before the go-away was read")
      yield* until(() => dialer.peer.answers.has(3) || dialer.peer.ended, "the refusal")
      expect(dialer.peer.ended).toBe(false)
      expect(decodeErrorBody(dialer.peer.answers.get(3)!.body)).toMatchObject({ code: MeshErrorCode.draining, processed: false })
      // Answered, it closes drained at the next sweep, well before its deadline.
      dialer.answerGoAway()
      yield* until(() => meshes[0]!.goAwayAcknowledged, "the go-away's answer to be read")
      yield* TestClock.adjust("10 millis")
      yield* until(() => dialer.peer.ended, "the drained close")
    }))

  it.effect("draining evicted connections count against maxConnections with the closing ones: past it an eviction closes untold", () =>
    Effect.gen(function*() {
      const cleanup = yield* useCleanup
      const server = yield* Server.make({ maxConnections: CAP, keepAlive: false, drainTimeoutMs: 0, log: () => {} })
      const { started } = holdingRoutes(server)
      const port = server.address.port
      let held = 0
      const hogConnection = Effect.gen(function*() {
        const body = `hog ${held++}`
        const dialer = yield* Effect.promise(() => busyMeshDialer(cleanup, port, "127.0.0.2", "/hold", body))
        yield* until(() => started.includes(body), "the hog's request to reach the handler")
        return dialer
      })
      const hog = [yield* hogConnection, yield* hogConnection]
      const told: Array<boolean> = []
      // Each round: a newcomer from a new source takes one of the hog's two places, then leaves; the hog fills it again.
      const round = (source: string) =>
        Effect.gen(function*() {
          const newcomer = yield* Effect.promise(() => holdConnection(cleanup, port, source, "plain"))
          const evicted = (h: (typeof hog)[number]) => h.peer.goAways.length > 0 || h.peer.ended
          yield* until(() => hog.some(evicted), "a hog connection to be evicted")
          const [gone] = hog.splice(hog.findIndex(evicted), 1)
          told.push(gone!.peer.goAways.length > 0)
          expect(server.connectionCount).toBe(CAP)
          newcomer.socket.destroy()
          yield* until(() => server.connectionCount === CAP - 1, "the newcomer's place to be free")
          hog.push(yield* hogConnection)
          return gone!
        })
      const first = yield* round("127.0.0.3")
      yield* round("127.0.0.4")
      const third = yield* round("127.0.0.5")
      // Two (CAP) drain, their requests never ending: the third is closed at once, untold.
      expect(told).toEqual([true, true, false])
      expect(first.peer.ended).toBe(false)
      expect(third.peer.ended).toBe(true)
      // At their deadline the draining ones close, and an eviction is told again.
      yield* TestClock.adjust("5 seconds")
      yield* until(() => first.peer.ended, "the deadline's close")
      yield* round("127.0.0.6")
      expect(told).toEqual([true, true, false, true])
    }))
})

describe("a busy evicted connection and the server's close", () => {
  it.effect("closing the server closes its draining evicted connections too", () =>
    Effect.gen(function*() {
      const cleanup = yield* useCleanup
      const server = yield* Server.make({ maxConnections: CAP, keepAlive: false, drainTimeoutMs: 0, log: () => {} })
      const { started } = holdingRoutes(server)
      const { dialer } = yield* Effect.promise(() => evictBusyDialer(cleanup, server.address.port, started, "never"))
      expect(dialer.peer.ended).toBe(false)
      // Its sweeper is stopped with the server's fibers: the close itself must end it.
      yield* Effect.promise(() => server.close())
      yield* until(() => dialer.peer.ended, "the close")
    }))
})
