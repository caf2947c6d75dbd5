// Mesh answers whose head cannot be sent as made. A request's parsed path (PROTOCOL.md §5: the
// answer carries the percent-decoded path) holding "%00" decodes to a NUL, which no packet may
// carry: the answer goes on the path as it came (the caller pairs by request id). A head that
// cannot be sent at all (metadata over the agreed limit) fails its call with a RemoteError, never
// the connection: a call in flight on it, and the next one, are answered.
import { afterEach, beforeEach, describe, expect, it } from "vitest"
import type { IipClient } from "../../src/iip/client.ts"
import { type IipServer, reply } from "../../src/iip/server.ts"
import { MeshDefaults } from "../../src/protocol/mesh.ts"
import { RemoteError } from "../../src/mux/meshSession.ts"
import { Cleanup, deferred, waitFor } from "../support/iipRaw.ts"
import { rejection, startClient, startServer } from "../support/meshTest.ts"

describe("a mesh answer whose path cannot be sent", () => {
  let cleanup: Cleanup
  let server: IipServer
  let client: IipClient
  const release = deferred()
  let stopped = 0

  beforeEach(async () => {
    cleanup = new Cleanup()
    server = await startServer(cleanup, { log: () => {} })
    server.handlePrefix("/p/", (request) => `seen ${JSON.stringify(request.path)}`)
    server.handle("/big-head", () => reply(Buffer.from("x"), new Map([["x-big", "y".repeat(MeshDefaults.maxMetaBytes)]])))
    server.handle("/slow", () => release.promise.then(() => "slow done"))
    // A streamed answer that goes on until its request is cancelled (as a relayed body or an
    // RPC's stream does), its head too large to send: `stopped` says its producer was told to stop.
    server.handle("/s/big-head", (request) => {
      request.context.cancel.addEventListener("abort", () => stopped++)
      return reply((async function*() {
        while (!request.context.cancel.aborted) yield Buffer.alloc(1024)
      })(), new Map([["x-big", "y".repeat(MeshDefaults.maxMetaBytes)]]))
    })
    client = startClient(cleanup, server.address.port, { maxConnections: 1 })
    expect((await client.call("/p/warm-up", "x", { timeoutMs: 5000 })).toString()).toBe('seen "/p/warm-up"')
  })

  afterEach(() => cleanup.run())

  it("a decoded path holding a NUL: the answer goes on the path as it came", async () => {
    expect((await client.call("/p/%00", "x", { timeoutMs: 5000 })).toString()).toBe('seen "/p/\\u0000"')
    expect((await client.call("/p/after", "x", { timeoutMs: 5000 })).toString()).toBe('seen "/p/after"')
    expect(server.connectionCount).toBe(1)
  })

  it("a head that cannot be sent fails that call only: the connection and the calls on it go on", async () => {
    const slow = client.call("/slow", "x", { timeoutMs: 5000 })
    const error = await rejection(client.call("/big-head", "x", { timeoutMs: 5000 }))
    expect(error).toBeInstanceOf(RemoteError)
    expect(error).toMatchObject({ code: "handler_failed" })
    release.resolve()
    expect((await slow).toString()).toBe("slow done")
    expect((await client.call("/p/after", "x", { timeoutMs: 5000 })).toString()).toBe('seen "/p/after"')
    expect(server.connectionCount).toBe(1)
  })
  it("a streamed answer that cannot be sent is stopped: its producer is told, not left waiting for a reader", async () => {
    const error = await rejection(client.call("/s/big-head", "x", { timeoutMs: 5000 }))
    expect(error).toMatchObject({ code: "handler_failed" })
    await waitFor(() => stopped === 1, 2000, "the unsendable answer's request to be cancelled")
    expect((await client.call("/p/after", "x", { timeoutMs: 5000 })).toString()).toBe('seen "/p/after"')
  })
})
