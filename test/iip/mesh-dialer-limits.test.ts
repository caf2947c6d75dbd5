// The dialer's own limits on the calls the acceptor makes to it (PROTOCOL.md §10, calls in both
// directions). The dialer states `maxRequests` and `maxBytes` in its hello, as an acceptor does; an
// iip-mesh acceptor keeps within them (it holds its calls), and a hand-played one that does not is
// refused `overloaded`, processed: false, past them. A dialer never stops reading (it reads its own
// calls' answers there), so an acceptor that goes on sending past them and reads none of the
// answers has its connection closed once the refusals waiting to be written reach the limit, instead of making
// the dialer queue answers up to its write queue's hard limit (256 MiB).
import { afterEach, beforeEach, describe, expect, it } from "vitest"
import type { MeshSession } from "../../src/mux/meshSession.ts"
import { AcceptorChannelBase, decodeEnvelope, decodeErrorBody, decodeHello, EnvelopeKind } from "../../src/protocol/mesh.ts"
import { meshRequest } from "../support/budgetAttack.ts"
import { Cleanup, deferred, type RawPacket, waitFor, withTimeout } from "../support/iipRaw.ts"
import { collectLog, startClient, startDeafAcceptor, startRawMeshPeer, startServer } from "../support/meshTest.ts"

const KiB = 1024
const MiB = 1024 * KiB

/** The kind of a recorded answer, and the error it carries if it is one. */
const answerOf = (packet: RawPacket) => {
  const envelope = decodeEnvelope(packet.data, 8192)
  const body = packet.data.subarray(envelope.bodyOffset)
  return { kind: envelope.kind, requestId: envelope.requestId, error: envelope.kind === EnvelopeKind.error ? decodeErrorBody(body) : undefined }
}

