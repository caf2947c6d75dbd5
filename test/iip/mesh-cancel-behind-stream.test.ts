// A cancel must not overtake the request it cancels (PROTOCOL.md §11, src/mux/writer.ts lanes).
// A request written on a channel whose streamed body still waits in the writer's lane joins that
// lane; a cancel goes on the control channel, which is written at the flush ahead of every lane.
// Sent as it was, the cancel reached the server before the request, found nothing to cancel and
// was dropped; the request then ran to its end (in the sidecar: sent to the app, held open until
// its 10 s timeout). The order is forced without any socket buffer: the streamed body is queued
// in a microtask, the second call made and cancelled before the writer's next flush (a tick).
// The server's side is waited for, not timed: the first call is let go only once the server has
// read the cancel, so the second still waits behind it whatever the socket buffers.
import { afterEach, beforeEach, describe, expect, it } from "vitest"
import type { IipClient } from "../../src/iip/client.ts"
import type { IipServer } from "../../src/iip/server.ts"
import { Cancellation } from "../../src/mux/cancellation.ts"
import type { MeshCallError } from "../../src/mux/meshSession.ts"
import { MeshDefaults } from "../../src/protocol/mesh.ts"
import { Cleanup, deferred, waitFor } from "../support/iipRaw.ts"
import { startClient, startServer } from "../support/meshTest.ts"

describe("a cancel behind a streamed body", () => {
  let cleanup: Cleanup
  let server: IipServer
  let client: IipClient

  beforeEach(async () => {
    cleanup = new Cleanup()
    server = await startServer(cleanup)
    client = startClient(cleanup, server.address.port, { maxConnections: 1, maxChannelsPerConnection: 1 })
  })
  afterEach(() => cleanup.run())

  it("reaches the server after the request, which then never runs; every call ends once", async () => {
    const ran: Array<string> = []
    const release = deferred<void>()
    // /hold answers once the test lets it: the cancelled call waits behind it in the channel's mailbox.
    server.handle("/hold", async () => {
      ran.push("hold")
      await release.promise
      return "held"
    })
    server.handle("/echo", (request) => request.data)
    server.handle("/never", () => {
      ran.push("never")
      return new Promise<string>(() => {})
    })
    expect((await client.call("/echo", "warm-up", { timeoutMs: 5000 })).toString()).toBe("warm-up")
    const session = client.meshSessions[0]!
    const channel = session.openChannel()
    const outcomes: Array<string> = []
    const record = (name: string) => (error: MeshCallError | undefined) => outcomes.push(`${name} ${error === undefined ? "ok" : error._tag}`)
    // Two chunks and the end of the body: streamed, each chunk queued in the channel's lane.
    session.call(channel, "/hold", Buffer.alloc(MeshDefaults.chunkBytes + 1, 1), { timeoutMs: 5000 }, record("hold"))
    // The stream sender queues its packets in microtasks; the writer flushes its lanes a tick later.
    for (let i = 0; i < 1000 && channel.sending !== undefined; i++) await Promise.resolve()
    expect(channel.sending).toBeUndefined()
    expect(session.connection.writer.holds(channel.id)).toBe(true)
    const cancel = new Cancellation()
    session.call(channel, "/never", Buffer.from("x"), { timeoutMs: 5000, signal: cancel }, record("never"))
    cancel.abort()
    expect(outcomes).toEqual(["never Cancelled"])
    await waitFor(() => ran.length > 0, 2000, "the streamed call to run")
    // /hold must still be running when /never and its cancel reach the server, or /never runs at
    // once instead of waiting in the mailbox. A ping written after the lane has left the writer
    // is answered once the server has read all before it, the cancel included.
    await waitFor(() => !session.connection.writer.holds(channel.id), 2000, "the lane to be written")
    const pinged = deferred<MeshCallError | undefined>()
    session.ping((error) => pinged.resolve(error))
    expect(await pinged.promise).toBeUndefined()
    release.resolve()
    const served = [...server.meshSessions][0]!
    await waitFor(() => outcomes.length === 2 && (served.servingCount === 0 || ran.includes("never")), 2000, "both calls ended at the server")
    // The server read the cancel after the request, and answered it cancelled in its turn without running it.
    expect(ran).toEqual(["hold"])
    expect(outcomes).toEqual(["never Cancelled", "hold ok"])
    expect(served.servingCount).toBe(0)
  })
})
