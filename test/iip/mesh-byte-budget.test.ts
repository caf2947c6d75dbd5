// A caller's cancel must reach its handler whatever else holds the server's per-connection budget
// (PROTOCOL.md §8, §10, §14): the server never stops reading for
// something its caller could not see, so a /sys/cancel is always read.
// - pushes: the server counts running pushes apart from requests (its caller cannot see a push
//   end); before, 4 long-running pushes filled a request budget of 4, the server paused reading,
//   and the cancel of a running call sat unread. A push while none runs is always taken: before,
//   one larger than the allowance (200 KiB against 128 KiB) was dropped every time.
import type * as net from "node:net"
import { afterEach, beforeEach, describe, expect, it } from "vitest"
import type { IipClient } from "../../src/iip/client.ts"
import { type IncomingRequest, type IipServer, reply } from "../../src/iip/server.ts"
import { Cancelled, type MeshReply, type MeshSession } from "../../src/mux/meshSession.ts"
import { AcceptorControlChannel, decodeEnvelope, emptyMeta, encodeCredit, encodeEnvelope, EnvelopeFlag, EnvelopeKind, MeshFeatures, MeshPath } from "../../src/protocol/mesh.ts"
import { Cleanup, deferred, frame, type RawPacket, waitFor, withTimeout } from "../support/iipRaw.ts"
import { collectLog, helloOf, settle, startClient, startRawMeshPeer, startServer } from "../support/meshTest.ts"

