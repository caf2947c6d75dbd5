// A server that drains: it closes its listener and says go-away, while a request still streaming
// keeps its connection open (draining). The client has no live connection then, and a new one is
// refused: whoever waits for a connection must hear that refusal at once, not after the 3 s connect
// timeout (`mode()` callers), nor at the request's deadline (requests queued, with
// waitForReconnect false: a caller with other servers to go to).
import { afterEach, describe, expect, it } from "vitest"
import { IipClient } from "../../src/iip/client.ts"
import { ConnectFailed } from "../../src/mux/errors.ts"
import * as Effect from "effect/Effect"
import { Cleanup, deferred, waitFor, withTimeout } from "../support/iipRaw.ts"
import { rejection, startClient, startServer } from "../support/meshTest.ts"

/** A request body that never ends: its channel stays busy streaming it. */
const endless = (): AsyncIterable<Uint8Array> => ({
  async *[Symbol.asyncIterator]() {
    yield new Uint8Array([1])
    await new Promise<never>(() => {})
  }
})

const setUp = async (cleanup: Cleanup, waitForReconnect: boolean) => {
  const server = await startServer(cleanup, { drainTimeoutMs: 10_000 })
  const uploading = deferred()
  server.handle("/upload", () => {
    uploading.resolve()
    return new Promise<Uint8Array>(() => {})
  })
  server.handle("/echo", (request) => request.data)
  const client: IipClient = startClient(cleanup, server.address.port, {
    maxConnections: 1,
    maxChannelsPerConnection: 1,
    connectTimeoutMs: 3000,
    waitForReconnect
  })
  expect((await client.call("/echo", "x", { timeoutMs: 5000 })).toString()).toBe("x")
  // The connection's one channel busy streaming a body in: the server cannot finish draining.
  const abort = new AbortController()
  cleanup.add(() => abort.abort())
  void client.stream("/upload", endless(), { timeoutMs: 20_000, signal: abort.signal }).catch(() => {})
  await withTimeout(uploading.promise, 5000, "the upload to reach its handler")
  return { server, client }
}

describe("a client whose server drains with its listener closed", () => {
  let cleanup = new Cleanup()
  afterEach(async () => {
    await cleanup.run()
    cleanup = new Cleanup()
  })

  it("mode() fails with the refusal at once", async () => {
    const { server, client } = await setUp(cleanup, true)
    void Effect.runPromise(server.drain(10_000))
    await waitFor(() => client.currentMode === undefined, 5000, "the go-away")
    // The redial the go-away started may still be under way: ask twice, as requests would.
    for (let i = 0; i < 2; i++) {
      const started = performance.now()
      const error = await rejection(client.mode())
      expect(error).toBeInstanceOf(ConnectFailed)
      expect((error as ConnectFailed).refused).toBe(true)
      expect(performance.now() - started).toBeLessThan(500)
    }
    expect(client.stats.connections).toBe(1)
  })

  it("with waitForReconnect false, a queued request fails with the refusal at once, not at its deadline", async () => {
    const { server, client } = await setUp(cleanup, false)
    // No channel free: this one waits in the queue.
    const started = performance.now()
    const queued = rejection(client.call("/echo", "y", { timeoutMs: 10_000 }))
    await waitFor(() => client.stats.queued === 1, 5000, "the request to queue")
    void Effect.runPromise(server.drain(10_000))
    const error = await queued
    expect(error).toBeInstanceOf(ConnectFailed)
    expect((error as ConnectFailed).refused).toBe(true)
    expect(performance.now() - started).toBeLessThan(1000)
  })
})
