// The client's channels held by streams (src/iip/connectionPool.ts hasRoom, streamChannelsPerConnection): a
// streamed answer that never ends (a WebSocket's, a long one) keeps its channel for its whole
// life, and the client skips such a channel for new requests. With no allowance, streams as many
// as the channels leave every other request queued until its deadline; with one, the connection
// opens a channel for each stream past its limit, and other requests are answered at once.
import { afterEach, beforeEach, describe, expect, it } from "vitest"
import { reply } from "../../src/iip/server.ts"
import { Cleanup, waitFor } from "../support/iipRaw.ts"
import { rejection, startClient, startServer } from "../support/meshTest.ts"

/** An answer body that sends one byte and never ends. */
const endless = (): AsyncIterable<Uint8Array> => ({
  async *[Symbol.asyncIterator]() {
    yield new Uint8Array([1])
    await new Promise<never>(() => {})
  }
})

describe("channels held by streams", () => {
  let cleanup: Cleanup
  beforeEach(() => {
    cleanup = new Cleanup()
  })
  afterEach(() => cleanup.run())

  const holdStreams = async (streamChannelsPerConnection: number) => {
    const server = await startServer(cleanup)
    server.handle("/endless", () => reply(endless()))
    server.handle("/echo", (request) => request.data)
    const client = startClient(cleanup, server.address.port, { maxConnections: 1, maxChannelsPerConnection: 2, streamChannelsPerConnection })
    const controller = new AbortController()
    cleanup.add(() => controller.abort())
    // Two streamed answers: both of the connection's own channels held.
    for (let i = 0; i < 2; i++) await client.stream("/endless", Buffer.from("go"), { signal: controller.signal })
    return client
  }

  it("without an allowance, a request waits for a channel (its deadline)", async () => {
    const client = await holdStreams(0)
    const queued = rejection(client.call("/echo", "x", { timeoutMs: 300 }))
    await waitFor(() => client.stats.queued === 1, 2000, "the request to queue")
    await queued
  })

  it("with one, the connection opens a channel past its limit and the request is answered", async () => {
    const client = await holdStreams(4)
    expect((await client.call("/echo", "x", { timeoutMs: 2000 })).toString()).toBe("x")
  })
})
