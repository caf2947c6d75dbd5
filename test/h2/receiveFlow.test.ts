// The connection's receive window against streams whose legs stopped consuming (src/h2/h2ReceiveFlow.ts):
// past `heldBytes` held, the window comes back only as bytes are consumed, but it does come back for
// the streams that are consumed, and what is owed is announced even when it is under half the window
// (the peer may have less left to send than that). The bound stays: held plus what the peer may send
// is at most `heldBytes` plus the window. Before, a stream consumed while others held `heldBytes` got
// no window back, and the peer left with none was owed what it was never told of.
import { describe, expect, it } from "vitest"
import { CONNECTION_OVERFLOW, ReceiveFlow, RECEIVED } from "../../src/h2/h2ReceiveFlow.ts"
import { H2Stream } from "../../src/h2/h2Streams.ts"

const MiB = 1 << 20
const FRAME = 16_384

/** A connection's receive side at src/h2's defaults (h2Guards.ts): 1 MiB stream windows, an 8 MiB connection window, 4 MiB held before it waits on consumption; `peer`: what the peer may still send on the connection. */
const connection = () => {
  const flow = new ReceiveFlow(4 * MiB)
  return { flow, peer: 65_535 + flow.raise(8 * MiB) }
}
const stream = () => new H2Stream(MiB, 0)

/** The peer sends on `s` as much as the windows let it, up to `bytes`, taking every connection update: what it sent. */
const send = (c: ReturnType<typeof connection>, s: H2Stream, bytes: number, consume: boolean): number => {
  let sent = 0
  for (;;) {
    c.peer += c.flow.takeUpdate()
    const n = Math.min(FRAME, bytes - sent, c.peer, s.recvAvailable)
    if (n <= 0) return sent
    expect(c.flow.received(s, n, n)).toBe(RECEIVED)
    c.peer -= n
    sent += n
    if (consume) s.recvAvailable += c.flow.consumed(s, n, true)
  }
}

describe("the connection's receive window beside streams that stopped consuming", () => {
  it("five streams holding their whole windows unconsumed (past heldBytes): a sixth, consumed as it comes, still gets 16 MiB through", () => {
    const c = connection()
    for (let i = 0; i < 5; i++) expect(send(c, stream(), 2 * MiB, false)).toBe(MiB)
    expect(send(c, stream(), 16 * MiB, true)).toBe(16 * MiB)
    // What the stopped streams hold and what the peer may send stay within heldBytes plus the window.
    expect(5 * MiB + c.peer).toBeLessThanOrEqual(12 * MiB)
  })

  it("window owed under half of it is announced once the peer has less than that left to send", () => {
    const c = connection()
    for (let i = 0; i < 5; i++) expect(send(c, stream(), MiB, false)).toBe(MiB)
    const active = stream()
    expect(send(c, active, 300 * 1024, true)).toBe(300 * 1024)
    // Streams that stop consuming take all the peer has left: the 300 KiB consumed is owed to it, under half the window.
    for (let s = stream(); c.peer > 0; s = s.recvAvailable > 0 ? s : stream()) {
      const n = Math.min(FRAME, c.peer, s.recvAvailable)
      expect(c.flow.received(s, n, n)).toBe(RECEIVED)
      c.peer -= n
    }
    c.peer += c.flow.takeUpdate()
    expect(c.peer).toBe(300 * 1024)
    expect(c.flow.received(active, c.peer + 1, c.peer + 1)).toBe(CONNECTION_OVERFLOW)
  })
})
