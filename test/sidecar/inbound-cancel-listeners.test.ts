// A request's abort listener at the inbound side ends with the request. A plain IIP connection's
// requests share one cancel signal, the connection's (serverSession.ts): an exchange left listening
// on it after its answer would be kept, with its request and body, for as long as the connection
// lives, and every one of them told at its close. Counted on the signals the listeners were added
// to: after the answers, no more abort listeners than before them, however many requests went.
import { getEventListeners } from "node:events"
import * as http2 from "node:http2"
import type * as net from "node:net"
import { afterEach, describe, expect, it, vi } from "vitest"
import { Cleanup } from "../support/iipRaw.ts"
import { startClient } from "../support/meshTest.ts"
import { LOOPBACK, sidecarConfig, startApp, startSidecar } from "../support/sidecarHarness.ts"

/** The abort listeners on every AbortSignal one was added to from now on (the test's spy). */
const abortListeners = (): (() => number) => {
  const signals = new Set<EventTarget>()
  const add = EventTarget.prototype.addEventListener
  vi.spyOn(EventTarget.prototype, "addEventListener").mockImplementation(function (this: EventTarget, type, listener, options) {
    if (type === "abort" && this instanceof AbortSignal) signals.add(this)
    return add.call(this, type, listener, options)
  })
  return () => {
    let count = 0
    for (const signal of signals) count += getEventListeners(signal, "abort").length
    return count
  }
}

/** A plain IIP client's 21 requests in turn on one connection, the abort listeners counted after the first and the last. */
const expectNoListenerKept = async (cleanup: Cleanup, port: number): Promise<void> => {
  const plain = startClient(cleanup, port, { mesh: false })
  const listening = abortListeners()
  expect((await plain.call("/first", "{}", { timeoutMs: 5000 })).toString()).toBe("ok")
  const before = listening()
  for (let i = 0; i < 20; i++) expect((await plain.call(`/more/${i}`, "{}", { timeoutMs: 5000 })).toString()).toBe("ok")
  expect(listening()).toBe(before)
}

describe("the inbound side's abort listeners", () => {
  let cleanup = new Cleanup()
  afterEach(async () => {
    vi.restoreAllMocks()
    await cleanup.run()
    cleanup = new Cleanup()
  })

  it("are gone once a plain IIP request is answered: the connection's signal does not gather one per request", async () => {
    const app = await startApp(cleanup, (req, res) => {
      req.resume()
      req.once("end", () => res.end("ok"))
    })
    const b = await startSidecar(cleanup, sidecarConfig({ service: "catalog", app: app.address, tracing: false }))
    await expectNoListenerKept(cleanup, b.sidecar.inbound.port)
  })

  it("are gone once a plain IIP request to an h2c app is answered", async () => {
    const app = http2.createServer()
    app.on("stream", (stream) => {
      stream.on("error", () => {})
      stream.resume()
      stream.on("end", () => {
        stream.respond({ ":status": 200 })
        stream.end("ok")
      })
    })
    await new Promise<void>((resolve) => app.listen(0, LOOPBACK, resolve))
    const sessions: Array<http2.ServerHttp2Session> = []
    app.on("session", (session) => sessions.push(session))
    cleanup.add(() => new Promise<void>((resolve) => app.close(() => resolve())))
    cleanup.add(() => sessions.forEach((session) => session.destroy()))
    const port = (app.address() as net.AddressInfo).port
    const b = await startSidecar(cleanup, sidecarConfig({ service: "inventory", app: `${LOOPBACK}:${port}`, appProtocol: "h2c", tracing: false }))
    await expectNoListenerKept(cleanup, b.sidecar.inbound.port)
  })
})
