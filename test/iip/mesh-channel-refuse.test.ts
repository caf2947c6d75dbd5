// A channel over the server's channel budget (PROTOCOL.md §8, §11 `refuse`), over real TCP:
// - the server refuses the one new channel, not the connection: requests in flight on the
//   connection's other channels are answered, the request on the refused channel fails
//   `overloaded`, not processed (safe to retry elsewhere), and the client opens no channel past
//   the ones the server took while they stay open; the refused channel goes back to the
//   server's agreed count once the client closes it;
// - on the wire: `/sys/refuse` (channel id) on the server's control channel, then each request on
//   the refused channel answered `overloaded` until its opener closes it;
// - hostile refusals at the opener: one naming a channel it never used, or its control channel, is
//   ignored; a malformed one closes the connection (bad-control);
// - a refusal from a peer whose hello did not name `refuse` and `close` is ignored: the channel
//   could never be closed, and each such refusal would leave the client one more for good;
// - a refused channel whose request body was still going out when its answer came (its last
//   packets queued in the writer behind a peer that read slowly) is closed once they are written;
// - a peer whose hello does not name `refuse` is closed as before (too-many-channels).
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest"
import { type IipServer } from "../../src/iip/server.ts"
import { RemoteError } from "../../src/mux/meshSession.ts"
import { AcceptorControlChannel, decodeChannelId, encodeChannelPair, decodeEnvelope, decodeErrorBody, decodeHello, emptyMeta, encodeChannelId, encodeEnvelope, encodeHello, EnvelopeFlag, EnvelopeKind, MeshDefaults, MeshFeatures, MeshPath } from "../../src/protocol/mesh.ts"
import { Cleanup, deferred, frame, RawClient, waitFor } from "../support/iipRaw.ts"
import { collectLog, helloOf, rejection, settle, startClient, startRawMeshPeer, startServer } from "../support/meshTest.ts"
import { tcpBufferMaxima } from "../support/socketBuffers.ts"

const MiB = 1024 * 1024

const request = (path: string, channel: number, id: number, body: string) =>
  frame(1, path, channel, encodeEnvelope(EnvelopeKind.request, 0, id, emptyMeta, Buffer.from(body), 8192))

const bodyOf = (data: Buffer): Buffer => data.subarray(decodeEnvelope(data, MeshDefaults.maxMetaBytes).bodyOffset)

