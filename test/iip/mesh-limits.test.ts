// Limits a mesh peer cannot talk its way past (issue 13, points 4 and 8; PROTOCOL.md §10, §14):
// - channels: the acceptor keeps its own maxChannelsPerConnection whatever the dialer's hello
//   declares (2^31-1 here): its answer says the smaller, and one channel more closes the
//   connection (too-many-channels); a client never opens more than the server takes;
// - windows: a peer streaming past twice the window it was given (no grant came) is closed, alone,
//   a stream's first packet too (its bytes were dropped silently before);
// - deadline-ms: a value a timer cannot hold (99999999999, Infinity, 1e309) or that is not plain
//   digits is never passed to a timer as is: digits only, clamped to 24 h; anything else is no
//   deadline at all. The request is answered, not failed at once.
import { afterEach, beforeEach, describe, expect, it } from "vitest"
import type { IncomingRequest } from "../../src/iip/server.ts"
import { monotonicMs } from "../../src/mux/clock.ts"
import { decodeEnvelope, decodeErrorBody, decodeHello, emptyMeta, encodeEnvelope, encodeHello, EnvelopeKind, MaxDeadlineMs, MeshDefaults, MeshPath } from "../../src/protocol/mesh.ts"
import { Cleanup, frame, RawClient, waitFor } from "../support/iipRaw.ts"
import { collectLog, helloOf, startClient, startServer } from "../support/meshTest.ts"

const answerBody = (data: Buffer) => {
  const envelope = decodeEnvelope(data, MeshDefaults.maxMetaBytes)
  return { envelope, body: data.subarray(envelope.bodyOffset) }
}

describe("limits a mesh dialer cannot raise", () => {
  let cleanup: Cleanup

  beforeEach(() => {
    cleanup = new Cleanup()
  })

  afterEach(() => cleanup.run())

  it("a dialer declaring maxChannels 2^31-1 still gets the server's 8: its answer says 8, and a ninth channel closes the connection", async () => {
    const { events, log } = collectLog()
    const server = await startServer(cleanup, { maxChannelsPerConnection: 8, log })
    server.handle("/echo", (request) => request.data)
    const raw = await RawClient.connect(server.address.port, cleanup)
    raw.write(frame(1, MeshPath.hello, 0, encodeHello(helloOf({ node: "greedy", maxChannels: 0x7fff_ffff }), false)))
    const hello = decodeHello((await raw.next()).data)
    expect(hello?.maxChannels).toBe(8)
    for (let channel = 1; channel <= 8; channel++) {
      raw.write(frame(1, "/echo", channel, encodeEnvelope(EnvelopeKind.request, 0, 1, emptyMeta, Buffer.from(`c${channel}`), 8192)))
      const answer = await raw.next()
      expect(answer.channelId).toBe(channel)
      expect(answerBody(answer.data).body.toString()).toBe(`c${channel}`)
    }
    raw.write(frame(1, "/echo", 9, encodeEnvelope(EnvelopeKind.request, 0, 1, emptyMeta, Buffer.from("c9"), 8192)))
    await raw.waitClose()
    expect(raw.packets).toEqual([])
    expect(events.find((e) => e.event === "protocol-violation")?.fields.rule).toBe("too-many-channels")
  })

  it("a client allowed 32 channels opens no more than the 4 its server takes, and all its calls are answered", async () => {
    const server = await startServer(cleanup, { maxChannelsPerConnection: 4 })
    server.handle("/slow", (request) => new Promise<Buffer>((resolve) => setTimeout(() => resolve(request.data), 20)))
    const client = startClient(cleanup, server.address.port, { maxConnections: 1, maxChannelsPerConnection: 32, idleChannelsAhead: 8 })
    const answers = await Promise.all(Array.from({ length: 64 }, (_, i) => client.call("/slow", `n${i}`, { timeoutMs: 10_000 })))
    expect(answers.map((a) => a.toString())).toEqual(Array.from({ length: 64 }, (_, i) => `n${i}`))
    expect(client.stats.connections).toBe(1)
    expect(client.meshSessions[0]!.channelCount).toBe(4)
  })
})

