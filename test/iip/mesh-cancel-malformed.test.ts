// A `/sys/cancel` whose body is not `u32 channel, u32 request id` (PROTOCOL.md §14), from a
// hand-played dialer: it closes the connection (rule `bad-control`), as a malformed window grant,
// credit grant, close or refusal does, instead of being dropped unseen while the request it meant
// to cancel runs on. The request ends with the connection (its handler's signal fires). A
// well-formed cancel naming no request of the peer's stays ignored.
import { afterEach, beforeEach, describe, expect, it } from "vitest"
import type { IipServer } from "../../src/iip/server.ts"
import { decodeEnvelope, emptyMeta, encodeChannelPair, encodeEnvelope, EnvelopeFlag, EnvelopeKind, MeshDefaults, MeshPath } from "../../src/protocol/mesh.ts"
import { meshDialer, meshRequest } from "../support/budgetAttack.ts"
import { Cleanup, deferred, frame, withTimeout } from "../support/iipRaw.ts"
import { collectLog, type LogEvent, startServer } from "../support/meshTest.ts"

const bodyOf = (data: Buffer): string => data.subarray(decodeEnvelope(data, MeshDefaults.maxMetaBytes).bodyOffset).toString()

/** A one-way cancel on the dialer's control channel with `body` as it is. */
const cancel = (id: number, body: Buffer) => frame(1, MeshPath.cancel, 0, encodeEnvelope(EnvelopeKind.request, EnvelopeFlag.oneway, id, emptyMeta, body, 8192))

describe("a malformed cancel", () => {
  let cleanup: Cleanup
  let server: IipServer
  let events: Array<LogEvent>
  let aborted: ReturnType<typeof deferred>

  beforeEach(async () => {
    cleanup = new Cleanup()
    aborted = deferred()
    const log = collectLog()
    events = log.events
    server = await startServer(cleanup, { log: log.log })
    server.handle("/echo", (request) => request.data)
    server.handle("/hold", (request) => new Promise<string>(() => request.signal.addEventListener("abort", () => aborted.resolve(undefined))))
  })

  afterEach(() => cleanup.run())

  it("closes the connection (bad-control), and the request it meant to cancel ends with it", async () => {
    const raw = await meshDialer(server.address.port, cleanup)
    raw.write(meshRequest(1, "/hold", 1, 1, Buffer.from("x")))
    // A well-formed cancel of nothing the server runs is ignored: the connection goes on.
    raw.write(cancel(1, encodeChannelPair(99, 1)))
    raw.write(meshRequest(1, "/echo", 2, 1, Buffer.from("still here")))
    expect(bodyOf((await raw.next(5000)).data)).toBe("still here")
    // Seven bytes, one short of channel and request id.
    raw.write(cancel(2, encodeChannelPair(1, 1).subarray(0, 7)))
    await raw.waitClose(5000)
    const violation = events.find((e) => e.event === "protocol-violation")
    expect(violation?.fields).toMatchObject({ rule: "bad-control" })
    expect(String(violation?.fields["message"])).toContain("malformed cancel")
    await withTimeout(aborted.promise, 5000, "the held request's handler to be aborted")
  })
})
