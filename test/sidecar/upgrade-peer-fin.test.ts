// An upgrade request A refuses (outboundUpgrade.ts's error answer, then its end) from a caller that
// reads the answer and never ends its side: the listener keeps sockets half-open and, once the
// socket is handed to the upgrade, no timer watches it, so A held it (and its
// --max-app-connections place) for ever. Now it is destroyed once its end went out
// (outboundUpgrade.ts's closeAfterAnswer; outbound-upgrade-endings.test.ts sees the place free
// again, this the kernel's view: no process holds A's socket). Failed before: still held after 20 s.
import { afterEach, beforeEach, describe, expect, it } from "vitest"
import { halfOpenCaller, heldSocketsTo } from "../support/heldSockets.ts"
import { Cleanup, waitFor } from "../support/iipRaw.ts"
import { sidecarConfig, startSidecar } from "../support/sidecarHarness.ts"

describe("a refused upgrade's caller that never sends its FIN", () => {
  let cleanup: Cleanup
  beforeEach(() => {
    cleanup = new Cleanup()
  })
  afterEach(() => cleanup.run())

  it("A closes its socket after its error answer", async () => {
    const a = await startSidecar(cleanup, sidecarConfig({ service: "store", tracing: false, endpoints: {} }))
    const { read, localPort } = await halfOpenCaller(cleanup, a.outboundPort, "GET /ws HTTP/1.1\r\nhost: nowhere\r\nconnection: upgrade\r\nupgrade: websocket\r\n\r\n")
    expect(read).toMatch(/^HTTP\/1\.1 [45]\d\d /)
    await waitFor(() => heldSocketsTo(localPort) === 0, 20_000, "A to close its socket to the caller")
  }, 60_000)
})
