// A connection whose server holds all the requests its budget allows must still be unstuck by its
// callers (PROTOCOL.md §8, §10 `maxRequests`, §14). The server's per-connection request budget
// here is 8; one client connection with one channel sends 200 requests to a handler that waits
// for its signal, each with a 4 KiB body so that they span many socket reads. All 200 callers
// then cancel. Every handler that started must be interrupted (the cancel reaches it), no more
// than 8 may ever run at once, and the same connection must then answer a new call. Before the
// client kept to the server's budget, the server read past it, paused reading, and the cancels
// sat unread in its socket behind the requests: the handlers were never interrupted.
// Against a hand-played peer: a client keeps no more calls written than the peer's hello states;
// a held call that is cancelled is never sent (no request, no cancel), the others go out in
// order as answers come; calls held on channels the peer's refusal of another took with it go
// out and are answered, and those channels then close; a peer whose hello states no limit gets
// every call at once, as before. Calls ending every way (answered, failed, timed out, cancelled held
// or written, streamed answers read or cancelled, request bodies failing, pushes) leave the whole
// budget for the next ones.
import { afterEach, beforeEach, describe, expect, it } from "vitest"
import type { IipClient } from "../../src/iip/client.ts"
import { type IncomingRequest, type IipServer, reply } from "../../src/iip/server.ts"
import { Cancelled } from "../../src/mux/meshSession.ts"
import { AcceptorControlChannel, decodeChannelId, decodeChannelPair, decodeEnvelope, emptyMeta, encodeChannelId, encodeEnvelope, encodeErrorBody, EnvelopeFlag, EnvelopeKind, MeshDefaults, MeshPath } from "../../src/protocol/mesh.ts"
import { Cleanup, frame, type RawPacket, waitFor } from "../support/iipRaw.ts"
import { helloOf, settle, startClient, startRawMeshPeer, startServer } from "../support/meshTest.ts"

const budget = 8
const callers = 200
const body = Buffer.alloc(4096, 0x61)

describe("a caller's cancel reaches its handler while the server holds its whole request budget", () => {
  let cleanup: Cleanup
  let server: IipServer
  let client: IipClient
  let started = 0
  let interrupted = 0
  let running = 0
  let mostRunning = 0

  beforeEach(async () => {
    cleanup = new Cleanup()
    started = interrupted = running = mostRunning = 0
    server = await startServer(cleanup, { maxQueuedRequestsPerConnection: budget })
    server.handle("/echo", (request) => request.data)
    server.handle("/hang", (request: IncomingRequest) => {
      started++
      mostRunning = Math.max(mostRunning, ++running)
      return new Promise<string>((resolve) => {
        request.signal.addEventListener(
          "abort",
          () => {
            interrupted++
            running--
            resolve("late")
          },
          { once: true }
        )
      })
    })
    // Several channels: the server runs one request per channel at a time, so they hold the budget together.
    client = startClient(cleanup, server.address.port, { maxConnections: 1, maxChannelsPerConnection: 16 })
    expect((await client.call("/echo", "warm-up", { timeoutMs: 5000 })).toString()).toBe("warm-up")
  })

  afterEach(() => cleanup.run())

  it(`${callers} hanging calls cancelled: every handler that ran is interrupted, at most ${budget} at once, and the connection serves on`, async () => {
    const controllers = Array.from({ length: callers }, () => new AbortController())
    const calls = controllers.map((controller) => settle(client.call("/hang", body, { timeoutMs: 60_000, signal: controller.signal })))
    await waitFor(() => running >= budget / 2, 5000, "the server to run some of the hanging calls")
    for (const controller of controllers) controller.abort()
    const outcomes = await Promise.all(calls)
    for (const outcome of outcomes) expect(outcome.ok === false && outcome.error instanceof Cancelled).toBe(true)
    await waitFor(() => running === 0, 5000, `every running handler to be interrupted (running ${running}, started ${started}, interrupted ${interrupted})`)
    expect(interrupted).toBe(started)
    expect(mostRunning).toBeLessThanOrEqual(budget)
    expect((await client.call("/echo", "after", { timeoutMs: 5000 })).toString()).toBe("after")
    expect(client.stats).toMatchObject({ mesh: 1, connections: 1 })
  })
})

const bodyOf = (packet: RawPacket): string => packet.data.subarray(decodeEnvelope(packet.data, MeshDefaults.maxMetaBytes).bodyOffset).toString()
const requestIdOf = (packet: RawPacket): number => packet.data.readUInt32BE(4)
const answer = (packet: RawPacket) => frame(5, packet.path, packet.channelId, encodeEnvelope(EnvelopeKind.response, 0, requestIdOf(packet), emptyMeta, Buffer.from(`ok ${bodyOf(packet)}`), 8192))

