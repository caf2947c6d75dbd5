// Closing mesh channels (PROTOCOL.md §11, `/sys/close`, feature `close`), over real TCP:
// - a client whose streams took channels past its limit (streamChannelsPerConnection) closes the
//   idle ones once the streams end; the server forgets them and gives their places back to its
//   channel budget, on the same connection; the next burst reuses the ids;
// - a peer whose hello does not name `close` is never sent one (its channels stay, as before);
// - hostile closes: a malformed body closes the connection (bad-control); one naming a control
//   channel, a channel never opened or one of the server's own is ignored; a channel closed while
//   busy is forgotten only once its answer is out, and a request on its id before that goes on it;
//   closed idle it is forgotten at once and its id opens anew; so does a request too large for one
//   packet (refused in its turn), and its continuations are dropped on the same channel;
// - a close never overtakes packets of its channel still waiting in the writer (a stream's chunks
//   wait in their channel's lane while control packets go ahead of them).
import { afterEach, beforeEach, describe, expect, it } from "vitest"
import { type IipServer, reply } from "../../src/iip/server.ts"
import { AcceptorControlChannel, decodeEnvelope, decodeHello, emptyMeta, encodeChannelId, encodeEnvelope, encodeHello, EnvelopeFlag, EnvelopeKind, MeshDefaults, MeshFeatures, MeshPath } from "../../src/protocol/mesh.ts"
import { Cleanup, deferred, frame, RawClient, waitFor } from "../support/iipRaw.ts"
import { collectLog, helloOf, startClient, startRawMeshPeer, startServer } from "../support/meshTest.ts"

const read = async (stream: AsyncIterable<Uint8Array>): Promise<string> => {
  let text = ""
  for await (const chunk of stream) text += Buffer.from(chunk).toString()
  return text
}

/** A request on `channel` as a raw dialer writes it: whole, one-way or not. */
const request = (path: string, channel: number, id: number, body: string) =>
  frame(1, path, channel, encodeEnvelope(EnvelopeKind.request, 0, id, emptyMeta, Buffer.from(body), 8192))

const bodyOf = (data: Buffer): string => data.subarray(decodeEnvelope(data, MeshDefaults.maxMetaBytes).bodyOffset).toString()

