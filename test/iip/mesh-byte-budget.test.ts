// A caller's cancel must reach its handler whatever else holds the server's per-connection budget
// (PROTOCOL.md §8, §10 `maxRequests` and `maxBytes`, §14): the server never stops reading for
// something its caller could not see, so a /sys/cancel is always read.
// - pushes: the server counts running pushes apart from requests (its caller cannot see a push
//   end); before, 4 long-running pushes filled a request budget of 4, the server paused reading,
//   and the cancel of a running call sat unread. A push while none runs is always taken: before,
//   one larger than the allowance (200 KiB against 128 KiB) was dropped every time.
// - bytes: the server states its byte budget in its hello (maxBytes) and the client keeps what its
//   written calls make it hold (a body until answered, a streamed body's window until answered)
//   within it, holding the rest in order; before, 16 calls with 60 KiB bodies against 256 KiB
//   (running 3, interrupted 0) or 4 uploads of 1 MiB (running 4, interrupted 0) paused the server
//   and no handler was interrupted after the cancels. Against a hand-played peer: what goes out
//   and what waits, and a held call cancelled lets the ones behind it go. What the client counts
//   (calls and bytes) is 0 again after every way a call ends: answered, error, timed out or
//   cancelled (held or written), streamed answer cut, failed body stream, released tunnel, flag 04
//   on an answer that is no tunnel (counted out once), pushes (never counted).
import { afterEach, beforeEach, describe, expect, it } from "vitest"
import type { IipClient } from "../../src/iip/client.ts"
import type { IncomingRequest, IipServer } from "../../src/iip/server.ts"
import { Cancelled } from "../../src/mux/meshSession.ts"
import { decodeChannelPair, decodeEnvelope, emptyMeta, encodeEnvelope, EnvelopeFlag, EnvelopeKind, MeshDefaults, MeshPath } from "../../src/protocol/mesh.ts"
import { Cleanup, frame, type RawPacket, waitFor, withTimeout } from "../support/iipRaw.ts"
import { collectLog, helloOf, type Settled, settle, startClient, startRawMeshPeer, startServer } from "../support/meshTest.ts"

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

  it("16 long-running calls with 60 KiB bodies against a byte budget of 256 KiB: every handler that ran is interrupted", async () => {
    const server = await hangingServer({ maxQueuedBytesPerConnection: 256 * 1024 })
    const client = startClient(cleanup, server.address.port, { maxConnections: 1, maxChannelsPerConnection: 16 })
    expect((await client.call("/echo", "warm-up", { timeoutMs: 5000 })).toString()).toBe("warm-up")
    expect(client.meshSessions[0]!.agreed.maxBytes).toBe(256 * 1024)
    const body = Buffer.alloc(60 * 1024, 0x61)
    await cancelAll(client, Array.from({ length: 16 }, () => hang(client, body)))
  })

  it("4 long-running 1 MiB uploads against a byte budget of 256 KiB: every handler that ran is interrupted", async () => {
    const server = await hangingServer({ maxQueuedBytesPerConnection: 256 * 1024 })
    const client = startClient(cleanup, server.address.port, { maxConnections: 1, maxChannelsPerConnection: 4 })
    expect((await client.call("/echo", "warm-up", { timeoutMs: 5000 })).toString()).toBe("warm-up")
    const body = Buffer.alloc(1024 * 1024, 0x62)
    await cancelAll(client, Array.from({ length: 4 }, () => hang(client, body)))
  })
})

const bodyOf = (packet: RawPacket): Buffer => packet.data.subarray(decodeEnvelope(packet.data, MeshDefaults.maxMetaBytes).bodyOffset)