describe("a caller's cancel reaches its handler while the server holds all its per-connection budget", () => {
  let cleanup: Cleanup
  let started = 0
  let interrupted = 0
  let running = 0

  /** A server whose /hang runs until its request's signal fires. */
  const hangingServer = async (options: Parameters<typeof startServer>[1]): Promise<IipServer> => {
    const server = await startServer(cleanup, options)
    server.handle("/echo", (request) => request.data)
    server.handle("/hang", (request: IncomingRequest) => {
      started++
      running++
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
    return server
  }

  /** Cancels every call once some run; every handler that ran must be interrupted, and the connection serve on. */
  const cancelAll = async (client: IipClient, calls: ReadonlyArray<{ controller: AbortController; outcome: Promise<unknown> }>) => {
    await waitFor(() => running >= 1, 5000, "the server to run one of the hanging calls")
    for (const call of calls) call.controller.abort()
    for (const outcome of (await Promise.all(calls.map((c) => c.outcome))) as Array<{ ok: boolean; error?: unknown }>) {
      expect(outcome.ok === false && outcome.error instanceof Cancelled).toBe(true)
    }
    await waitFor(() => running === 0, 5000, `every running handler to be interrupted (running ${running}, started ${started}, interrupted ${interrupted})`)
    expect(interrupted).toBe(started)
    expect((await client.call("/echo", "after", { timeoutMs: 5000 })).toString()).toBe("after")
    expect(client.stats).toMatchObject({ mesh: 1, connections: 1 })
  }

  const hang = (client: IipClient, body: Uint8Array) => {
    const controller = new AbortController()
    return { controller, outcome: settle(client.call("/hang", body, { timeoutMs: 60_000, signal: controller.signal })) }
  }

  beforeEach(() => {
    cleanup = new Cleanup()
    started = interrupted = running = 0
  })

  afterEach(() => cleanup.run())

  it("4 long-running pushes against a request budget of 4: a running call's cancel still interrupts it; a fifth push is dropped (logged), not read past the budget", async () => {
    const { events, log } = collectLog()
    const server = await hangingServer({ maxQueuedRequestsPerConnection: 4, log })
    const parked: Array<() => void> = []
    server.handle("/park", () => new Promise<string>((resolve) => parked.push(() => resolve("done"))))
    cleanup.add(() => parked.forEach((resolve) => resolve()))
    const client = startClient(cleanup, server.address.port, { maxConnections: 1, maxChannelsPerConnection: 4 })
    expect((await client.call("/echo", "warm-up", { timeoutMs: 5000 })).toString()).toBe("warm-up")
    const call = hang(client, Buffer.from("h"))
    await waitFor(() => running === 1, 5000, "the hanging call to run")
    for (let i = 0; i < 4; i++) client.push("/park", `p${i}`)
    await waitFor(() => parked.length === 4, 5000, `the 4 pushes to run (${parked.length})`)
    expect(events.filter((e) => e.event === "push-failed")).toEqual([])
    // Pushes have an allowance of their own, as large as the request budget: past it one is dropped.
    client.push("/park", "p4")
    await waitFor(() => events.some((e) => e.event === "push-failed"), 5000, "the fifth push to be dropped")
    expect(events.filter((e) => e.event === "push-failed").map((e) => e.fields.code)).toEqual(["overloaded"])
    await cancelAll(client, [call])
    expect(parked.length).toBe(4)
  })

  /** A body of `chunks` chunks of 64 KiB, given as an iterable: it streams. */
  async function* upload(chunks: number): AsyncIterable<Uint8Array> {
    for (let i = 0; i < chunks; i++) yield Buffer.alloc(64 * 1024)
  }

  it("4 long-running 1 MiB uploads whose handlers do not read, against a byte budget of 256 KiB: every cancel reaches its handler, and their credit comes back", async () => {
    const server = await hangingServer({ maxQueuedBytesPerConnection: 256 * 1024 })
    server.handle("/count", async (request: IncomingRequest) => String((await request.context.stream!.readAll(8 * 1024 * 1024)).length))
    const client = startClient(cleanup, server.address.port, { maxConnections: 1, maxChannelsPerConnection: 4 })
    expect((await client.call("/echo", "warm-up", { timeoutMs: 5000 })).toString()).toBe("warm-up")
    const calls = Array.from({ length: 4 }, () => {
      const controller = new AbortController()
      return { controller, outcome: settle(client.stream("/hang", upload(16), { timeoutMs: 60_000, signal: controller.signal })) }
    })
    // All four run (the first packet of each carries no body): their cancels come after the bodies' bytes.
    await waitFor(() => running === 4, 5000, `the 4 uploads to run (${running})`)
    await cancelAll(client, calls)
    // What the cancelled uploads held was granted back: 4 MiB more goes through the 256 KiB credit.
    expect((await client.stream("/count", upload(64), { timeoutMs: 5000 })).data.toString()).toBe(String(4 * 1024 * 1024))
  })

  it("an upload whose handler does not read, against a byte budget of 256 KiB, does not hold up calls with whole bodies on the connection", async () => {
    const server = await hangingServer({ maxQueuedBytesPerConnection: 256 * 1024 })
    const client = startClient(cleanup, server.address.port, { maxConnections: 1, maxChannelsPerConnection: 8 })
    expect((await client.call("/echo", "warm-up", { timeoutMs: 5000 })).toString()).toBe("warm-up")
    const controller = new AbortController()
    const stalled = settle(client.stream("/hang", upload(16), { timeoutMs: 60_000, signal: controller.signal }))
    await waitFor(() => running === 1, 5000, "the upload to run")
    // It takes what the credit leaves above the reserve; calls with bodies go in the reserve, one after another.
    for (let i = 0; i < 8; i++) expect((await client.call("/echo", Buffer.alloc(10 * 1024, 0x30 + i), { timeoutMs: 5000 })).length).toBe(10 * 1024)
    controller.abort()
    expect(((await stalled) as { error?: unknown }).error).toBeInstanceOf(Cancelled)
    await waitFor(() => running === 0, 5000, `the upload's handler to be interrupted (running ${running})`)
  })

  it("compressed uploads refused while the server is full give their dropped chunks' credit back", async () => {
    // Two calls running fill a server-wide budget of 1 request: uploads are then refused (overloaded) and their chunks dropped.
    const server = await hangingServer({ maxQueuedBytesPerConnection: 256 * 1024, maxQueuedRequests: 1 })
    server.handle("/count", async (request: IncomingRequest) => String((await request.context.stream!.readAll(8 * 1024 * 1024)).length))
    const client = startClient(cleanup, server.address.port, { maxConnections: 1, maxChannelsPerConnection: 8, compression: {} })
    expect((await client.call("/echo", "warm-up", { timeoutMs: 5000 })).toString()).toBe("warm-up")
    const hanging = [hang(client, Buffer.from("a")), hang(client, Buffer.from("b"))]
    await waitFor(() => running === 2, 5000, "two calls to run")
    // Zeros, from a client that compresses: each 64 KiB chunk goes compressed.
    for (let i = 0; i < 4; i++) {
      const refused = await settle(client.stream("/count", upload(16), { timeoutMs: 5000 }))
      expect(refused.ok).toBe(false)
    }
    await cancelAll(client, hanging)
    expect((await client.stream("/count", upload(16), { timeoutMs: 5000 })).data.toString()).toBe(String(1024 * 1024))
  })

  it("16 long-running calls with 60 KiB bodies against a byte budget of 256 KiB: every handler that ran is interrupted", async () => {
    const server = await hangingServer({ maxQueuedBytesPerConnection: 256 * 1024 })
    const client = startClient(cleanup, server.address.port, { maxConnections: 1, maxChannelsPerConnection: 16 })
    expect((await client.call("/echo", "warm-up", { timeoutMs: 5000 })).toString()).toBe("warm-up")
    const body = Buffer.alloc(60 * 1024, 0x61)
    await cancelAll(client, Array.from({ length: 16 }, () => hang(client, body)))
  })
})

describe("pushes against a small byte budget", () => {
  let cleanup: Cleanup

  beforeEach(() => {
    cleanup = new Cleanup()
  })

  afterEach(() => cleanup.run())

  it("a push larger than the push allowance runs when no other push is running, as a request alone always goes", async () => {
    const { events, log } = collectLog()
    const server = await startServer(cleanup, { maxQueuedBytesPerConnection: 128 * 1024, log })
    const got: Array<number> = []
    server.handle("/big", (request: IncomingRequest) => {
      got.push(request.data.length)
      return "ok"
    })
    const client = startClient(cleanup, server.address.port, { maxConnections: 1 })
    expect((await client.call("/big", "warm-up", { timeoutMs: 5000 })).toString()).toBe("ok")
    got.length = 0
    // One after the other, each alone: before, each was dropped ('the connection holds all the pushes it may').
    for (const n of [1, 2]) {
      client.push("/big", Buffer.alloc(200 * 1024, 0x70))
      await waitFor(() => got.length === n || events.some((e) => e.event === "push-failed"), 5000, `push ${n} to run or be dropped`)
    }
    expect(events.filter((e) => e.event === "push-failed")).toEqual([])
    expect(got).toEqual([200 * 1024, 200 * 1024])
  })
})

describe("a client keeps within the connection credit its peer grants (conncredit, maxBytes in the hello)", () => {
  let cleanup: Cleanup

  beforeEach(() => {
    cleanup = new Cleanup()
  })

  afterEach(() => cleanup.run())

  async function* upload(chunks: number): AsyncIterable<Uint8Array> {
    for (let i = 0; i < chunks; i++) yield Buffer.alloc(64 * 1024, 0x75)
  }

  /** Body bytes of the upload's continuation packets the peer has read (a data chunk: header byte 00 and its bytes). */
  const uploaded = (packets: ReadonlyArray<RawPacket>): number =>
    packets.filter((p) => p.path === "/up" && (p.status & 1) === 0 && p.data[0] === 0).reduce((n, p) => n + p.data.length - 1, 0)

  /** The peer grants `bytes` of credit back: a push on its control channel. */
  let grantId = 0
  const grant = (socket: net.Socket, bytes: number) =>
    socket.write(frame(1, MeshPath.credit, AcceptorControlChannel, encodeEnvelope(EnvelopeKind.request, EnvelopeFlag.oneway, ++grantId, emptyMeta, encodeCredit(bytes), 8192)))

  /** A ping written now arrives after everything the client wrote before it (TCP keeps order). */
  const pinged = async (client: IipClient, peer: Awaited<ReturnType<typeof startRawMeshPeer>>) => {
    client.meshSessions[0]!.ping(() => {})
    await peer.take((p) => p.path === MeshPath.ping, 5000, "a ping written after what the credit let go")
  }

  it("an upload stops at the credit less a reserve kept for whole bodies; pings and calls do not wait behind it; each grant lets that much more go", async () => {
    // 160 KiB of credit: streams leave a quarter (40 KiB) to whole bodies.
    const peer = await startRawMeshPeer(cleanup, helloOf({ maxBytes: 160 * 1024 }))
    const client = startClient(cleanup, peer.port, { maxConnections: 1, maxChannelsPerConnection: 4 })
    void settle(client.stream("/up", upload(8), { timeoutMs: 10_000 }))
    await waitFor(() => uploaded(peer.packets) >= 120 * 1024, 5000, `the first 120 KiB (${uploaded(peer.packets)})`)
    await pinged(client, peer)
    expect(uploaded(peer.packets)).toBe(120 * 1024)
    // A whole body goes in the reserve; the next one that does not fit waits, in order, and goes
    // first when a grant makes room, before the upload.
    void settle(client.call("/whole", Buffer.alloc(30 * 1024, 0x31), { timeoutMs: 10_000 }))
    await peer.take((p) => p.path === "/whole", 5000, "a whole 30 KiB body, within the reserve")
    void settle(client.call("/whole", Buffer.alloc(30 * 1024, 0x32), { timeoutMs: 10_000 }))
    await pinged(client, peer)
    expect(peer.packets.filter((p) => p.path === "/whole")).toEqual([])
    grant(peer.sockets[0]!, 20 * 1024)
    await peer.take((p) => p.path === "/whole", 5000, "the held call, once a grant makes room")
    await pinged(client, peer)
    expect(uploaded(peer.packets)).toBe(120 * 1024)
    // Credit 64 KiB, of which the upload takes what is above the reserve.
    grant(peer.sockets[0]!, 64 * 1024)
    await waitFor(() => uploaded(peer.packets) >= 144 * 1024, 5000, `24 KiB more (${uploaded(peer.packets)})`)
    await pinged(client, peer)
    expect(uploaded(peer.packets)).toBe(144 * 1024)
    // A grant past what was sent never lets more than the budget go at once.
    grant(peer.sockets[0]!, 0xffff_ffff)
    await waitFor(() => uploaded(peer.packets) >= 264 * 1024, 5000, `up to the budget again (${uploaded(peer.packets)})`)
    await pinged(client, peer)
    expect(uploaded(peer.packets)).toBe(264 * 1024)
  })

  it("a call with no body goes past a whole body held for credit, but not past one held on its own channel", async () => {
    // 160 KiB of credit: the upload takes 120 KiB, a 30 KiB body 30 of the 40 KiB reserve, the next one waits.
    const peer = await startRawMeshPeer(cleanup, helloOf({ maxBytes: 160 * 1024 }))
    const client = startClient(cleanup, peer.port, { maxConnections: 1, maxChannelsPerConnection: 4 })
    void settle(client.stream("/up", upload(8), { timeoutMs: 10_000 }))
    await waitFor(() => uploaded(peer.packets) >= 120 * 1024, 5000, `the first 120 KiB (${uploaded(peer.packets)})`)
    void settle(client.call("/whole", Buffer.alloc(30 * 1024, 0x31), { timeoutMs: 10_000 }))
    await peer.take((p) => p.path === "/whole", 5000, "a whole 30 KiB body, within the reserve")
    const session = client.meshSessions[0]!
    const channel = session.openChannel()
    session.call(channel, "/whole", Buffer.alloc(30 * 1024, 0x32), { timeoutMs: 10_000 }, () => {})
    session.call(channel, "/behind", Buffer.alloc(0), { timeoutMs: 10_000 }, () => {})
    // Before, it waited behind the held body until a grant.
    session.call(session.openChannel(), "/bare", Buffer.alloc(0), { timeoutMs: 10_000 }, () => {})
    await peer.take((p) => p.path === "/bare", 5000, "the bodyless call on another channel, with no grant")
    await pinged(client, peer)
    expect(peer.packets.filter((p) => p.path === "/whole" || p.path === "/behind")).toEqual([])
    grant(peer.sockets[0]!, 20 * 1024)
    await peer.take((p) => p.path === "/behind", 5000, "the bodyless call behind the held body on its channel, once it went")
    expect(peer.packets.filter((p) => p.path === "/whole").length).toBe(1)
  })

  it("a call with no body held for the request budget behind a body held for credit goes when an answer makes room", async () => {
    // A budget of 3 requests: the upload, a 30 KiB body and a bodyless call that went past the held body.
    const peer = await startRawMeshPeer(cleanup, helloOf({ maxBytes: 160 * 1024, maxRequests: 3 }))
    const client = startClient(cleanup, peer.port, { maxConnections: 1, maxChannelsPerConnection: 8 })
    void settle(client.stream("/up", upload(8), { timeoutMs: 10_000 }))
    await waitFor(() => uploaded(peer.packets) >= 120 * 1024, 5000, `the first 120 KiB (${uploaded(peer.packets)})`)
    void settle(client.call("/whole", Buffer.alloc(30 * 1024, 0x31), { timeoutMs: 10_000 }))
    await peer.take((p) => p.path === "/whole", 5000, "a whole 30 KiB body, within the reserve")
    const session = client.meshSessions[0]!
    session.call(session.openChannel(), "/whole", Buffer.alloc(30 * 1024, 0x32), { timeoutMs: 10_000 }, () => {})
    const answered = deferred()
    session.call(session.openChannel(), "/bare", Buffer.alloc(0), { timeoutMs: 10_000 }, () => answered.resolve())
    const first = await peer.take((p) => p.path === "/bare", 5000, "the first bodyless call")
    session.call(session.openChannel(), "/bare", Buffer.alloc(0), { timeoutMs: 10_000 }, () => {})
    await pinged(client, peer)
    expect(peer.packets.filter((p) => p.path === "/bare")).toEqual([])
    // The first is answered: its room goes to the bodyless call, not the body still short of credit.
    const requestId = decodeEnvelope(first.data, 8192).requestId
    peer.sockets[0]!.write(frame(5, "/bare", first.channelId, encodeEnvelope(EnvelopeKind.response, 0, requestId, emptyMeta, Buffer.from("ok"), 8192)))
    await withTimeout(answered.promise, 5000, "the answer to the first")
    await peer.take((p) => p.path === "/bare", 5000, "the second bodyless call, once an answer made room")
    expect(peer.packets.filter((p) => p.path === "/whole")).toEqual([])
  })

  it("a streamed answer to the server's own call, cancelled unread, gives its credit back: the client's uploads still flow", async () => {
    // 256 KiB of credit: the answer takes what is above the reserve (192 KiB), unread.
    const server = await startServer(cleanup, { maxQueuedBytesPerConnection: 256 * 1024 })
    server.handle("/count", async (request: IncomingRequest) => String((await request.context.stream!.readAll(8 * 1024 * 1024)).length))
    const connected = deferred<MeshSession>()
    server.onMeshConnection((s) => connected.resolve(s))
    const client = startClient(cleanup, server.address.port, { maxConnections: 1 })
    client.handle("/download", () => reply(upload(16)))
    expect((await client.stream("/count", upload(1), { timeoutMs: 5000 })).data.toString()).toBe(String(64 * 1024))
    const session = await withTimeout(connected.promise, 5000, "onMeshConnection")
    const controller = new AbortController()
    const answer = deferred<MeshReply | undefined>()
    session.call(session.openChannel(), "/download", Buffer.alloc(0), { timeoutMs: 10_000, streamResponse: true, signal: controller.signal }, (_, r) => answer.resolve(r))
    const stream = (await withTimeout(answer.promise, 5000, "the streamed answer"))!.stream!
    await waitFor(() => stream.unreadBytes >= 192 * 1024, 5000, `the answer to fill the credit above the reserve (${stream.unreadBytes})`)
    controller.abort()
    // Before, its 192 KiB stayed held: the client kept only the reserve, which streams never take.
    expect((await client.stream("/count", upload(16), { timeoutMs: 5000 })).data.toString()).toBe(String(1024 * 1024))
  })

  it("a peer that does not name conncredit is sent to as before, whatever its maxBytes", async () => {
    const peer = await startRawMeshPeer(cleanup, helloOf({ maxBytes: 160 * 1024, features: MeshFeatures.filter((f) => f !== "conncredit") }))
    const client = startClient(cleanup, peer.port, { maxConnections: 1, maxChannelsPerConnection: 4 })
    void settle(client.stream("/up", upload(8), { timeoutMs: 10_000 }))
    await waitFor(() => uploaded(peer.packets) === 512 * 1024, 5000, `the whole upload within the stream window (${uploaded(peer.packets)})`)
    expect(client.meshSessions[0]!.agreed.maxBytes).toBeUndefined()
  })
})
