// A's h2c listener (outboundH2.ts accept) puts a new connection's set-up off to a later turn when
// the turn's read budget is spent (src/mux/turnReads.ts). A drain that comes meanwhile must reach
// it too: close() (the graceful GOAWAY) and destroyAll() went over the sessions only, so a set-up
// put off made a session after them: one that took new calls after the drain's GOAWAY, and one
// that lived on after destroyAll (its socket open, the caller's calls taken) until its idle timeout.
import * as http2 from "node:http2"
import * as net from "node:net"
import { afterEach, beforeEach, describe, expect, it } from "vitest"
import { makeH2c } from "../../src/sidecar/outboundH2.ts"
import { Cleanup, withTimeout } from "../support/iipRaw.ts"
import { LOOPBACK } from "../support/sidecarHarness.ts"

/** Burns `ms` of CPU: the turn's read budget (10 ms) spent. */
const spin = (ms: number): void => {
  const until = performance.now() + ms
  while (performance.now() < until) {}
}

describe("A's h2c listener: a connection's set-up put off, then the drain", () => {
  let cleanup: Cleanup
  beforeEach(() => {
    cleanup = new Cleanup()
  })
  afterEach(() => cleanup.run())

  /** Two h2c callers' sockets as the outbound listener hands them over: paused, the preface unread. */
  const twoCallers = async (): Promise<{ sockets: Array<net.Socket>; callers: Array<http2.ClientHttp2Session> }> => {
    const sockets: Array<net.Socket> = []
    const callers: Array<http2.ClientHttp2Session> = []
    const server = net.createServer({ pauseOnConnect: true, allowHalfOpen: true }, (socket) => {
      socket.on("error", () => {})
      cleanup.add(() => socket.destroy())
      sockets.push(socket)
    })
    cleanup.add(() => new Promise<void>((done) => server.close(() => done())))
    await new Promise<void>((resolve) => server.listen(0, LOOPBACK, resolve))
    const port = (server.address() as net.AddressInfo).port
    for (let i = 0; i < 2; i++) {
      const caller = http2.connect(`http://${LOOPBACK}:${port}`)
      caller.on("error", () => {})
      cleanup.add(() => caller.destroy())
      callers.push(caller)
      await withTimeout(new Promise((resolve) => caller.once("connect", resolve)), 5000, "the caller's connect")
    }
    await withTimeout(
      (async () => {
        while (sockets.length < 2) await new Promise((resolve) => setImmediate(resolve))
      })(),
      5000,
      "both sockets accepted"
    )
    return { sockets, callers }
  }

  const listener = () => {
    const h2 = makeH2c(() => {}, { idleTimeoutMs: 60_000, maxStreams: 16, answerIdleMs: 60_000, onStalled: () => {}, onEnded: () => {} })
    cleanup.add(() => h2.destroyAll())
    return h2
  }

  it("close(): the connection set up later gets the GOAWAY too", async () => {
    const { sockets, callers } = await twoCallers()
    const h2 = listener()
    h2.accept(sockets[0]!)
    spin(12)
    h2.accept(sockets[1]!)
    expect(h2.sessions.size).toBe(1)
    h2.close(5000)
    const goAways = callers.map((caller) => new Promise((resolve) => caller.once("goaway", resolve)))
    await withTimeout(Promise.all(goAways), 5000, "both callers' GOAWAY")
  })

  it("destroyAll(): the connection put off is closed, no session made for it", async () => {
    const { sockets } = await twoCallers()
    const h2 = listener()
    h2.accept(sockets[0]!)
    spin(12)
    h2.accept(sockets[1]!)
    expect(h2.sessions.size).toBe(1)
    h2.destroyAll()
    await withTimeout(Promise.all(sockets.map((socket) => new Promise((resolve) => (socket.destroyed ? resolve(0) : socket.once("close", resolve))))), 5000, "both sockets' close")
    expect(h2.sessions.size).toBe(0)
  })
})
