// Middleware over real TCP (src/iip/dispatch.ts, src/toolkit/loadBalanceClient.ts): serving hooks,
// global (server.use) and per route (server.handle's third argument), run global before route on
// the way in and in reverse on the way out, in plain and mesh mode; a hook answers at once (the
// handler and the hooks inside it do not run) or refuses with a typed error; an authentication
// hook refuses calls without the token, unknown paths included; calling hooks on the load-balance
// client run in the same order, add metadata, and can refuse a call before it leaves.
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import { afterEach, beforeEach, describe, expect, it } from "vitest"
import { Refused, type ServeHook } from "../../src/iip/dispatch.ts"
import { failure, type IipServer } from "../../src/iip/server.ts"
import { RemoteError } from "../../src/mux/meshSession.ts"
import type { CallHook } from "../../src/toolkit/loadBalanceClient.ts"
import { Cleanup } from "../support/iipRaw.ts"
import { collectLog, rejection, startClient, startServer } from "../support/meshTest.ts"
import { addressOf, startLb } from "../toolkit/support.ts"

/** A hook that records its way in and out in `trace`. */
const tracing = (name: string, trace: Array<string>): ServeHook => ({
  before: () => void trace.push(`${name} in`),
  after: () => void trace.push(`${name} out`)
})

describe("serving hooks", () => {
  let cleanup: Cleanup
  let server: IipServer
  let trace: Array<string>

  beforeEach(async () => {
    cleanup = new Cleanup()
    trace = []
    server = await startServer(cleanup)
  })

  afterEach(() => cleanup.run())

  it.each([["plain", false], ["mesh", true]] as const)("run global before route on the way in, in reverse on the way out (%s)", async (_mode, mesh) => {
    server.use(tracing("global 1", trace)).use(tracing("global 2", trace))
    server.handle(
      "/x",
      (request) => {
        trace.push("handler")
        return request.data
      },
      [tracing("route 1", trace), { before: () => void trace.push("route 2 in"), after: (_request, outcome) => Buffer.concat([outcome as Buffer, Buffer.from("+r2")]) }]
    )
    const client = startClient(cleanup, server.address.port, { mesh })
    expect((await client.call("/x", "body", { timeoutMs: 5000 })).toString()).toBe("body+r2")
    expect(trace).toStrictEqual(["global 1 in", "global 2 in", "route 1 in", "route 2 in", "handler", "route 1 out", "global 2 out", "global 1 out"])
  })

  it("a before that answers short-circuits: the handler and the hooks inside it do not run; the hooks up to it see the answer on the way out", async () => {
    const seen: Array<string> = []
    server.use({ before: () => void trace.push("global in"), after: (_r, outcome) => void seen.push((outcome as Buffer).toString()) })
    server.handle("/cached", () => {
      trace.push("handler")
      return "fresh"
    }, [
      { before: () => Buffer.from("cached"), after: () => void trace.push("cache out") },
      tracing("inner", trace)
    ])
    const client = startClient(cleanup, server.address.port)
    expect((await client.call("/cached", "x", { timeoutMs: 5000 })).toString()).toBe("cached")
    expect(trace).toStrictEqual(["global in", "cache out"])
    expect(seen).toStrictEqual(["cached"])
  })

  it("async hooks keep the order; an after may replace the outcome; a throwing after becomes handler_failed", async () => {
    server.use({
      before: async () => {
        await Promise.resolve()
        trace.push("async in")
        return undefined
      }
    })
    server.handle("/effect", () => Effect.succeed("from an Effect"), [{ after: (_r, outcome) => Buffer.from(`${(outcome as Buffer).toString()}!`) }])
    server.handle("/throws-after", () => "x", [{ after: () => {
      throw new Error("after broke")
    } }])
    const client = startClient(cleanup, server.address.port)
    expect((await client.call("/effect", "", { timeoutMs: 5000 })).toString()).toBe("from an Effect!")
    expect(await rejection(client.call("/throws-after", "", { timeoutMs: 5000 }))).toMatchObject({ code: "handler_failed", message: "after broke" })
    expect(trace).toStrictEqual(["async in", "async in"])
  })

  it("a route hook sees an Effect handler's defect as no_response, and the defect is still logged", async () => {
    const log = collectLog()
    const crashing = await startServer(cleanup, { log: log.log })
    const outcomes: Array<string> = []
    crashing.handle("/die", () => Effect.die(new Error("bug")), [{ after: (_r, outcome) => void outcomes.push((outcome as { code: string }).code) }])
    const client = startClient(cleanup, crashing.address.port)
    expect(await rejection(client.call("/die", "", { timeoutMs: 5000 }))).toMatchObject({ code: "no_response" })
    expect(outcomes).toStrictEqual(["no_response"])
    expect(log.events.map((e) => e.event)).toContain("handler-crashed")
  })

  it("an authentication hook refuses calls without the token with a typed error, unknown paths included", async () => {
    let handled = 0
    server.use({
      before: (request) => {
        if (request.meta.get("authorization") !== "Bearer s3cret") throw new Refused({ code: "unauthenticated", message: "missing or wrong token" })
        return undefined
      }
    })
    server.handle("/secret", () => {
      handled++
      return "the secret"
    })
    const client = startClient(cleanup, server.address.port)
    for (const path of ["/secret", "/nosuch"]) {
      const refused = await rejection(client.call(path, "", { timeoutMs: 5000 }))
      expect(refused).toBeInstanceOf(RemoteError)
      expect(refused).toMatchObject({ code: "unauthenticated", message: "missing or wrong token", processed: false })
    }
    const token = new Map([["authorization", "Bearer s3cret"]])
    expect((await client.call("/secret", "", { timeoutMs: 5000, meta: token })).toString()).toBe("the secret")
    expect(await rejection(client.call("/nosuch", "", { timeoutMs: 5000, meta: token }))).toMatchObject({ code: "not_found" })
    expect(handled).toBe(1)
    // A plain peer cannot carry the token; it gets the reference's error body with the message.
    const plain = startClient(cleanup, server.address.port, { mesh: false })
    expect((await plain.call("/secret", "")).toString()).toBe(`{"code":-1,"message":"handler fail:missing or wrong token"}`)
  })

  it("a validation hook answers with failure(...) before the handler runs", async () => {
    server.handle("/json", (request) => request.data, [
      { before: (request) => (request.data[0] === 0x7b ? undefined : failure("bad_request", "body must be a JSON object", false)) }
    ])
    const client = startClient(cleanup, server.address.port)
    expect((await client.call("/json", `{"a":1}`, { timeoutMs: 5000 })).toString()).toBe(`{"a":1}`)
    expect(await rejection(client.call("/json", "nope", { timeoutMs: 5000 }))).toMatchObject({ code: "bad_request", processed: false })
  })
})

