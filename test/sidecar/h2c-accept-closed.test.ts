// A's h2c listener (outboundH2.ts accept) handed a socket the caller already closed: the first
// h2c connection waits for node:http2's import (sidecar.ts acceptH2c), and a caller that sends the
// preface and resets meanwhile leaves a socket without its handle. node wraps such a socket in a
// JSStreamSocket of its own, so session.socket reads through to the wrapper, not the socket
// accept() was given: a session that finds its socket there had none, and the drain's destroyAll
// (destroySession's grace on that socket) threw a TypeError out of the sidecar. A socket already
// closed has nothing to serve: no session is made for it.
import * as net from "node:net"
import { afterEach, beforeEach, describe, expect, it } from "vitest"
import { makeH2c } from "../../src/sidecar/outboundH2.ts"
import { Cleanup, withTimeout } from "../support/iipRaw.ts"
import { LOOPBACK } from "../support/sidecarHarness.ts"

describe("A's h2c listener handed a socket its caller already closed", () => {
  let cleanup: Cleanup
  beforeEach(() => {
    cleanup = new Cleanup()
  })
  afterEach(() => cleanup.run())

  it("makes no session for it, and destroyAll does not throw", async () => {
    const accepted = new Promise<net.Socket>((resolve, reject) => {
      const server = net.createServer({ allowHalfOpen: true }, resolve)
      server.on("error", reject)
      server.listen(0, LOOPBACK, () => {
        const caller = net.connect((server.address() as net.AddressInfo).port, LOOPBACK)
        caller.on("error", () => {})
        cleanup.add(() => caller.destroy())
      })
      cleanup.add(() => new Promise<void>((done) => server.close(() => done())))
    })
    const socket = await withTimeout(accepted, 5000, "the accepted socket")
    socket.on("error", () => {})
    await withTimeout(new Promise<void>((resolve) => (socket.destroy(), socket.once("close", () => resolve()))), 5000, "the socket's close")
    const h2 = makeH2c(() => {}, { idleTimeoutMs: 60_000, maxStreams: 16, answerIdleMs: 60_000, onStalled: () => {}, onEnded: () => {} })
    cleanup.add(() => h2.destroyAll())
    h2.accept(socket)
    expect(h2.sessions.size).toBe(0)
    expect(() => h2.destroyAll()).not.toThrow()
  })
})
