// Typed errors in mesh mode over real TCP (PROTOCOL.md §14): an unknown path fails with
// RemoteError not_found (processed false: the handler never ran), a throwing, rejecting or failing
// handler with handler_failed (processed true), a handler's own `failure(...)` with its code and
// message. Errors travel in envelopes of kind 3, so they can never be mistaken for data: a handler
// that returns bytes that look exactly like an IIP or mesh error body is answered as data.
import { Effect } from "effect"
import { afterEach, beforeEach, describe, expect, it } from "vitest"
import type { IipClient } from "../../src/iip/client.ts"
import { failure, type IipServer } from "../../src/iip/server.ts"
import { RemoteError } from "../../src/mux/meshSession.ts"
import { Cleanup } from "../support/iipRaw.ts"
import { collectLog, type LogEvent, rejection, startClient, startServer } from "../support/meshTest.ts"

describe("typed errors in mesh mode", () => {
  let cleanup: Cleanup
  let server: IipServer
  let client: IipClient
  let serverEvents: Array<LogEvent>

  beforeEach(async () => {
    cleanup = new Cleanup()
    const serverLog = collectLog()
    serverEvents = serverLog.events
    server = await startServer(cleanup, { log: serverLog.log })
    server.handle("/echo", (request) => request.data)
    client = startClient(cleanup, server.address.port, { maxConnections: 1 })
    expect((await client.call("/echo", "warm-up", { timeoutMs: 5000 })).toString()).toBe("warm-up")
    expect(client.stats.mesh).toBe(1)
  })

  afterEach(() => cleanup.run())

  it("an unknown path fails with RemoteError not_found, processed false", async () => {
    const error = await rejection(client.call("/nowhere", "x", { timeoutMs: 5000 }))
    expect(error).toBeInstanceOf(RemoteError)
    expect(error).toMatchObject({ _tag: "RemoteError", code: "not_found", processed: false })
    expect((error as RemoteError).message).toContain("/nowhere")
  })

  it("a handler that throws fails with RemoteError handler_failed, processed true, carrying the thrown message", async () => {
    server.handle("/throw", () => {
      throw new Error("boom in handler")
    })
    const error = await rejection(client.call("/throw", "x", { timeoutMs: 5000 }))
    expect(error).toBeInstanceOf(RemoteError)
    expect(error).toMatchObject({ code: "handler_failed", processed: true, message: "boom in handler" })
  })

  it("a handler whose promise rejects or whose Effect fails also fails with handler_failed, processed true", async () => {
    server.handle("/reject", () => Promise.reject(new Error("async boom")))
    server.handle("/effect-fail", () => Effect.fail(new Error("effect boom")))
    const rejected = await rejection(client.call("/reject", "x", { timeoutMs: 5000 }))
    expect(rejected).toMatchObject({ _tag: "RemoteError", code: "handler_failed", processed: true, message: "async boom" })
    const failed = await rejection(client.call("/effect-fail", "x", { timeoutMs: 5000 }))
    expect(failed).toMatchObject({ _tag: "RemoteError", code: "handler_failed", processed: true, message: "effect boom" })
  })

  it("failure(\"overloaded\", \"busy\", false) returned by a handler arrives as RemoteError with that code, message and processed flag", async () => {
    server.handle("/busy", () => failure("overloaded", "busy", false))
    server.handle("/busy-later", async () => failure("overloaded", "busy later", true))
    const error = await rejection(client.call("/busy", "x", { timeoutMs: 5000 }))
    expect(error).toBeInstanceOf(RemoteError)
    expect(error).toMatchObject({ code: "overloaded", message: "busy", processed: false })
    const later = await rejection(client.call("/busy-later", "x", { timeoutMs: 5000 }))
    expect(later).toMatchObject({ code: "overloaded", message: "busy later", processed: true })
  })

  it("data that looks exactly like an error body is delivered as data, never as an error", async () => {
    const plainError = '{"code":102,"message":"handle error"}'
    const meshError = '{"code":"not_found","message":"no handler for /x","processed":false}'
    server.handle("/looks-like-plain-error", () => Buffer.from(plainError, "utf8"))
    server.handle("/looks-like-mesh-error", () => meshError)
    const first = await client.call("/looks-like-plain-error", "x", { timeoutMs: 5000 })
    expect(first.toString("utf8")).toBe(plainError)
    const second = await client.call("/looks-like-mesh-error", "x", { timeoutMs: 5000 })
    expect(second.toString("utf8")).toBe(meshError)
    // And a request body that looks like an error reaches the handler untouched.
    expect((await client.call("/echo", plainError, { timeoutMs: 5000 })).toString("utf8")).toBe(plainError)
  })

  it("errors leave a channel paired: pipelined on one channel, after every kind of error the next answers are the right ones", async () => {
    const oneChannel = startClient(cleanup, server.address.port, { maxConnections: 1, maxChannelsPerConnection: 1 })
    server.handle("/throw", () => {
      throw new Error("boom")
    })
    server.handle("/busy", () => failure("overloaded", "busy", false))
    const paths = ["/nowhere", "/echo", "/throw", "/echo", "/busy", "/echo"]
    const results = await Promise.all(
      paths.map((path, i) =>
        oneChannel.call(path, `body-${i}`, { timeoutMs: 5000 }).then(
          (data) => data.toString(),
          (error: RemoteError) => `error:${error.code}`
        )
      )
    )
    expect(results).toEqual(["error:not_found", "body-1", "error:handler_failed", "body-3", "error:overloaded", "body-5"])
    expect(oneChannel.stats.channels).toBe(1)
    expect(serverEvents.filter((e) => e.event === "protocol-violation")).toEqual([])
  })
})