describe("a client keeps what its calls make the peer hold within the byte budget its hello states (maxBytes)", () => {
  let cleanup: Cleanup

  beforeEach(() => {
    cleanup = new Cleanup()
  })

  afterEach(() => cleanup.run())

  const answer = (packet: RawPacket) => frame(5, packet.path, packet.channelId, encodeEnvelope(EnvelopeKind.response, 0, packet.data.readUInt32BE(4), emptyMeta, Buffer.from("ok"), 8192))

  it("against 100 KiB: a second 60 KiB body waits for the first's answer, a small call waits behind it, and goes out when the held one is cancelled", async () => {
    const peer = await startRawMeshPeer(cleanup, helloOf({ maxBytes: 100 * 1024 }))
    const client = startClient(cleanup, peer.port, { maxConnections: 1, maxChannelsPerConnection: 4 })
    const first = settle(client.call("/x", Buffer.alloc(60 * 1024, 1), { timeoutMs: 10_000 }))
    const c0 = await peer.take((p) => p.path === "/x", 5000, "the first call")
    const held = new AbortController()
    const second = settle(client.call("/x", Buffer.alloc(60 * 1024, 2), { timeoutMs: 10_000, signal: held.signal }))
    const small = settle(client.call("/x", "s", { timeoutMs: 10_000 }))
    // Nothing else goes out while the first holds 60 of the 100 KiB, the small call keeping its
    // turn: a ping (never held) written after them arrives with nothing before it.
    client.meshSessions[0]!.ping(() => {})
    await peer.take((p) => p.path === MeshPath.ping, 5000, "a ping written after the held calls")
    expect(peer.packets.filter((p) => p.path === "/x")).toEqual([])
    held.abort()
    const c2 = await peer.take((p) => p.path === "/x", 5000, "the small call, once the held one ahead of it is cancelled")
    expect(bodyOf(c2).toString()).toBe("s")
    for (const packet of [c0, c2]) peer.sockets[0]!.write(answer(packet))
    expect((await Promise.all([first, second, small])).map((o) => (o.ok ? o.value.toString() : (o.error as { _tag: string })._tag))).toEqual(["ok", "Cancelled", "ok"])
    expect(peer.packets.filter((p) => p.path === "/x")).toEqual([])
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

describe("what a client counts in the peer's budget returns to 0 whatever way its calls end", () => {
  let cleanup: Cleanup

  beforeEach(() => {
    cleanup = new Cleanup()
  })

  afterEach(() => cleanup.run())

  const reply = (status: number, packet: RawPacket, kind: number, flags: number, body: Buffer) =>
    frame(status, packet.path, packet.channelId, encodeEnvelope(kind, flags, packet.data.readUInt32BE(4), emptyMeta, body, 8192))
  const failedBody = Buffer.from(JSON.stringify({ code: "handler_failed", message: "no", processed: true }))

  it("answered, error, timed out and cancelled (held or written), streamed answer cut, failed body stream, released tunnel, flag 04 on a plain answer, pushes", async () => {
    const peer = await startRawMeshPeer(cleanup, helloOf({ maxBytes: 100 * 1024, maxRequests: 8, streamWindow: 32 * 1024 }))
    const { events, log } = collectLog()
    const client = startClient(cleanup, peer.port, { maxConnections: 1, maxChannelsPerConnection: 4, log })
    /** Per channel, the requests read in order and their answers once known: a channel answers in order. */
    const queues = new Map<number, Array<{ readonly packet: RawPacket; answer: Buffer | undefined }>>()
    const flush = (channelId: number) => {
      const queue = queues.get(channelId) ?? []
      while (queue.length > 0 && queue[0]!.answer !== undefined) peer.sockets[0]!.write(queue.shift()!.answer!)
    }
    const pending = () => [...queues.values()].reduce((n, q) => n + q.length, 0)
    let stop = false
    const serve = async () => {
      while (!stop) {
        const p = await peer.take(() => true, 10_000, "a packet from the client").catch(() => undefined)
        if (p === undefined) return
        if (p.path === MeshPath.cancel) {
          // A cancelled (or timed out) /wait is answered now, in its turn.
          const [channelId, requestId] = decodeChannelPair(bodyOf(p))!
          const entry = queues.get(channelId)?.find((e) => e.packet.data.readUInt32BE(4) === requestId)
          if (entry !== undefined && entry.answer === undefined) entry.answer = reply(5, entry.packet, EnvelopeKind.error, 0, failedBody)
          flush(channelId)
          continue
        }
        if (p.status === 3) {
          // An upload's last packet (an error chunk, its source failed): it is the channel's latest request.
          const entry = queues.get(p.channelId)?.at(-1)
          if (entry !== undefined && entry.answer === undefined) entry.answer = reply(5, entry.packet, EnvelopeKind.error, 0, failedBody)
          flush(p.channelId)
          continue
        }
        // Pushes get no answer.
        if ((p.status !== 0 && p.status !== 1) || (p.data[1]! & EnvelopeFlag.oneway) !== 0) continue
        const entry: { readonly packet: RawPacket; answer: Buffer | undefined } = { packet: p, answer: undefined }
        if (!queues.has(p.channelId)) queues.set(p.channelId, [])
        queues.get(p.channelId)!.push(entry)
        switch (p.path) {
          case "/answer":
            entry.answer = reply(5, p, EnvelopeKind.response, 0, Buffer.from("ok"))
            break
          case "/error":
            entry.answer = reply(5, p, EnvelopeKind.error, 0, failedBody)
            break
          case "/cut":
            entry.answer = Buffer.concat([reply(4, p, EnvelopeKind.response, 0, Buffer.from("a")), frame(7, p.path, p.channelId, Buffer.concat([Buffer.of(1), failedBody]))])
            break
          case "/tunnel":
          case "/bogus":
            // /bogus: flag 04 on an answer that is no tunnel; the client cannot tell, and counts it out once.
            entry.answer = Buffer.concat([reply(4, p, EnvelopeKind.response, EnvelopeFlag.released, Buffer.from("a")), frame(7, p.path, p.channelId, Buffer.from("\x00b"))])
            break
          // /wait (cancelled or timed out) and /upload (its body fails) are answered later.
        }
        flush(p.channelId)
      }
    }
    const served = serve()
    expect((await client.call("/answer", "warm-up", { timeoutMs: 5000 })).toString()).toBe("ok")
    const session = client.meshSessions[0]! as unknown as { outstanding: number; outstandingBytes: number; held: Array<unknown> }
    const body = Buffer.alloc(40 * 1024, 0x61)
    async function* failing() {
      yield Buffer.alloc(1000, 0x62)
      throw new Error("the source failed")
    }
    const calls: Array<Promise<Settled<unknown>>> = []
    for (let round = 0; round < 4; round++) {
      for (const path of ["/answer", "/error", "/cut", "/bogus"]) calls.push(settle(client.call(path, body, { timeoutMs: 10_000 })))
      calls.push(settle(client.stream("/tunnel", body, { timeoutMs: 10_000 })))
      calls.push(settle(client.call("/wait", body, { timeoutMs: 200 })))
      const cancelled = new AbortController()
      calls.push(settle(client.call("/wait", body, { timeoutMs: 10_000, signal: cancelled.signal })))
      const heldCancelled = new AbortController()
      calls.push(settle(client.call("/wait", body, { timeoutMs: 10_000, signal: heldCancelled.signal })))
      heldCancelled.abort()
      calls.push(settle(client.stream("/upload", failing(), { timeoutMs: 10_000 })))
      client.push("/push", body)
      setImmediate(() => cancelled.abort())
    }
    const first = (await withTimeout(Promise.all(calls), 5000, "every call to end")) as Array<Settled<unknown>>
    // Most of those were held (the budget takes two bodies): a timeout and a cancel once written too.
    const waitsRead = () => [...queues.values()].flat().filter((e) => e.packet.path === "/wait").length
    const cancelled = new AbortController()
    const timedOut = settle(client.call("/wait", body, { timeoutMs: 200 }))
    const aborted = settle(client.call("/wait", body, { timeoutMs: 10_000, signal: cancelled.signal }))
    await waitFor(() => waitsRead() === 2, 5000, "both calls to be written")
    cancelled.abort()
    const outcomes = [...first, await timedOut, await aborted]
    const round = ["ok", "RemoteError", "RemoteError", "ok", "ok", "RequestTimeout", "Cancelled", "Cancelled", "RemoteError"]
    expect(outcomes.map((o) => (o.ok ? "ok" : (o.error as { _tag: string })._tag))).toEqual([...round, ...round, ...round, ...round, "RequestTimeout", "Cancelled"])
    expect(events.filter((e) => e.event === "protocol-violation")).toEqual([])
    // A call that timed out or was cancelled counts until its answer (written by now) is read.
    await waitFor(() => pending() === 0 && session.outstanding <= 0, 5000, "the peer to have answered everything and the client to have read it")
    expect({ outstanding: session.outstanding, bytes: session.outstandingBytes, held: session.held.length }).toEqual({ outstanding: 0, bytes: 0, held: 0 })
    stop = true
    expect((await client.call("/answer", "after", { timeoutMs: 5000 })).toString()).toBe("ok")
    await served
  })
})