describe("closing mesh channels", () => {
  let cleanup: Cleanup
  let server: IipServer
  /** Streamed answers held open until the test releases them. */
  let release = deferred()
  beforeEach(async () => {
    cleanup = new Cleanup()
    release = deferred()
    server = await startServer(cleanup)
    server.handle("/hold", () =>
      reply((async function*() {
        yield Buffer.from("open")
        await release.promise
        yield Buffer.from(" done")
      })())
    )
    server.handle("/echo", (request) => request.data)
  })
  afterEach(() => cleanup.run())

  /** A server whose /hold answer streams "a", then "b" once `hold` is resolved, and a raw mesh dialer past its hello. */
  const holdingServer = async () => {
    const hold = deferred()
    const busy = await startServer(cleanup)
    busy.handle("/hold", () =>
      reply((async function*() {
        yield Buffer.from("a")
        await hold.promise
        yield Buffer.from("b")
      })())
    )
    busy.handle("/echo", (request) => request.data)
    const raw = await RawClient.connect(busy.address.port, cleanup)
    raw.write(frame(1, MeshPath.hello, 0, encodeHello(helloOf({ node: "raw" }), false)))
    await raw.next()
    return { hold, raw, session: [...busy.meshSessions][0]! }
  }

  it("channels opened past the limit for streams close once the streams end, at both ends of the same connection; the next burst reuses their ids", async () => {
    const client = startClient(cleanup, server.address.port, { maxConnections: 1, maxChannelsPerConnection: 2, streamChannelsPerConnection: 16 })
    const burst = async () => {
      // One after the other: a channel is known to hold a stream once its answer has begun.
      const answers = []
      for (let i = 0; i < 6; i++) answers.push(await client.stream("/hold", Buffer.alloc(0), { timeoutMs: 10_000 }))
      const session = client.meshSessions[0]!
      expect(session.channelCount).toBeGreaterThanOrEqual(6)
      expect([...server.meshSessions][0]!.peerChannelCount).toBe(6)
      release.resolve()
      expect(await Promise.all(answers.map((a) => read(a.stream!)))).toEqual(Array(6).fill("open done"))
      release = deferred()
    }
    await burst()
    const session = client.meshSessions[0]!
    const served = [...server.meshSessions][0]!
    await waitFor(() => session.channelCount <= 2 && served.peerChannelCount <= 2, 5000, "the extra channels to close")
    expect(served.connection.budget.shared.channels).toBe(served.peerChannelCount)
    expect((await client.call("/echo", "still", { timeoutMs: 5000 })).toString()).toBe("still")
    await burst()
    await waitFor(() => session.channelCount <= 2 && served.peerChannelCount <= 2, 5000, "the extra channels to close again")
    // One connection all along, and the ids of closed channels were opened again: no id past the largest burst's.
    expect(client.meshSessions).toEqual([session])
    expect([...server.meshSessions]).toEqual([served])
    const ids = [...(served as unknown as { serving: { peer: Map<number, unknown> } }).serving.peer.keys()].filter((id) => id !== 0)
    expect(Math.max(...ids)).toBeLessThanOrEqual(8)
  })

  it("a peer whose hello does not name `close` is never sent one: the channels stay", async () => {
    const peer = await startRawMeshPeer(cleanup, helloOf({ node: "old", features: MeshFeatures.filter((f) => f !== "close") }))
    const client = startClient(cleanup, peer.port, { maxConnections: 1 })
    void client.call("/x", "1", { timeoutMs: 0 }).catch(() => {})
    await peer.take((p) => p.path === "/x", 5000, "the request")
    const session = client.meshSessions[0]!
    expect(session.closesChannels).toBe(false)
    const [channel] = [...(session as unknown as { own: Map<number, Parameters<typeof session.closeChannel>[0]> }).own.values()].filter((c) => c !== session.ownControl)
    expect(session.closeChannel(channel!)).toBe(false)
    expect(peer.packets.filter((p) => p.path === MeshPath.close)).toEqual([])
    client.close()
  })

  it("a channel whose last packets still wait in the writer is not closed until they are out: the close comes after them on the wire", async () => {
    const peer = await startRawMeshPeer(cleanup)
    const client = startClient(cleanup, peer.port, { maxConnections: 1 })
    const more = deferred()
    const body = (async function*() {
      yield Buffer.alloc(1000, 1)
      await more.promise
      yield Buffer.alloc(1000, 2)
      yield Buffer.alloc(1000, 3)
    })()
    const answered = client.stream("/up", body, { timeoutMs: 5000 })
    const first = await peer.take((p) => p.path === "/up" && p.status === 0, 5000, "the request's first packet")
    // Answered at once, before its body ended (an app that does not read an upload): nothing outstanding but the body.
    const requestId = decodeEnvelope(first.data, MeshDefaults.maxMetaBytes).requestId
    peer.sockets[0]!.write(frame(5, "/up", first.channelId, encodeEnvelope(EnvelopeKind.response, 0, requestId, emptyMeta, Buffer.from("ok"), 8192)))
    expect((await answered).data.toString()).toBe("ok")
    const session = client.meshSessions[0]!
    const channel = (session as unknown as { own: Map<number, Parameters<typeof session.closeChannel>[0]> }).own.get(first.channelId)!
    // The socket takes nothing for now: the body's next chunks and its last packet wait in the channel's lane.
    const socket = session.connection.socket
    socket.cork()
    more.resolve()
    await waitFor(() => channel.sending === undefined, 5000, "the body to be handed to the writer")
    const closedAtOnce = session.closeChannel(channel)
    socket.uncork()
    if (!closedAtOnce) await waitFor(() => session.closeChannel(channel), 5000, "the channel to close once its packets are out")
    await waitFor(() => peer.packets.some((p) => p.path === MeshPath.close), 5000, "the close")
    const order = peer.packets.filter((p) => p.channelId === first.channelId || p.path === MeshPath.close).map((p) => (p.path === MeshPath.close ? "close" : p.status))
    expect(order).toEqual([2, 2, 2, 3, "close"])
  })

  it("a malformed close closes the connection (bad-control); one naming a control channel, an unknown channel or the server's own is ignored", async () => {
    const { events, log } = collectLog()
    const hostile = await startServer(cleanup, { log })
    hostile.handle("/echo", (request) => request.data)
    const raw = await RawClient.connect(hostile.address.port, cleanup)
    raw.write(frame(1, MeshPath.hello, 0, encodeHello(helloOf({ node: "raw" }), false)))
    expect(decodeHello((await raw.next()).data)?.features).toContain("close")
    raw.write(request("/echo", 1, 1, "one"))
    expect(bodyOf((await raw.next()).data)).toBe("one")
    let controlId = 1
    const close = (body: Buffer) => raw.write(frame(1, MeshPath.close, 0, encodeEnvelope(EnvelopeKind.request, EnvelopeFlag.oneway, controlId++, emptyMeta, body, 8192)))
    for (const id of [0, AcceptorControlChannel, 77, AcceptorControlChannel + 1]) close(encodeChannelId(id))
    raw.write(request("/echo", 1, 2, "two"))
    expect(bodyOf((await raw.next()).data)).toBe("two")
    expect([...hostile.meshSessions][0]!.peerChannelCount).toBe(1)
    close(Buffer.of(0, 0, 1))
    await raw.waitClose()
    expect(events.find((e) => e.event === "protocol-violation")?.fields.rule).toBe("bad-control")
  })

  it("a channel closed while its answer streams is forgotten only once the answer is out; a request on its id before that goes on the same channel", async () => {
    const { hold, raw, session } = await holdingServer()
    let controlId = 1
    const close = (channel: number) => raw.write(frame(1, MeshPath.close, 0, encodeEnvelope(EnvelopeKind.request, EnvelopeFlag.oneway, controlId++, emptyMeta, encodeChannelId(channel), 8192)))
    raw.write(request("/hold", 1, 1, ""))
    expect((await raw.next()).status).toBe(4) // the answer's first packet: it streams
    close(1)
    raw.write(request("/echo", 1, 2, "queued"))
    // Both read (the request waits its turn behind the streaming answer) before the answer ends:
    // resolved at once, the answer could end before the close was read, which then found it idle.
    await waitFor(() => session.servingCount === 2, 5000, "the queued request to wait its turn")
    hold.resolve()
    // The rest of the stream (its chunks, its last packet), then the queued request's answer: all on channel 1.
    const packets = [await raw.next()]
    while (packets.at(-1)!.status !== 5) packets.push(await raw.next())
    expect(packets.every((p) => p.channelId === 1)).toBe(true)
    expect(packets.map((p) => p.status).slice(-2)).toEqual([7, 5])
    expect(bodyOf(packets.at(-1)!.data)).toBe("queued")
    expect(session.peerChannelCount).toBe(1)
    expect(session.connection.budget.shared.channels).toBe(1)
    // Closed idle: forgotten at once, its place back in the budget; its id opens anew.
    close(1)
    await waitFor(() => session.peerChannelCount === 0, 5000, "channel 1 to be forgotten")
    expect(session.connection.budget.shared.channels).toBe(0)
    raw.write(request("/echo", 1, 1, "again"))
    expect(bodyOf((await raw.next()).data)).toBe("again")
    expect(session.peerChannelCount).toBe(1)
  })

  it("a request too large for one packet on a channel closed while busy goes on the same channel: its continuation is dropped there, not read as a new channel's", async () => {
    const { hold, raw, session } = await holdingServer()
    raw.write(request("/hold", 1, 1, ""))
    expect((await raw.next()).status).toBe(4) // the answer streams: the channel is busy
    raw.write(frame(1, MeshPath.close, 0, encodeEnvelope(EnvelopeKind.request, EnvelopeFlag.oneway, 1, emptyMeta, encodeChannelId(1), 8192)))
    // Reused at once (§11): a first packet above the whole-body limit, its body to go on in a continuation.
    const oversize = Buffer.alloc(2 * 1024 * 1024, 1)
    raw.write(frame(0, "/echo", 1, encodeEnvelope(EnvelopeKind.request, 0, 2, emptyMeta, oversize, 8192)))
    // Read (it waits its turn behind the streaming answer) before the answer ends.
    await waitFor(() => session.servingCount === 2, 5000, "the large request to wait its turn")
    hold.resolve()
    // The stream's rest and last packet, then the refusal of the large request: all on channel 1.
    const packets = [await raw.next()]
    while (packets.at(-1)!.status !== 5) packets.push(await raw.next())
    expect(packets.every((p) => p.channelId === 1)).toBe(true)
    expect(decodeEnvelope(packets.at(-1)!.data, MeshDefaults.maxMetaBytes).kind).toBe(EnvelopeKind.error)
    // The large request's continuation, then a request: the channel goes on.
    raw.write(frame(3, "/echo", 1, Buffer.concat([Buffer.of(0), Buffer.from("rest")])), request("/echo", 1, 3, "after"))
    const after = await raw.next()
    expect({ channel: after.channelId, status: after.status, body: bodyOf(after.data), closed: session.closed }).toEqual({ channel: 1, status: 5, body: "after", closed: false })
    expect(session.peerChannelCount).toBe(1)
  })
})
