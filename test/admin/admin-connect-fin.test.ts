// A CONNECT to the admin server (respond.ts's refuseConnect) from a client that reads the 405 and
// never ends its side: node's HTTP server keeps sockets half-open and lets go of one handed to a
// 'connect' listener, so the admin server held it for ever after its answer. Now it is destroyed a
// grace (2 s) after its end went out. Failed before: the socket still held after 20 s.
import { afterEach, beforeEach, describe, expect, it } from "vitest"
import { halfOpenCaller, heldSocketsTo } from "../support/heldSockets.ts"
import { Cleanup, waitFor } from "../support/iipRaw.ts"
import { sidecarConfig, startAdmin, startSidecar } from "../support/sidecarHarness.ts"

describe("a CONNECT client of the admin server that never sends its FIN", () => {
  let cleanup: Cleanup
  beforeEach(() => {
    cleanup = new Cleanup()
  })
  afterEach(() => cleanup.run())

  it("the admin server closes its socket after the 405", async () => {
    const running = await startSidecar(cleanup, sidecarConfig({ service: "store", tracing: false }))
    const port = Number(new URL(await startAdmin(cleanup, running)).port)
    const { read, localPort } = await halfOpenCaller(cleanup, port, "CONNECT elsewhere:443 HTTP/1.1\r\nhost: elsewhere:443\r\n\r\n")
    expect(read).toMatch(/^HTTP\/1\.1 405 /)
    await waitFor(() => heldSocketsTo(localPort) === 0, 20_000, "the admin server to close its socket")
  }, 60_000)
})