describe("a channel over the server's channel budget", () => {
  let cleanup: Cleanup
  let server: IipServer
  let release = deferred()
  beforeEach(async () => {
    cleanup = new Cleanup()
    release = deferred()
    server = await startServer(cleanup, { maxChannels: 3 })
    server.handle("/hold", async (request) => {
      await release.promise
      return request.data
    })
    server.handle("/echo", (request) => request.data)
  })
  afterEach(() => cleanup.run())

  it("is refused alone: the connection's calls in flight are answered, the refused one fails overloaded (not processed), and no channel opens past the ones taken", async () => {
    const first = startClient(cleanup, server.address.port, { maxConnections: 1 })
    const second = startClient(cleanup, server.address.port, { maxConnections: 1 })
    const channels = () => [...server.meshSessions].reduce((n, s) => n + s.peerChannelCount, 0)
    // One after the other, so that each takes a channel of its own (a client opens one idle channel ahead).
    const held = [first.call("/hold", "a1", { timeoutMs: 10_000 })]
    await waitFor(() => channels() === 1, 5000, "the first call")
    held.push(first.call("/hold", "a2", { timeoutMs: 10_000 }))
    await waitFor(() => channels() === 2, 5000, "the second call")
    const inFlight = second.call("/hold", "b1", { timeoutMs: 10_000 })
    await waitFor(() => channels() === 3, 5000, "the second client's call")
    // The server holds all 3 channels it may: this call opens a fourth.
    const refused = await rejection(second.call("/hold", "b2", { timeoutMs: 10_000 }))
    expect(refused).toBeInstanceOf(RemoteError)
    expect(refused).toMatchObject({ code: "overloaded", processed: false })
    const session = second.meshSessions[0]!
    // More calls queue on the channel the server took; none opens another.
    const queued = second.call("/echo", "b3", { timeoutMs: 10_000 })
    release.resolve()
    expect((await Promise.all(held)).map(String)).toEqual(["a1", "a2"])
    expect(String(await inFlight)).toBe("b1")
    expect(String(await queued)).toBe("b3")
    expect(second.meshSessions).toEqual([session])
    expect(second.stats.connections).toBe(1)
    expect(session.channelCount).toBe(1)
    // The refused channel, closed by the client, no longer counts at the server.
    const served = [...server.meshSessions].find((s) => s.remoteNode === session.agreed.node && s.peerChannelCount === 1 && s.servingCount === 0)
    expect(served).toBeDefined()
    await waitFor(() => [...server.meshSessions].every((s) => s.peerChannelCount <= 2), 5000, "the refused channel to close")
    expect(served!.connection.budget.shared.channels).toBe(3)
  })

  it("the cap lapses: after the overload, calls on a connection whose channels stay busy run side by side again", async () => {
    vi.useFakeTimers({ toFake: ["performance"] })
    cleanup.add(() => vi.useRealTimers())
    const first = startClient(cleanup, server.address.port, { maxConnections: 1 })
    const second = startClient(cleanup, server.address.port, { maxConnections: 1 })
    const channels = () => [...server.meshSessions].reduce((n, s) => n + s.peerChannelCount, 0)
    const held = [first.call("/hold", "a1", { timeoutMs: 10_000 })]
    await waitFor(() => channels() === 1, 5000, "the first call")
    held.push(first.call("/hold", "a2", { timeoutMs: 10_000 }))
    await waitFor(() => channels() === 2, 5000, "the second call")
    held.push(second.call("/hold", "b1", { timeoutMs: 10_000 }))
    await waitFor(() => channels() === 3, 5000, "the second client's call")
    expect(await rejection(second.call("/hold", "b2", { timeoutMs: 10_000 }))).toMatchObject({ code: "overloaded", processed: false })
    const session = second.meshSessions[0]!
    expect(session.channelCap).toBe(1)
    // Still full when the cap runs out (1 s): the channel tried is refused, and the cap holds twice as long.
    vi.advanceTimersByTime(1000)
    expect(await rejection(second.call("/hold", "b3", { timeoutMs: 10_000 }))).toMatchObject({ code: "overloaded", processed: false })
    expect(session.channelCap).toBe(1)
    held.push(second.call("/hold", "b4", { timeoutMs: 10_000 })) // at the cap: waits for b1's channel
    vi.advanceTimersByTime(1999)
    expect(session.channelCap).toBe(1)
    release.resolve()
    await Promise.all(held)
    // The overload is over: the first client leaves, the server holds the second's one channel.
    first.close()
    await waitFor(() => channels() === 1, 5000, "the first client's channels to go")
    // Three calls that each wait until all three run at once.
    let running = 0
    const together = deferred()
    server.handle("/together", async (request) => {
      if (++running === 3) together.resolve()
      await together.promise
      return request.data
    })
    vi.advanceTimersByTime(60_000)
    const calls = ["t1", "t2", "t3"].map((body) => second.call("/together", body, { timeoutMs: 3000 }))
    expect((await Promise.all(calls)).map(String)).toEqual(["t1", "t2", "t3"])
    expect(session.channelCap).toBe(Infinity)
    expect(second.stats.connections).toBe(1)
  })

  it("on the wire: /sys/refuse names the channel, each request on it is answered overloaded until its opener closes it, then it opens anew", async () => {
    const raw = await RawClient.connect(server.address.port, cleanup)
    raw.write(frame(1, MeshPath.hello, 0, encodeHello(helloOf({ node: "raw" }), false)))
    expect(decodeHello((await raw.next()).data)?.features).toContain("refuse")
    for (let channel = 1; channel <= 3; channel++) {
      raw.write(request("/echo", channel, 1, `c${channel}`))
      expect(bodyOf((await raw.next()).data).toString()).toBe(`c${channel}`)
    }
    raw.write(request("/echo", 4, 1, "c4"))
    raw.write(request("/echo", 4, 2, "c4 again"))
    const notice = await raw.next()
    expect([notice.path, notice.channelId]).toEqual([MeshPath.refuse, AcceptorControlChannel])
    const envelope = decodeEnvelope(notice.data, MeshDefaults.maxMetaBytes)
    expect(envelope.flags & EnvelopeFlag.oneway).toBe(EnvelopeFlag.oneway)
    expect(decodeChannelId(bodyOf(notice.data))).toBe(4)
    for (const id of [1, 2]) {
      const answer = await raw.next()
      expect([answer.channelId, answer.status, decodeEnvelope(answer.data, MeshDefaults.maxMetaBytes).requestId]).toEqual([4, 5, id])
      expect(answer.data[0]).toBe(EnvelopeKind.error)
      expect(decodeErrorBody(bodyOf(answer.data))).toMatchObject({ code: "overloaded", processed: false })
    }
    const session = [...server.meshSessions][0]!
    expect(session.connection.budget.shared.channels).toBe(3)
    // The connection goes on; closing a taken channel and the refused one frees a place for channel 4.
    raw.write(frame(1, MeshPath.close, 0, encodeEnvelope(EnvelopeKind.request, EnvelopeFlag.oneway, 1, emptyMeta, encodeChannelId(4), 8192)))
    raw.write(frame(1, MeshPath.close, 0, encodeEnvelope(EnvelopeKind.request, EnvelopeFlag.oneway, 2, emptyMeta, encodeChannelId(3), 8192)))
    await waitFor(() => session.peerChannelCount === 2, 5000, "channels 3 and 4 to be forgotten")
    raw.write(request("/echo", 4, 1, "c4 open"))
    expect(bodyOf((await raw.next()).data).toString()).toBe("c4 open")
    expect(session.connection.budget.shared.channels).toBe(3)
  })

  it("a peer whose hello does not name `refuse` is closed as before (too-many-channels)", async () => {
    const { events, log } = collectLog()
    const strict = await startServer(cleanup, { maxChannels: 1, log })
    strict.handle("/echo", (request) => request.data)
    const raw = await RawClient.connect(strict.address.port, cleanup)
    raw.write(frame(1, MeshPath.hello, 0, encodeHello(helloOf({ node: "old", features: MeshFeatures.filter((f) => f !== "refuse") }), false)))
    await raw.next()
    raw.write(request("/echo", 1, 1, "one"))
    expect(bodyOf((await raw.next()).data).toString()).toBe("one")
    raw.write(request("/echo", 2, 1, "two"))
    await raw.waitClose()
    expect(events.find((e) => e.event === "protocol-violation")?.fields.rule).toBe("too-many-channels")
  })

  it("at the opener: a refused channel whose body still streams when its answer comes is closed once its last packets are written", async () => {
    const peer = await startRawMeshPeer(cleanup)
    const client = startClient(cleanup, peer.port, { maxConnections: 1 })
    // After the first piece, 1 MiB at a time for as long as the writer takes them, until the answer
    // came: the writer backs up at what the kernel's buffers take while the peer does not read (about
    // 4 MB here, 6 MB with maxima of 32 or 64 MiB), and still holds pieces if they take more later.
    // Not one piece of both maxima (a fixed 8 MiB fitted in buffers of 6 and 4 MiB; 129 MiB with
    // maxima of 64 MiB took 3.8 s to fill before its first byte went out, once more than the 5 s
    // below). At most both maxima, the writer's 1 MiB high-water mark and a piece: the window
    // granted (a grant is 32 bits).
    const { receive, send } = tcpBufferMaxima()
    const pieces = Math.min(Math.ceil((receive + send) / MiB) + 2, 4095)
    const piece = Buffer.alloc(MiB, 1)
    const more = deferred()
    let answeredYet = false
    async function* body() {
      yield Buffer.from("a")
      await more.promise
      for (let sent = 0; !answeredYet && sent < pieces; sent++) yield piece
    }
    const answered = settle(client.stream("/up", body(), { timeoutMs: 20_000 }))
    const sent = await peer.take((p) => p.path === "/up", 5000, "the request's first packet")
    const socket = peer.sockets[0]!
    const session = client.meshSessions[0]!
    const control = (path: string, id: number, body: Buffer) =>
      socket.write(frame(1, path, AcceptorControlChannel, encodeEnvelope(EnvelopeKind.request, EnvelopeFlag.oneway, id, emptyMeta, body, 8192)))
    // The peer stops reading and grants the whole body: the client's writer backs up.
    socket.pause()
    control(MeshPath.window, 1, encodeChannelPair(sent.channelId, pieces * MiB))
    more.resolve()
    await waitFor(() => session.connection.writer.congested, 5000, "the client's writer to back up")
    // Refused, and its request answered overloaded, while the body is still going out.
    control(MeshPath.refuse, 2, encodeChannelId(sent.channelId))
    const error = encodeEnvelope(EnvelopeKind.error, 0, decodeEnvelope(sent.data, MeshDefaults.maxMetaBytes).requestId, emptyMeta, Buffer.from('{"code":"overloaded","message":"refused","processed":false}'), 8192)
    socket.write(frame(5, "/up", sent.channelId, error))
    expect(await answered).toMatchObject({ ok: false, error: { code: "overloaded", processed: false } })
    // Pieces went on while the kernel took more: the writer held some when the answer came.
    answeredYet = true
    socket.resume()
    const close = await peer.take((p) => p.path === MeshPath.close, 10_000, "the refused channel's close")
    expect(decodeChannelId(bodyOf(close.data))).toBe(sent.channelId)
    expect(session.channelCount).toBe(0)
    expect(session.closed).toBe(false)
  })

  it("at the opener: a refusal from a peer that did not agree to `refuse` and `close` is ignored, the channel kept", async () => {
    const peer = await startRawMeshPeer(cleanup, helloOf({ features: MeshFeatures.filter((f) => f !== "refuse" && f !== "close") }))
    const client = startClient(cleanup, peer.port, { maxConnections: 1 })
    const used = new Set<number>()
    for (let round = 1; round <= 5; round++) {
      const answered = settle(client.call("/x", "1", { timeoutMs: 10_000 }))
      const sent = await peer.take((p) => p.path === "/x", 5000, "the request")
      used.add(sent.channelId)
      const socket = peer.sockets[0]!
      socket.write(frame(1, MeshPath.refuse, AcceptorControlChannel, encodeEnvelope(EnvelopeKind.request, EnvelopeFlag.oneway, round, emptyMeta, encodeChannelId(sent.channelId), 8192)))
      const error = encodeEnvelope(EnvelopeKind.error, 0, decodeEnvelope(sent.data, MeshDefaults.maxMetaBytes).requestId, emptyMeta, Buffer.from('{"code":"overloaded","message":"refused","processed":false}'), 8192)
      socket.write(frame(5, "/x", sent.channelId, error))
      expect(await answered).toMatchObject({ ok: false, error: { code: "overloaded" } })
    }
    const session = client.meshSessions[0]!
    expect(session.channelCount).toBeLessThanOrEqual(2)
    expect(used.size).toBe(1)
    expect(session.channelCap).toBe(Infinity)
  })

  it("at the opener: a refusal of a channel it never used or of its control channel is ignored, a refused one closes once answered, a malformed one closes the connection", async () => {
    const { events, log } = collectLog()
    const peer = await startRawMeshPeer(cleanup)
    const client = startClient(cleanup, peer.port, { maxConnections: 1, log })
    const answered = settle(client.call("/x", "1", { timeoutMs: 10_000 }))
    const sent = await peer.take((p) => p.path === "/x", 5000, "the request")
    const socket = peer.sockets[0]!
    let controlId = 1
    const refuse = (body: Buffer) => socket.write(frame(1, MeshPath.refuse, AcceptorControlChannel, encodeEnvelope(EnvelopeKind.request, EnvelopeFlag.oneway, controlId++, emptyMeta, body, 8192)))
    for (const id of [0, 77, AcceptorControlChannel]) refuse(encodeChannelId(id))
    refuse(encodeChannelId(sent.channelId))
    const error = encodeEnvelope(EnvelopeKind.error, 0, decodeEnvelope(sent.data, MeshDefaults.maxMetaBytes).requestId, emptyMeta, Buffer.from('{"code":"overloaded","message":"refused","processed":false}'), 8192)
    socket.write(frame(5, "/x", sent.channelId, error))
    expect(await answered).toMatchObject({ ok: false, error: { code: "overloaded", processed: false } })
    const close = await peer.take((p) => p.path === MeshPath.close, 5000, "the refused channel's close")
    expect(decodeChannelId(bodyOf(close.data))).toBe(sent.channelId)
    const session = client.meshSessions[0]!
    expect(session.closed).toBe(false)
    expect(session.channelCount).toBe(0)
    refuse(Buffer.of(0, 0, 1))
    await waitFor(() => session.closed, 5000, "the connection to close")
    expect(events.find((e) => e.event === "protocol-violation")?.fields.rule).toBe("bad-control")
  })
})