describe("mesh dialer: its own limits on the acceptor's calls", () => {
  let cleanup: Cleanup

  beforeEach(() => {
    cleanup = new Cleanup()
  })

  afterEach(() => cleanup.run())

  it("states maxRequests and maxBytes in its hello: its options, else the server's defaults", async () => {
    const peer = await startRawMeshPeer(cleanup)
    const stated = startClient(cleanup, peer.port, { maxQueuedRequestsPerConnection: 8, maxQueuedBytesPerConnection: 256 * KiB })
    expect(await stated.mode(5000)).toBe("mesh")
    const defaults = startClient(cleanup, peer.port)
    expect(await defaults.mode(5000)).toBe("mesh")
    expect(peer.hellos.length).toBe(2)
    expect(decodeHello(peer.hellos[0]!)).toMatchObject({ maxRequests: 8, maxBytes: 256 * KiB })
    expect(decodeHello(peer.hellos[1]!)).toMatchObject({ maxRequests: 1024, maxBytes: 64 * MiB })
  })

  it("refuses an acceptor's calls past its stated maxRequests (overloaded, not processed) and runs the rest", async () => {
    const peer = await startRawMeshPeer(cleanup)
    const client = startClient(cleanup, peer.port, { maxQueuedRequestsPerConnection: 4 })
    const release = deferred()
    let ran = 0
    client.handle("/hold", async () => {
      ran++
      await release.promise
      return "done"
    })
    expect(await client.mode(5000)).toBe("mesh")
    const socket = peer.sockets[0]!
    for (let i = 1; i <= 6; i++) socket.write(meshRequest(1, "/hold", AcceptorChannelBase + i, 1, Buffer.from("x")))
    for (const channel of [AcceptorChannelBase + 5, AcceptorChannelBase + 6]) {
      const refused = answerOf(await peer.take((p) => p.channelId === channel, 5000, `the refusal on channel ${channel}`))
      expect(refused.error).toMatchObject({ code: "overloaded", processed: false })
    }
    expect(ran).toBe(4)
    release.resolve()
    for (let i = 1; i <= 4; i++) {
      const answer = answerOf(await peer.take((p) => p.channelId === AcceptorChannelBase + i, 5000, `the answer on channel ${i}`))
      expect(answer.kind).toBe(EnvelopeKind.response)
    }
    // Under the limit again: a refused channel takes the next call.
    socket.write(meshRequest(1, "/hold", AcceptorChannelBase + 5, 2, Buffer.from("x")))
    const answer = answerOf(await peer.take((p) => p.channelId === AcceptorChannelBase + 5, 5000, "the answer after the refusals"))
    expect(answer).toMatchObject({ kind: EnvelopeKind.response, requestId: 2 })
    expect(ran).toBe(5)
  })

  it("refuses a call whose body does not fit in its stated maxBytes beside what it holds; one alone always runs", async () => {
    const peer = await startRawMeshPeer(cleanup)
    const client = startClient(cleanup, peer.port, { maxQueuedBytesPerConnection: 64 * KiB })
    const release = deferred()
    const seen: Array<number> = []
    client.handle("/hold", async (request) => {
      seen.push(request.data.length)
      await release.promise
      return "done"
    })
    expect(await client.mode(5000)).toBe("mesh")
    const socket = peer.sockets[0]!
    // Alone it goes whatever its size; beside it, 40 KiB more would pass 64 KiB, 1 byte would not.
    socket.write(meshRequest(1, "/hold", AcceptorChannelBase + 1, 1, Buffer.alloc(80 * KiB, 1)))
    socket.write(meshRequest(1, "/hold", AcceptorChannelBase + 2, 1, Buffer.alloc(40 * KiB, 2)))
    const refused = answerOf(await peer.take((p) => p.channelId === AcceptorChannelBase + 2, 5000, "the refusal of the body that does not fit"))
    expect(refused.error).toMatchObject({ code: "overloaded", processed: false })
    release.resolve()
    await peer.take((p) => p.channelId === AcceptorChannelBase + 1, 5000, "the answer to the call alone")
    socket.write(meshRequest(1, "/hold", AcceptorChannelBase + 3, 1, Buffer.alloc(40 * KiB, 3)))
    expect(answerOf(await peer.take((p) => p.channelId === AcceptorChannelBase + 3, 5000, "the answer once it fits")).kind).toBe(EnvelopeKind.response)
    expect(seen).toStrictEqual([80 * KiB, 40 * KiB])
  })

  it("closes the connection, logged, when an acceptor calls past its limit and reads none of the answers", async () => {
    const limit = 16
    const total = 1024
    let sent = 0
    const acceptorClosed = deferred()
    const port = await startDeafAcceptor(cleanup, (socket) => {
      socket.once("close", () => acceptorClosed.resolve())
      const body = Buffer.alloc(32 * KiB, 7)
      const pump = () => {
        while (sent < total && !socket.destroyed) {
          sent++
          if (!socket.write(meshRequest(1, "/echo", AcceptorChannelBase + 1, sent, body))) return void socket.once("drain", pump)
        }
      }
      pump()
    })
    const { events, log } = collectLog()
    const client = startClient(cleanup, port, { log, maxQueuedRequestsPerConnection: limit })
    client.handle("/echo", (request) => request.data)
    expect(await client.mode(5000)).toBe("mesh")
    // 32 MiB of answers if all were queued; the dialer holds a few batches of them at most.
    await withTimeout(acceptorClosed.promise, 10_000, "the dialer to close the connection")
    expect(sent).toBeLessThan(total)
    const line = events.find((e) => e.event === "peer-not-reading")
    expect(line?.fields).toMatchObject({ maxRequests: limit, closedSoFar: expect.any(Number) })
  })

  it("an iip-mesh acceptor keeps its calls to the dialer within the dialer's maxRequests: it holds the rest, none fails", async () => {
    const server = await startServer(cleanup)
    const connected = deferred<MeshSession>()
    server.onMeshConnection((session) => connected.resolve(session))
    const client = startClient(cleanup, server.address.port, { maxConnections: 1, maxQueuedRequestsPerConnection: 4 })
    const calls = 20
    let running = 0
    let most = 0
    let arrived = 0
    const held: Array<() => void> = []
    client.handle("/slow", () => {
      running++
      arrived++
      most = Math.max(most, running)
      const done = new Promise<string>((resolve) => held.push(() => resolve("ok")))
      // Released once as many run as the dialer allows, or once the last has come.
      if (running >= 4 || arrived === calls) for (const go of held.splice(0)) go()
      return done.then((answer) => {
        running--
        return answer
      })
    })
    expect(await client.mode(5000)).toBe("mesh")
    const session = await withTimeout(connected.promise, 5000, "the server's mesh session")
    const answers = await Promise.all(
      Array.from({ length: calls }, () => {
        const done = deferred<string>()
        session.call(session.openChannel(), "/slow", Buffer.from("x"), { timeoutMs: 10_000 }, (error, reply) => done.resolve(error === undefined ? reply!.data.toString() : String(error)))
        return withTimeout(done.promise, 10_000, "a reverse call's answer")
      })
    )
    expect(answers).toStrictEqual(Array.from({ length: calls }, () => "ok"))
    expect(most).toBeLessThanOrEqual(4)
    await waitFor(() => running === 0, 5000, "the handlers to finish")
  })
})
