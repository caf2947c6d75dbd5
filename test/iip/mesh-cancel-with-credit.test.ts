// A streamed answer waiting for connection credit (PROTOCOL.md §13 `conncredit`) when the
// caller's `/sys/cancel` and a `/sys/credit` grant arrive in one read (§14): the cancel closes the
// answer's window and wakes it, the grant gives it credit, and it used to take the credit and send
// one more chunk of data before the error that ends the stream. The caller drops that chunk and
// grants it back, so no count goes wrong, but up to 64 KiB went for nothing: now the woken sender
// looks at its window before it takes credit, and the stream ends with the error at once.
import { afterEach, beforeEach, describe, expect, it } from "vitest"
import type { IipServer } from "../../src/iip/server.ts"
import { reply } from "../../src/iip/server.ts"
import { ChunkHeader, emptyMeta, encodeChannelPair, encodeCredit, encodeEnvelope, encodeHello, EnvelopeFlag, EnvelopeKind, MeshPath } from "../../src/protocol/mesh.ts"
import { meshRequest } from "../support/budgetAttack.ts"
import { Cleanup, frame, RawClient, waitFor } from "../support/iipRaw.ts"
import { helloOf, startServer } from "../support/meshTest.ts"

const KiB = 1024

/** A one-way control message on the dialer's control channel. */
const control = (path: string, id: number, body: Buffer) => frame(1, path, 0, encodeEnvelope(EnvelopeKind.request, EnvelopeFlag.oneway, id, emptyMeta, body, 8192))

describe("a cancel and a credit grant in one read", () => {
  let cleanup: Cleanup
  let server: IipServer
  let pulled = 0

  beforeEach(async () => {
    cleanup = new Cleanup()
    pulled = 0
    server = await startServer(cleanup)
    server.handle("/many", () =>
      reply((async function*() {
        for (let i = 0; i < 64; i++) {
          pulled++
          yield Buffer.alloc(64 * KiB, i)
        }
      })())
    )
  })

  afterEach(() => cleanup.run())

  it("a streamed answer waiting for credit ends with the cancel's error, no more data after it", async () => {
    const raw = await RawClient.connect(server.address.port, cleanup)
    // 256 KiB of credit: a stream may use what is above the 64 KiB reserve, three chunks.
    raw.write(frame(1, MeshPath.hello, 0, encodeHello(helloOf({ node: "raw", maxBytes: 256 * KiB }), false)))
    expect((await raw.next(5000)).path).toBe(MeshPath.hello)
    raw.write(meshRequest(1, "/many", 1, 1, Buffer.from("go")))
    let data = 0
    for (;;) {
      const packet = await raw.next(5000)
      if (packet.path !== "/many") continue
      data += packet.status === 4 ? 0 : packet.data.length - 1
      if (data >= 192 * KiB) break
    }
    // The fourth chunk is pulled and waits for credit.
    await waitFor(() => pulled >= 4, 5000, "the answer to wait for credit")
    raw.write(Buffer.concat([control(MeshPath.cancel, 1, encodeChannelPair(1, 1)), control(MeshPath.credit, 2, encodeCredit(64 * KiB))]))
    const after: Array<number> = []
    for (;;) {
      const packet = await raw.next(5000)
      if (packet.path !== "/many") continue
      after.push(packet.data[0]!)
      if (packet.status === 7) break
    }
    expect(after).toStrictEqual([ChunkHeader.error])
  })
})
