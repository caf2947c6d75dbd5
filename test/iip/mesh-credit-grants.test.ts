// What a receiver sends back for the stream bytes a hand-played dialer sends it (PROTOCOL.md §13):
// connection credit grants (`/sys/credit`) for every byte, so the upload flows in chunks of any
// size, and no window grant (`/sys/window`) of nothing. Each batch of chunks goes in one write, and
// the next only once all of it was granted back, so the test waits for the state it asserts,
// whatever the socket buffers. How many grants a batch costs depends on how the kernel splits it
// into reads (one grant a tick): that is test/mux/credit-return.test.ts's, counted per tick.
import { afterEach, beforeEach, describe, expect, it } from "vitest"
import { decodeChannelPair, decodeCredit, decodeEnvelope, MeshDefaults, MeshPath } from "../../src/protocol/mesh.ts"
import { meshChunk, meshDialer, meshRequest } from "../support/budgetAttack.ts"
import { Cleanup, type RawClient, type RawPacket, waitFor } from "../support/iipRaw.ts"
import { startServer } from "../support/meshTest.ts"

const KiB = 1024

/** The u32 body of a one-way control packet (an envelope, then the body). */
const bodyOf = (packet: RawPacket): Buffer => packet.data.subarray(decodeEnvelope(packet.data, MeshDefaults.maxMetaBytes).bodyOffset)

const credits = (raw: RawClient): Array<number> => raw.packets.filter((p) => p.path === MeshPath.credit).map((p) => decodeCredit(bodyOf(p))!)

const windows = (raw: RawClient): Array<readonly [number, number]> => raw.packets.filter((p) => p.path === MeshPath.window).map((p) => decodeChannelPair(bodyOf(p))!)

const sum = (values: ReadonlyArray<number>): number => values.reduce((a, b) => a + b, 0)

describe("a receiver's grants for the stream bytes it is sent", () => {
  let cleanup: Cleanup

  beforeEach(() => {
    cleanup = new Cleanup()
  })

  afterEach(() => cleanup.run())

  /**
   * Uploads `batches` writes of `perWrite` chunks of `chunkBytes` to a reading handler, against a
   * 64 KiB budget (the sender is always low on credit: every tick's releases are granted at its end), each
   * batch once the last one was all granted back. Returns the grants received.
   */
  const upload = async (chunkBytes: number, perWrite: number, batches: number): Promise<Array<number>> => {
    const server = await startServer(cleanup, { maxQueuedBytesPerConnection: 64 * KiB })
    server.handle("/count", async (request) => String((await request.context.stream!.readAll(64 * 1024 * KiB)).length))
    const raw = await meshDialer(server.address.port, cleanup)
    raw.write(meshRequest(0, "/count", 1, 1, Buffer.alloc(0)))
    const batch = Buffer.concat(Array.from({ length: perWrite }, () => meshChunk(2, "/count", 1, Buffer.alloc(chunkBytes, 0x61))))
    for (let sent = 1; sent <= batches; sent++) {
      raw.write(batch)
      // The upload flows: what it sent comes back though it sends nothing more.
      await waitFor(() => sum(credits(raw)) === sent * perWrite * chunkBytes, 5000, `batch ${sent} granted back (${sum(credits(raw))})`)
    }
    raw.write(meshChunk(3, "/count", 1, Buffer.alloc(0)))
    await waitFor(() => raw.packets.some((p) => p.path === "/count"), 5000, "the answer")
    expect(bodyOf(raw.packets.find((p) => p.path === "/count")!).toString()).toBe(String(batches * perWrite * chunkBytes))
    return credits(raw)
  }

  it("1-byte chunks at a 64 KiB budget: every byte granted back, the upload flows", async () => {
    expect(sum(await upload(1, 512, 16))).toBe(512 * 16)
  })

  it("1 KiB chunks at a 64 KiB budget: every byte granted back, the upload flows", async () => {
    expect(sum(await upload(KiB, 8, 32))).toBe(8 * 32 * KiB)
  })

  it("a body dropped unread (its request answered first) is granted back, its empty last chunk with no 0-byte window grant", async () => {
    const server = await startServer(cleanup, {})
    server.handle("/early", () => "early")
    const raw = await meshDialer(server.address.port, cleanup)
    raw.write(meshRequest(0, "/early", 1, 1, Buffer.alloc(0)))
    await waitFor(() => raw.packets.some((p) => p.path === "/early"), 5000, "the early answer")
    raw.write(meshChunk(2, "/early", 1, Buffer.alloc(KiB, 0x62)), meshChunk(3, "/early", 1, Buffer.alloc(0)))
    // A later request on the channel is answered after the body's last chunk was read.
    raw.write(meshRequest(1, "/early", 1, 2, Buffer.from("again")))
    await waitFor(() => raw.packets.filter((p) => p.path === "/early").length === 2, 5000, "the second answer")
    expect(windows(raw)).toEqual([[1, KiB]])
  })
})
