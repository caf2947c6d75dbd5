// A streamed answer waiting for the peer's connection credit (PROTOCOL.md §13 `conncredit`,
// mux/meshCredit.ts) waits on two things at once: a grant of credit, or a change of its stream's
// window (it may have closed). A hand-played peer that grants nothing usable (credit grants of 0
// bytes, or 1-byte window grants for the stream) wakes it again and again: each wake must leave
// nothing behind in the other list. Before, every wake left its resolver in the list it did not
// come from (a flood of grants grew the stream's list, or the credit's, without bound).
import { afterEach, beforeEach, describe, expect, it } from "vitest"
import { type IipServer, reply } from "../../src/iip/server.ts"
import { DialerControlChannel, emptyMeta, encodeChannelPair, encodeCredit, encodeEnvelope, encodeHello, EnvelopeFlag, EnvelopeKind, MeshPath } from "../../src/protocol/mesh.ts"
import { meshRequest } from "../support/budgetAttack.ts"
import { Cleanup, frame, RawClient, waitFor } from "../support/iipRaw.ts"
import { helloOf, startServer } from "../support/meshTest.ts"

/** Rounds of grants, each read by the server before the next is sent (a ping answered after it). */
const ROUNDS = 200
/** The caller's channel the answer streams on. */
const CHANNEL = 1

describe("a streamed answer waiting for connection credit, woken by grants that give it none", () => {
  let cleanup: Cleanup
  beforeEach(() => {
    cleanup = new Cleanup()
  })
  afterEach(() => cleanup.run())

  /** A server streaming 1 MiB to a raw dialer whose hello grants 1 byte of credit; the answer has sent that byte and waits. */
  const starved = async () => {
    const server: IipServer = await startServer(cleanup)
    server.handle("/stream", () =>
      reply(
        (async function*() {
          for (let i = 0; i < 16; i++) yield Buffer.alloc(64 * 1024, 0x61)
        })()
      )
    )
    const raw = await RawClient.connect(server.address.port, cleanup)
    raw.write(frame(1, MeshPath.hello, 0, encodeHello(helloOf({ node: "starver", maxBytes: 1 }), false)))
    await raw.next(5000)
    raw.write(meshRequest(1, "/stream", CHANNEL, 1, Buffer.of()))
    // The answer's head, then its one byte of credit.
    await waitFor(() => raw.packets.some((p) => p.path === "/stream" && p.data.length === 2), 5000, "the answer's first byte")
    const session = [...server.meshSessions][0]!
    const internals = session as unknown as {
      serving: { sendingOn(channelId: number): { waiters: Array<unknown> } | undefined }
      // A list before, a set now: either way, how many wait.
      creditWindow: { waiters: { length?: number; size?: number } }
    }
    const window = internals.serving.sendingOn(CHANNEL)!
    const creditWaiters = () => internals.creditWindow.waiters.length ?? internals.creditWindow.waiters.size ?? 0
    let id = 0
    /** Writes `grant` with a ping behind it and waits for the pong: the server has read the grant and the answer has waited again. */
    const round = async (grant: Buffer) => {
      raw.write(Buffer.concat([grant, meshRequest(1, MeshPath.ping, DialerControlChannel, ++id, Buffer.of())]))
      const ping = id
      await waitFor(() => raw.packets.some((p) => p.path === MeshPath.ping && p.data.length > 0 && p.data.readUInt32BE(4) === ping), 5000, `pong ${ping}`)
      await new Promise<void>((resolve) => setImmediate(resolve))
    }
    const push = (path: string, body: Buffer) => frame(1, path, DialerControlChannel, encodeEnvelope(EnvelopeKind.request, EnvelopeFlag.oneway, ++id, emptyMeta, body, 8192))
    return { raw, window, creditWaiters, round, push }
  }

  it("credit grants of 0 bytes leave the stream's window with one waiter at most", async () => {
    const { window, creditWaiters, round, push } = await starved()
    for (let i = 0; i < ROUNDS; i++) await round(push(MeshPath.credit, encodeCredit(0)))
    expect({ stream: window.waiters.length, credit: creditWaiters() }).toEqual({ stream: 1, credit: 1 })
  })

  it("1-byte window grants for the stream leave the connection's credit with one waiter at most", async () => {
    const { window, creditWaiters, round, push } = await starved()
    for (let i = 0; i < ROUNDS; i++) await round(push(MeshPath.window, encodeChannelPair(CHANNEL, 1)))
    expect({ stream: window.waiters.length, credit: creditWaiters() }).toEqual({ stream: 1, credit: 1 })
  })
})
