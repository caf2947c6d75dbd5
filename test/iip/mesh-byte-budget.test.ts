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
//   and what waits, and a held call cancelled lets the ones behind it go.
import { afterEach, beforeEach, describe, expect, it } from "vitest"
import type { IipClient } from "../../src/iip/client.ts"
import type { IncomingRequest, IipServer } from "../../src/iip/server.ts"
import { Cancelled } from "../../src/mux/meshSession.ts"
import { decodeEnvelope, emptyMeta, encodeEnvelope, EnvelopeKind, MeshDefaults, MeshPath } from "../../src/protocol/mesh.ts"
import { Cleanup, frame, type RawPacket, waitFor } from "../support/iipRaw.ts"
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

describe("a client keeps what its calls make the peer hold within the byte budget its hello states (maxBytes)", () => {
  let cleanup: Cleanup

  beforeEach(() => {
    cleanup = new Cleanup()
  })

  afterEach(() => cleanup.run())

  const bodyOf = (packet: RawPacket): Buffer => packet.data.subarray(decodeEnvelope(packet.data, MeshDefaults.maxMetaBytes).bodyOffset)
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