describe("calling hooks (load-balance client)", () => {
  let cleanup: Cleanup
  let server: IipServer
  let received: Array<string>

  beforeEach(async () => {
    cleanup = new Cleanup()
    received = []
    server = await startServer(cleanup)
    server.handle("/x", (request) => {
      received.push(request.data.toString())
      return request.meta.get("authorization") ?? "no token"
    })
  })

  afterEach(() => cleanup.run())

  it("run global before per-path on the way out and in reverse on the way back; a before may add metadata", async () => {
    const trace: Array<string> = []
    const hook = (name: string): CallHook => ({ before: () => void trace.push(`${name} in`), after: () => void trace.push(`${name} out`) })
    const lb = startLb(cleanup, { backends: `${addressOf(server)}#1` })
    lb.use(hook("global 1"))
      .use({ before: (call) => void call.meta.set("authorization", "Bearer s3cret") })
      .useFor("/x", hook("path"))
      .use(hook("global 2"))
    expect((await lb.call("/x?q=1", "hello")).toString()).toBe("Bearer s3cret")
    expect(trace).toStrictEqual(["global 1 in", "global 2 in", "path in", "path out", "global 2 out", "global 1 out"])
    trace.length = 0
    server.handle("/y", () => "y")
    await lb.call("/y")
    expect(trace).toStrictEqual(["global 1 in", "global 2 in", "global 2 out", "global 1 out"])
  })

  it("a calling hook refuses a call before it leaves, or answers it from a cache; after sees the result", async () => {
    const results: Array<string> = []
    const lb = startLb(cleanup, { backends: `${addressOf(server)}#1` })
    lb.use({ after: (_call, exit) => void results.push(Exit.isSuccess(exit) ? "ok" : "failed") })
    lb.use({ before: (call) => (call.data.length === 0 ? Exit.fail(new Refused({ code: "invalid", message: "empty body" })) : undefined) })
    lb.useFor("/x", { before: (call) => (call.path.endsWith("cached=1") ? Exit.succeed(Buffer.from("from cache")) : undefined) })
    const refused = await rejection(lb.call("/x", ""))
    expect(refused).toBeInstanceOf(Refused)
    expect(refused).toMatchObject({ code: "invalid", message: "empty body" })
    expect((await lb.call("/x?cached=1", "data")).toString()).toBe("from cache")
    expect((await lb.call("/x", "sent")).toString()).toBe("no token")
    expect(received).toStrictEqual(["sent"])
    expect(results).toStrictEqual(["failed", "ok", "ok"])
  })
})