describe("a client keeps to the request budget its peer's hello states (maxRequests)", () => {
  let cleanup: Cleanup

  beforeEach(() => {
    cleanup = new Cleanup()
  })

  afterEach(() => cleanup.run())

  it("3 written of 6; a held call cancelled is never sent; the rest go out in order as answers come", async () => {
    const peer = await startRawMeshPeer(cleanup, helloOf({ maxRequests: 3 }))
    // A channel for each call (the client writes none behind another): the connection's budget holds them back.
    const client = startClient(cleanup, peer.port, { maxConnections: 1, maxChannelsPerConnection: 6 })
    const controllers = Array.from({ length: 6 }, () => new AbortController())
    const calls = controllers.map((controller, i) => settle(client.call("/x", `c${i}`, { timeoutMs: 10_000, signal: controller.signal })))
    const sent: Array<RawPacket> = []
    for (let i = 0; i < 3; i++) sent.push(await peer.take((p) => p.path === "/x", 5000, `request ${i}`))
    expect(sent.map(bodyOf)).toEqual(["c0", "c1", "c2"])
    controllers[4]!.abort() // held
    controllers[2]!.abort() // written: its cancel goes out, behind everything written before it
    const cancel = await peer.take((p) => p.path === MeshPath.cancel, 5000, "the cancel of c2")
    expect(decodeChannelPair(cancel.data.subarray(decodeEnvelope(cancel.data, MeshDefaults.maxMetaBytes).bodyOffset))).toEqual([sent[2]!.channelId, requestIdOf(sent[2]!)])
    expect(peer.packets.filter((p) => p.path === "/x")).toEqual([])
    const socket = peer.sockets[0]!
    socket.write(answer(sent[0]!))
    sent.push(await peer.take((p) => p.path === "/x", 5000, "the first held call"))
    socket.write(answer(sent[1]!))
    sent.push(await peer.take((p) => p.path === "/x", 5000, "the next held call"))
    expect(sent.slice(3).map(bodyOf)).toEqual(["c3", "c5"])
    for (const packet of [sent[2]!, sent[3]!, sent[4]!]) socket.write(answer(packet))
    const outcomes = await Promise.all(calls)
    expect(outcomes.map((o) => (o.ok ? o.value.toString() : o.error instanceof Cancelled ? "cancelled" : String(o.error)))).toEqual([
      "ok c0",
      "ok c1",
      "cancelled",
      "ok c3",
      "cancelled",
      "ok c5"
    ])
    expect(peer.packets.filter((p) => p.path === "/x" || p.path === MeshPath.cancel)).toEqual([])
  })

  it("held calls on channels refused before they went out are answered, and those channels then close", async () => {
    const peer = await startRawMeshPeer(cleanup, helloOf({ maxRequests: 1 }))
    const client = startClient(cleanup, peer.port, { maxConnections: 1, maxChannelsPerConnection: 4 })
    const calls = [settle(client.call("/x", "c0", { timeoutMs: 10_000 }))]
    const c0 = await peer.take((p) => p.path === "/x", 5000, "the first call")
    // Held, each on a channel opened ahead of need, which the peer has not seen.
    calls.push(settle(client.call("/x", "c1", { timeoutMs: 10_000 })), settle(client.call("/x", "c2", { timeoutMs: 10_000 })))
    const socket = peer.sockets[0]!
    // The peer refuses c0's channel (§11): the unseen ones go with it (dropped from the client's pool).
    socket.write(frame(1, MeshPath.refuse, AcceptorControlChannel, encodeEnvelope(EnvelopeKind.request, EnvelopeFlag.oneway, 1, emptyMeta, encodeChannelId(c0.channelId), 8192)))
    const refusal = encodeErrorBody({ code: "overloaded", message: "channel refused", processed: false })
    socket.write(frame(5, c0.path, c0.channelId, encodeEnvelope(EnvelopeKind.error, 0, requestIdOf(c0), emptyMeta, refusal, 8192)))
    const c1 = await peer.take((p) => p.path === "/x", 5000, "c1")
    socket.write(answer(c1))
    const c2 = await peer.take((p) => p.path === "/x", 5000, "c2")
    socket.write(answer(c2))
    expect([c1.channelId, c2.channelId].filter((id) => id !== c0.channelId)).toHaveLength(2)
    expect((await Promise.all(calls)).map((o) => (o.ok ? o.value.toString() : (o.error as { code?: string }).code))).toEqual(["overloaded", "ok c1", "ok c2"])
    // Nobody else closes a refused channel: left open, each would count against the peer's channels for good.
    const closed: Array<number | undefined> = []
    for (let i = 0; i < 3; i++) {
      const close = await peer.take((p) => p.path === MeshPath.close, 5000, `the close of refused channel ${i + 1} of 3`)
      closed.push(decodeChannelId(close.data.subarray(decodeEnvelope(close.data, MeshDefaults.maxMetaBytes).bodyOffset)))
    }
    expect(closed.sort()).toEqual([c0.channelId, c1.channelId, c2.channelId].sort())
  })

  it("a peer whose hello states no limit gets every call at once", async () => {
    const peer = await startRawMeshPeer(cleanup, helloOf())
    const client = startClient(cleanup, peer.port, { maxConnections: 1, maxChannelsPerConnection: 6 })
    const calls = Array.from({ length: 6 }, (_, i) => settle(client.call("/x", `c${i}`, { timeoutMs: 10_000 })))
    const sent: Array<RawPacket> = []
    for (let i = 0; i < 6; i++) sent.push(await peer.take((p) => p.path === "/x", 5000, `request ${i} before any answer`))
    for (const packet of sent) peer.sockets[0]!.write(answer(packet))
    expect((await Promise.all(calls)).map((o) => o.ok && o.value.toString())).toEqual(sent.map((p) => `ok ${bodyOf(p)}`))
  })

  it("calls ending every way give their place back: answered, failed, timed out, cancelled held and written, streamed answers read or cancelled, request bodies failing, pushes: the budget is whole after", async () => {
    const limit = 2
    const server = await startServer(cleanup, { maxQueuedRequestsPerConnection: limit })
    let hanging = 0
    server.handle("/echo", (request) => request.data)
    server.handle("/fail", () => {
      throw new Error("handler failed")
    })
    server.handle("/hang", (request: IncomingRequest) => {
      hanging++
      return new Promise<string>((resolve) => request.signal.addEventListener("abort", () => resolve("late"), { once: true }))
    })
    server.handle("/drain", async (request: IncomingRequest) => {
      let bytes = request.data.length
      if (request.context.stream !== undefined) for await (const chunk of request.context.stream) bytes += chunk.length
      return String(bytes)
    })
    server.handle("/pieces", () =>
      reply(
        (async function* () {
          for (let i = 0; i < 48; i++) yield Buffer.alloc(64 * 1024, i) // 3 MiB, past the 1 MiB stream window: a cancel lands mid-answer
        })()
      )
    )
    const client = startClient(cleanup, server.address.port, { maxConnections: 1, maxChannelsPerConnection: 8 })
    expect((await client.call("/echo", "warm-up", { timeoutMs: 5000 })).toString()).toBe("warm-up")
    const session = client.meshSessions[0]!
    expect(session.agreed.maxRequests).toBe(limit)
    const failingBody = async function* () {
      yield Buffer.alloc(MeshDefaults.chunkBytes, 1)
      throw new Error("body source failed")
    }
    const round = async () => {
      const cancelSoon = new AbortController()
      const cancelStream = new AbortController()
      const outcomes = await Promise.all([
        settle(client.call("/echo", "e", { timeoutMs: 5000 })),
        settle(client.call("/fail", "f", { timeoutMs: 5000 })),
        settle(client.call("/hang", "t", { timeoutMs: 30 })),
        settle(client.call("/hang", "c", { timeoutMs: 5000, signal: cancelSoon.signal })),
        settle(
          client.stream("/pieces", new Uint8Array(0), { timeoutMs: 5000 }).then(async (answer) => {
            let bytes = 0
            for await (const chunk of answer.stream!) bytes += chunk.length
            return bytes
          })
        ),
        settle(
          client.stream("/pieces", new Uint8Array(0), { timeoutMs: 5000, signal: cancelStream.signal }).then(async (answer) => {
            for await (const _ of answer.stream!) cancelStream.abort()
          })
        ),
        settle(client.stream("/drain", failingBody(), { timeoutMs: 5000 })),
        (client.push("/echo", "p"), settle(client.call("/echo", "after push", { timeoutMs: 5000 }))),
        (setTimeout(() => cancelSoon.abort(), 5), settle(client.call("/echo", "e2", { timeoutMs: 5000 })))
      ])
      return outcomes.map((o) => o.ok)
    }
    for (let i = 0; i < 10; i++) expect(await round()).toEqual([true, false, false, false, true, false, false, true, true])
    await waitFor(() => session.callingCount === 0, 5000, `every call to end (calling ${session.callingCount})`)
    // The whole budget is there again: `limit` hanging calls are all written and run at once.
    hanging = 0
    const cancel = new AbortController()
    const last = Array.from({ length: limit }, () => settle(client.call("/hang", "last", { timeoutMs: 5000, signal: cancel.signal })))
    await waitFor(() => hanging === limit, 5000, `${limit} hanging calls to run (ran ${hanging})`)
    cancel.abort()
    await Promise.all(last)
    expect(client.meshSessions).toEqual([session])
  })
})
