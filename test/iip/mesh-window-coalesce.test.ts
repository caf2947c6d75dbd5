// Window grants for a body nobody reads (PROTOCOL.md §13): a stream dropped unread (its request
// answered without reading it) grants each chunk back as it comes, so the sender can finish. From
// a hand-played dialer sending the body in 1-byte chunks: the grants of one read go in one
// `/sys/window` per stream, not one per chunk (a 37-byte control packet for each byte sent), and
// every byte is still granted back.
import { afterEach, beforeEach, describe, expect, it } from "vitest"
import type { IipServer } from "../../src/iip/server.ts"
import { decodeChannelPair, MeshPath } from "../../src/protocol/mesh.ts"
import { meshChunk, meshDialer, meshRequest } from "../support/budgetAttack.ts"
import { Cleanup, type RawClient } from "../support/iipRaw.ts"
import { startServer } from "../support/meshTest.ts"

/** The body of a control message (after its 8-byte envelope). */
const controlBody = (data: Buffer): Buffer => data.subarray(8)

describe("window grants for an unread body", () => {
  let cleanup: Cleanup
  let server: IipServer

  beforeEach(async () => {
    cleanup = new Cleanup()
    server = await startServer(cleanup)
    // Answers at once without reading its body: the body is dropped and granted back as it comes.
    server.handle("/drop", () => "dropped")
    server.handle("/echo", (request) => request.data)
  })

  afterEach(() => cleanup.run())

  /** Reads packets until `granted` bytes of window came back on `channel`; returns the grants. */
  const grantsUntil = async (raw: RawClient, channel: number, granted: number): Promise<Array<number>> => {
    const grants: Array<number> = []
    let sum = 0
    while (sum < granted) {
      const packet = await raw.next(5000)
      if (packet.path !== MeshPath.window) continue
      const [channelId, bytes] = decodeChannelPair(controlBody(packet.data))!
      expect(channelId).toBe(channel)
      grants.push(bytes)
      sum += bytes
    }
    expect(sum).toBe(granted)
    return grants
  }

  it("a body dropped unread in 1-byte chunks is granted back in one grant per read, every byte of it", async () => {
    const raw = await meshDialer(server.address.port, cleanup)
    raw.write(meshRequest(0, "/drop", 1, 1, Buffer.from("x")))
    // The answer: the handler did not read the body, which is dropped from now on.
    for (;;) if ((await raw.next(5000)).path === "/drop") break
    const chunks = 4096
    raw.write(Buffer.concat(Array.from({ length: chunks }, () => meshChunk(2, "/drop", 1, Buffer.of(7)))))
    // The first byte came with the request and was granted back when the body was dropped.
    const grants = await grantsUntil(raw, 1, 1 + chunks)
    // One per read of the server, not one per chunk (4097). How many reads the 64 KiB take depends
    // on the socket buffers (a 64 KiB read holds ~4000 of these 16-byte packets; with 4 KiB
    // buffers reads of ~1.5 KiB, 46 grants): a bound of 16 packets a read at the least.
    expect(grants.length).toBeLessThanOrEqual(chunks / 16)
    raw.write(meshChunk(3, "/drop", 1, Buffer.alloc(0)))
    raw.write(meshRequest(1, "/echo", 2, 1, Buffer.from("after")))
    for (;;) if ((await raw.next(5000)).path === "/echo") break
  })
})
