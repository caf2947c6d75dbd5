// What a receiver sends back for the stream bytes a hand-played dialer sends it (PROTOCOL.md §13):
// no window grant (`/sys/window`) of nothing.
import { afterEach, beforeEach, describe, expect, it } from "vitest"
import { decodeChannelPair, decodeEnvelope, MeshDefaults, MeshPath } from "../../src/protocol/mesh.ts"
import { meshChunk, meshDialer, meshRequest } from "../support/budgetAttack.ts"
import { Cleanup, type RawClient, type RawPacket, waitFor } from "../support/iipRaw.ts"
import { startServer } from "../support/meshTest.ts"

const KiB = 1024

/** The u32 body of a one-way control packet (an envelope, then the body). */
const bodyOf = (packet: RawPacket): Buffer => packet.data.subarray(decodeEnvelope(packet.data, MeshDefaults.maxMetaBytes).bodyOffset)

const windows = (raw: RawClient): Array<readonly [number, number]> => raw.packets.filter((p) => p.path === MeshPath.window).map((p) => decodeChannelPair(bodyOf(p))!)

describe("a receiver's grants for the stream bytes it is sent", () => {
  let cleanup: Cleanup

  beforeEach(() => {
    cleanup = new Cleanup()
  })

  afterEach(() => cleanup.run())

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
