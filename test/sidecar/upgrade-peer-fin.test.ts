// An upgrade request A refuses (outboundUpgrade.ts's error answer, then its end) from a caller that
// reads the answer and never ends its side: the listener keeps sockets half-open and, once the
// socket is handed to the upgrade, no timer watches it, so A held it (and its
// --max-app-connections place) for ever. Now it is destroyed a grace (2 s) after its end went out.
// Failed before: A's socket still held after 20 s.
import * as net from "node:net"
import { afterEach, beforeEach, describe, expect, it } from "vitest"
import { heldSocketsTo } from "../support/heldSockets.ts"
import { Cleanup, waitFor, withTimeout } from "../support/iipRaw.ts"
import { LOOPBACK, sidecarConfig, startSidecar } from "../support/sidecarHarness.ts"

describe("a refused upgrade's caller that never sends its FIN", () => {
  let cleanup: Cleanup
  beforeEach(() => {
    cleanup = new Cleanup()
  })
  afterEach(() => cleanup.run())

  it("A closes its socket after its error answer", async () => {
    const a = await startSidecar(cleanup, sidecarConfig({ service: "store", tracing: false, endpoints: {} }))
    const caller = net.connect({ port: a.outboundPort, host: LOOPBACK, allowHalfOpen: true })
    cleanup.add(() => caller.destroy())
    caller.on("error", () => {})
    let answer = ""
    caller.setEncoding("latin1")
    caller.on("data", (chunk: string) => (answer += chunk))
    const ended = new Promise<void>((resolve) => caller.once("end", () => resolve()))
    await new Promise<void>((resolve) => caller.once("connect", () => resolve()))
    caller.write("GET /ws HTTP/1.1\r\nhost: nowhere\r\nconnection: upgrade\r\nupgrade: websocket\r\n\r\n")
    await withTimeout(ended, 20_000, "A's end after its answer")
    expect(answer).toMatch(/^HTTP\/1\.1 [45]\d\d /)
    await waitFor(() => heldSocketsTo(caller.localPort!) === 0, 20_000, "A to close its socket to the caller")
  }, 60_000)
})
