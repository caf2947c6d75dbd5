// A CONNECT to the admin server (respond.ts's refuseConnect) from a client that reads the 405 and
// never ends its side: node's HTTP server keeps sockets half-open and lets go of one handed to a
// 'connect' listener, so the admin server held it for ever after its answer. Now it is destroyed a
// grace (2 s) after its end went out. Failed before: the socket still held after 20 s.
import * as net from "node:net"
import { afterEach, beforeEach, describe, expect, it } from "vitest"
import { heldSocketsTo } from "../support/heldSockets.ts"
import { Cleanup, waitFor, withTimeout } from "../support/iipRaw.ts"
import { LOOPBACK, sidecarConfig, startAdmin, startSidecar } from "../support/sidecarHarness.ts"

describe("a CONNECT client of the admin server that never sends its FIN", () => {
  let cleanup: Cleanup
  beforeEach(() => {
    cleanup = new Cleanup()
  })
  afterEach(() => cleanup.run())

  it("the admin server closes its socket after the 405", async () => {
    const running = await startSidecar(cleanup, sidecarConfig({ service: "store", tracing: false }))
    const port = Number(new URL(await startAdmin(cleanup, running)).port)
    const client = net.connect({ port, host: LOOPBACK, allowHalfOpen: true })
    cleanup.add(() => client.destroy())
    client.on("error", () => {})
    let answer = ""
    client.setEncoding("latin1")
    client.on("data", (chunk: string) => (answer += chunk))
    const ended = new Promise<void>((resolve) => client.once("end", () => resolve()))
    await new Promise<void>((resolve) => client.once("connect", () => resolve()))
    client.write("CONNECT elsewhere:443 HTTP/1.1\r\nhost: elsewhere:443\r\n\r\n")
    await withTimeout(ended, 20_000, "the admin server's end after its answer")
    expect(answer).toMatch(/^HTTP\/1\.1 405 /)
    await waitFor(() => heldSocketsTo(client.localPort!) === 0, 20_000, "the admin server to close its socket")
  }, 60_000)
})
