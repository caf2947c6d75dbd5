// A dialer's stated `maxBytes` (PROTOCOL.md §10) bounds the bytes of the calls its acceptor makes
// to it; under `conncredit` (§13) it is also the credit the acceptor sends within. The streamed
// answers to the dialer's own calls are not such calls: a dialer (the outbound sidecar) grants
// their bytes back as they arrive, each bounded by its stream's window as before, so streamed
// answers whose readers stop (slow downloads, gRPC streams read slowly, stalled tunnels) never
// hold up another caller's streamed answer on the same connection. Before, a few such answers
// took all of the credit and every other streamed answer on the connection stopped, for as long
// as they were not read (forever for a stream nobody reads).
import { afterEach, beforeEach, describe, expect, it } from "vitest"
import type { IipServer } from "../../src/iip/server.ts"
import { reply } from "../../src/iip/server.ts"
import type { IncomingStream } from "../../src/mux/streams.ts"
import { Cleanup, waitFor, withTimeout } from "../support/iipRaw.ts"
import { startClient, startServer } from "../support/meshTest.ts"

const KiB = 1024
const MiB = 1024 * KiB

describe("a dialer's credit and the streamed answers to its own calls", () => {
  let cleanup: Cleanup
  let server: IipServer

  beforeEach(async () => {
    cleanup = new Cleanup()
    server = await startServer(cleanup)
    // 2 MiB, more than a stream's window (1 MiB): an answer nobody reads holds a window of it.
    server.handle("/big", () =>
      reply((async function*() {
        for (let i = 0; i < 32; i++) yield Buffer.alloc(64 * KiB, i)
      })())
    )
  })

  afterEach(() => cleanup.run())

  it("answers whose readers stopped, as many as fill the dialer's maxBytes, do not stop another caller's streamed answer", async () => {
    // 4 MiB stated: four unread answers (a 1 MiB window each) would hold all of it.
    const client = startClient(cleanup, server.address.port, { maxConnections: 1, maxQueuedBytesPerConnection: 4 * MiB })
    expect(await client.mode(5000)).toBe("mesh")
    const stopped: Array<IncomingStream> = []
    for (let i = 0; i < 4; i++) stopped.push((await client.stream("/big", Buffer.alloc(0), { timeoutMs: 30_000 })).stream!)
    const unread = () => stopped.reduce((sum, stream) => sum + stream.unreadBytes, 0)
    // They hold what they were sent and read none of it: all a window each, or all the credit leaves them.
    await waitFor(() => unread() >= 4 * MiB - 64 * KiB, 10_000, `the unread answers to fill (${unread()} bytes)`)
    const read = await client.stream("/big", Buffer.alloc(0), { timeoutMs: 30_000 })
    const whole = (async () => {
      let bytes = 0
      for await (const chunk of read.stream!) bytes += chunk.length
      return bytes
    })()
    // Its reader fails with the connection if it never ends (the client closed at cleanup): seen here, not unhandled.
    whole.catch(() => undefined)
    expect(await withTimeout(whole, 10_000, "the answer that is read to arrive whole")).toBe(2 * MiB)
  })
})
