// A mesh request whose parsed path cannot travel back in its answer (PROTOCOL.md §6.2: the answer
// carries the percent-decoded path): "%00" decodes to a NUL, which no packet may carry. The
// answer must not take the connection down with it: the call fails with a RemoteError, and a call
// in flight on the same connection, and the next one, are answered.
import { afterEach, beforeEach, describe, expect, it } from "vitest"
import type { IipClient } from "../../src/iip/client.ts"
import type { IipServer } from "../../src/iip/server.ts"
import { RemoteError } from "../../src/mux/meshSession.ts"
import { Cleanup, deferred } from "../support/iipRaw.ts"
import { rejection, startClient, startServer } from "../support/meshTest.ts"

describe("a mesh answer whose path cannot be sent", () => {
  let cleanup: Cleanup
  let server: IipServer
  let client: IipClient
  const release = deferred()

  beforeEach(async () => {
    cleanup = new Cleanup()
    server = await startServer(cleanup, { log: () => {} })
    server.handlePrefix("/p/", (request) => `seen ${JSON.stringify(request.path)}`)
    server.handle("/slow", () => release.promise.then(() => "slow done"))
    client = startClient(cleanup, server.address.port, { maxConnections: 1 })
    expect((await client.call("/p/warm-up", "x", { timeoutMs: 5000 })).toString()).toBe('seen "/p/warm-up"')
  })

  afterEach(() => cleanup.run())

  it("fails that call only: the connection and the calls on it go on", async () => {
    const slow = client.call("/slow", "x", { timeoutMs: 5000 })
    const error = await rejection(client.call("/p/%00", "x", { timeoutMs: 5000 }))
    expect(error).toBeInstanceOf(RemoteError)
    expect(error).toMatchObject({ code: "handler_failed" })
    release.resolve()
    expect((await slow).toString()).toBe("slow done")
    expect((await client.call("/p/after", "x", { timeoutMs: 5000 })).toString()).toBe('seen "/p/after"')
    expect(server.connectionCount).toBe(1)
  })
})