describe("stream windows", () => {
  let cleanup: Cleanup

  beforeEach(() => {
    cleanup = new Cleanup()
  })

  afterEach(() => cleanup.run())

  it("a peer that streams past the window it was given is a protocol error that closes its connection only", async () => {
    const { events, log } = collectLog()
    const server = await startServer(cleanup, { log })
    server.handle("/hang", () => new Promise<string>(() => {}))
    server.handle("/echo", (request) => request.data)
    const legit = startClient(cleanup, server.address.port, { maxConnections: 1 })
    expect((await legit.call("/echo", "before", { timeoutMs: 5000 })).toString()).toBe("before")
    const raw = await RawClient.connect(server.address.port, cleanup)
    raw.write(frame(1, MeshPath.hello, 0, encodeHello(helloOf(), false)))
    const hello = decodeHello((await raw.next()).data)!
    // The handler never reads, so no grant comes: past twice the window (the tolerance for stale grants) is a violation.
    raw.write(frame(0, "/hang", 1, encodeEnvelope(EnvelopeKind.request, 0, 1, emptyMeta, Buffer.alloc(0), 8192)))
    const chunk = Buffer.concat([Buffer.of(0), Buffer.alloc(MeshDefaults.chunkBytes, 0x77)])
    for (let sent = 0; sent <= 2 * hello.streamWindow; sent += MeshDefaults.chunkBytes) raw.socket.write(frame(2, "/hang", 1, chunk))
    await raw.waitClose(5000)
    expect(events.find((e) => e.event === "protocol-violation")?.fields.rule).toBe("window-exceeded")
    expect((await legit.call("/echo", "after", { timeoutMs: 5000 })).toString()).toBe("after")
  })

  it("a stream's first packet carrying more than twice the window closes the connection (window-exceeded), its bytes not dropped silently", async () => {
    const { events, log } = collectLog()
    const server = await startServer(cleanup, { log, connectionLimits: { maxWholeBodyBytes: 4 * 1024 * 1024 } })
    let seen = -1
    server.handle("/drain", async (request: IncomingRequest) => {
      let bytes = request.data.length
      for await (const chunk of request.context.stream!) bytes += chunk.length
      seen = bytes
      return String(bytes)
    })
    const raw = await RawClient.connect(server.address.port, cleanup)
    raw.write(frame(1, MeshPath.hello, 0, encodeHello(helloOf(), false)))
    const hello = decodeHello((await raw.next()).data)!
    const first = Buffer.alloc(2 * hello.streamWindow + 1, 0x63)
    raw.write(frame(0, "/drain", 1, encodeEnvelope(EnvelopeKind.request, 0, 1, emptyMeta, first, 8192)), frame(3, "/drain", 1, Buffer.of(0)))
    await raw.waitClose(5000)
    expect(events.find((e) => e.event === "protocol-violation")?.fields.rule).toBe("window-exceeded")
    expect(seen).toBe(-1)
  })
})

describe("deadline-ms from the wire", () => {
  let cleanup: Cleanup

  beforeEach(() => {
    cleanup = new Cleanup()
  })

  afterEach(() => cleanup.run())

  it.each(["99999999999", "Infinity", "1e309", "1e3", "-5", "12abc", " 50", "0x10", ""])("%j: the request is answered, with a deadline of at most 24 h or none", async (value) => {
    const server = await startServer(cleanup)
    const seen: Array<number> = []
    server.handle("/slow", (request) => {
      seen.push(request.context.deadline === 0 ? 0 : request.context.deadline - monotonicMs())
      return new Promise<Buffer>((resolve) => setTimeout(() => resolve(request.data), 30))
    })
    const raw = await RawClient.connect(server.address.port, cleanup)
    raw.write(frame(1, MeshPath.hello, 0, encodeHello(helloOf(), false)))
    await raw.next()
    raw.write(frame(1, "/slow", 1, encodeEnvelope(EnvelopeKind.request, 0, 1, new Map([["deadline-ms", value]]), Buffer.from("ok"), 8192)))
    const answer = answerBody((await raw.next(5000)).data)
    expect(answer.envelope.kind === EnvelopeKind.error ? decodeErrorBody(answer.body) : answer.body.toString()).toBe("ok")
    await waitFor(() => seen.length === 1, 2000, "the handler")
    expect(seen[0]!).toBeLessThanOrEqual(MaxDeadlineMs)
    if (value === "99999999999") expect(seen[0]!).toBeGreaterThan(MaxDeadlineMs - 60_000)
    else expect(seen[0]).toBe(0)
  })

  // (A timeout of NaN is refused before anything is sent since w13-rlibopts: test/iip/option-limits.test.ts.)
  it("a caller's timeout of Infinity or 1e12 is clamped too (mesh and plain): the call is answered, not timed out at once", async () => {
    const server = await startServer(cleanup)
    server.handle("/slow", (request) => new Promise<Buffer>((resolve) => setTimeout(() => resolve(request.data), 30)))
    for (const mesh of [true, false]) {
      const client = startClient(cleanup, server.address.port, { mesh })
      for (const timeoutMs of [Infinity, 1e12]) {
        expect((await client.call("/slow", `t${timeoutMs}`, { timeoutMs })).toString()).toBe(`t${timeoutMs}`)
      }
    }
  })

  it("a well-formed deadline still interrupts the handler when it passes", async () => {
    const server = await startServer(cleanup)
    server.handle("/never", () => new Promise<string>(() => {}))
    const raw = await RawClient.connect(server.address.port, cleanup)
    raw.write(frame(1, MeshPath.hello, 0, encodeHello(helloOf(), false)))
    await raw.next()
    raw.write(frame(1, "/never", 1, encodeEnvelope(EnvelopeKind.request, 0, 1, new Map([["deadline-ms", "40"]]), Buffer.from("x"), 8192)))
    const answer = answerBody((await raw.next(5000)).data)
    expect(answer.envelope.kind).toBe(EnvelopeKind.error)
    expect(decodeErrorBody(answer.body).code).toBe("deadline_exceeded")
  })
})
