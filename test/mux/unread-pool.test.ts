// IncomingStream.countUnreadIn (src/mux/streams.ts): the outbound sidecar's count of the tunnels'
// answer bytes their callers have not read. The pool outlives any one mesh connection, so whatever
// a stream adds it takes back exactly, on every path, including a peer that sent past its window
// (the connection closes on it, the stream fails, its reader then leaves or discards it).
import { describe, expect, it } from "vitest"
import { IncomingStream, StreamFailed, type UnreadPool } from "../../src/mux/streams.ts"

const window = 1024

/** A stream counted in `pool`, filled to twice its window (all a peer may send before a grant arrives). */
const fullStream = (pool: UnreadPool): IncomingStream => {
  const stream = new IncomingStream(window, () => {})
  stream.countUnreadIn(pool)
  expect(stream.push(Buffer.alloc(window))).toBe(true)
  expect(stream.push(Buffer.alloc(window))).toBe(true)
  expect(pool.bytes).toBe(2 * window)
  return stream
}

describe("IncomingStream's unread pool", () => {
  it("a chunk refused past the window is not counted: leaving the pool takes back exactly what was added", () => {
    const pool: UnreadPool = { bytes: 0 }
    const stream = fullStream(pool)
    expect(stream.push(Buffer.alloc(100))).toBe(false)
    expect(pool.bytes).toBe(2 * window)
    stream.fail(new StreamFailed({ message: "connection closed" }))
    stream.leaveUnreadPool()
    expect(pool.bytes).toBe(0)
  })

  it("a chunk refused past the window, then discarded: the pool is back to zero", () => {
    const pool: UnreadPool = { bytes: 0 }
    const stream = fullStream(pool)
    expect(stream.push(Buffer.alloc(100))).toBe(false)
    stream.discard()
    expect(pool.bytes).toBe(0)
  })

  it("a chunk refused past the window, the rest read to the failure, then the reader leaves: zero", async () => {
    const pool: UnreadPool = { bytes: 0 }
    const stream = fullStream(pool)
    expect(stream.push(Buffer.alloc(100))).toBe(false)
    stream.fail(new StreamFailed({ message: "connection closed" }))
    let read = 0
    await expect((async () => {
      for await (const lease of stream.leased()) {
        read += lease.bytes.length
        lease.release()
      }
    })()).rejects.toBeInstanceOf(StreamFailed)
    expect(read).toBe(2 * window)
    expect(pool.bytes).toBe(0)
    stream.leaveUnreadPool()
    expect(pool.bytes).toBe(0)
  })
})
