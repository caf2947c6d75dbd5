// Cancel and deadlines in mesh mode over real TCP (PROTOCOL.md §14). Every test runs the client
// with one connection of one channel, so the request that is cancelled or times out and the
// requests after it share a channel: they must still pair with their own answers. (The client
// writes a request behind cancelled ones only: the peer answers those at once. Requests queued
// behind a running one on the server are pipelined by the session itself.)
// - Abort mid-handler: the caller fails with Cancelled at once (before any network round trip),
//   the server-side handler's AbortSignal fires, and the next call gets its own answer.
// - Interrupting the Effect of `client.request(...)` cancels the request at the server too.
// - Deadline: a 100 ms call reaches the handler with `context.deadline` set; when it passes the
//   handler's signal fires, the caller fails with RequestTimeout (or RemoteError
//   deadline_exceeded), and the channel stays paired. The server enforces the deadline on its
//   own too: a request that carries `deadline-ms` but whose caller sets no timer is answered
//   deadline_exceeded by the server.
import { Effect, Exit, Fiber } from "effect"
import { afterEach, beforeEach, describe, expect, it } from "vitest"
import type { IipClient } from "../../src/iip/client.ts"
import type { IncomingRequest, IipServer } from "../../src/iip/server.ts"
import { monotonicMs } from "../../src/mux/clock.ts"
import { RequestTimeout } from "../../src/mux/errors.ts"
import { Cancelled, type MeshCallError, type MeshReply, RemoteError } from "../../src/mux/meshSession.ts"
import { MetaKey } from "../../src/protocol/mesh.ts"
import { Cleanup, deferred, withTimeout } from "../support/iipRaw.ts"
import { collectLog, type LogEvent, rejection, startClient, startServer } from "../support/meshTest.ts"

/** What the server saw of one request to /block. */
interface Blocked {
  readonly channelId: number
  readonly deadline: number
  readonly arrivedAt: number
  readonly metaDeadline: string | undefined
  /** Resolves with the signal's reason when it aborts. */
  readonly aborted: Promise<unknown>
}

describe("cancel and deadlines in mesh mode", () => {
  let cleanup: Cleanup
  let server: IipServer
  let client: IipClient
  let serverEvents: Array<LogEvent>
  /** Requests that reached /block, by request body. */
  let blocked: Map<string, { readonly started: ReturnType<typeof deferred<Blocked>> }>
  /** Channel id of each /echo request, by body. */
  let echoChannel: Map<string, number>

  const block = (body: string) => {
    const entry = { started: deferred<Blocked>() }
    blocked.set(body, entry)
    return entry.started.promise
  }

  beforeEach(async () => {
    cleanup = new Cleanup()
    blocked = new Map()
    echoChannel = new Map()
    const serverLog = collectLog()
    serverEvents = serverLog.events
    server = await startServer(cleanup, { log: serverLog.log })
    server.handle("/echo", (request) => {
      echoChannel.set(request.data.toString(), request.channelId)
      return request.data
    })
    // Waits until its signal aborts (cancel, deadline or connection loss), then answers anyway:
    // that late answer must never reach a caller.
    server.handle("/block", (request: IncomingRequest) => {
      const aborted = deferred<unknown>()
      const answered = new Promise<string>((resolve) => {
        request.signal.addEventListener(
          "abort",
          () => {
            aborted.resolve(request.signal.reason)
            resolve(`late answer to ${request.data.toString()}`)
          },
          { once: true }
        )
      })
      blocked.get(request.data.toString())?.started.resolve({
        channelId: request.channelId,
        deadline: request.context.deadline,
        arrivedAt: monotonicMs(),
        metaDeadline: request.meta.get(MetaKey.deadline),
        aborted: aborted.promise
      })
      return answered
    })
    client = startClient(cleanup, server.address.port, { maxConnections: 1, maxChannelsPerConnection: 1 })
    expect((await client.call("/echo", "warm-up", { timeoutMs: 5000 })).toString()).toBe("warm-up")
    expect(client.stats).toMatchObject({ mesh: 1, connections: 1, channels: 1 })
  })

  afterEach(() => cleanup.run())

  /** The next /echo calls on the (only) channel get their own answers, on the same channel as `channelId`. */
  const expectPaired = async (channelId: number, tag: string) => {
    const inputs = [1, 2, 3].map((i) => `${tag}-after-${i}`)
    const answers = await Promise.all(inputs.map((input) => client.call("/echo", input, { timeoutMs: 5000 })))
    expect(answers.map((a) => a.toString())).toEqual(inputs)
    for (const input of inputs) expect(echoChannel.get(input)).toBe(channelId)
    expect(client.stats.channels).toBe(1)
    expect(serverEvents.filter((e) => e.event === "protocol-violation")).toEqual([])
  }

  it("aborting mid-handler: the caller gets Cancelled at once, the handler's signal fires, the next call on the channel pairs correctly", async () => {
    const started = block("b1")
    const controller = new AbortController()
    let outcome: unknown = "pending"
    const call = client.call("/block", "b1", { timeoutMs: 10_000, signal: controller.signal }).then(
      (data) => (outcome = data.toString()),
      (error: unknown) => (outcome = error)
    )
    const seen = await withTimeout(started, 5000, "the /block handler to start")
    controller.abort()
    // "At once": settled in the same turn as abort(), before anything could cross the network.
    await Promise.resolve()
    expect(outcome).toBeInstanceOf(Cancelled)
    await call
    const reason = await withTimeout(seen.aborted, 5000, "the server-side handler's signal to abort")
    expect(reason).toBeInstanceOf(Cancelled)
    expect((reason as Cancelled).message).toContain("cancelled by the caller")
    await expectPaired(seen.channelId, "abort")
  })

  it("a signal aborted before the call is sent fails it with Cancelled and leaves the channel paired", async () => {
    const controller = new AbortController()
    controller.abort()
    const error = await rejection(client.call("/block", "never-started", { timeoutMs: 5000, signal: controller.signal }))
    expect(error).toBeInstanceOf(Cancelled)
    await expectPaired(echoChannel.get("warm-up")!, "pre-aborted")
  })

  it("interrupting the Effect of client.request(...) cancels the request at the server", async () => {
    const started = block("b2")
    const fiber = Effect.runFork(client.request("/block", "b2", { timeoutMs: 10_000 }))
    const seen = await withTimeout(started, 5000, "the /block handler to start")
    await Effect.runPromise(Fiber.interrupt(fiber))
    const exit = await Effect.runPromise(Fiber.await(fiber))
    expect(Exit.hasInterrupts(exit)).toBe(true)
    const reason = await withTimeout(seen.aborted, 5000, "the server-side handler's signal to abort")
    expect(reason).toBeInstanceOf(Cancelled)
    expect((reason as Cancelled).message).toContain("cancelled by the caller")
    await expectPaired(seen.channelId, "interrupt")
  })

  it("a 100 ms deadline reaches the handler, interrupts it when it passes, fails the call, and the channel stays paired", async () => {
    const started = block("d1")
    const sentAt = monotonicMs()
    const startedAt = performance.now()
    const error = rejection(client.call("/block", "d1", { timeoutMs: 100 }))
    const seen = await withTimeout(started, 5000, "the /block handler to start")
    // The handler sees the absolute deadline in its own (monotonic) clock: within 100 ms of when it was sent.
    expect(seen.deadline).toBeGreaterThan(0)
    expect(seen.deadline).toBeGreaterThan(seen.arrivedAt)
    expect(seen.deadline).toBeLessThanOrEqual(sentAt + 100 + 50) // + the time the request spent on the way
    expect(Number(seen.metaDeadline)).toBeGreaterThan(0)
    expect(Number(seen.metaDeadline)).toBeLessThanOrEqual(100)
    const failed = (await error) as MeshCallError
    const elapsed = performance.now() - startedAt
    if (failed instanceof RequestTimeout) {
      expect(failed.timeoutMs).toBeLessThanOrEqual(100)
    } else {
      expect(failed).toBeInstanceOf(RemoteError)
      expect(failed).toMatchObject({ code: "deadline_exceeded", processed: true })
    }
    expect(elapsed).toBeGreaterThanOrEqual(90)
    expect(elapsed).toBeLessThan(2000)
    // The handler was interrupted: its signal fired (by its own deadline or by the caller's cancel).
    const reason = await withTimeout(seen.aborted, 5000, "the server-side handler's signal to abort")
    expect(reason).toBeInstanceOf(Cancelled)
    expect((reason as Cancelled).message).toMatch(/deadline of \d+ ms passed|cancelled by the caller/)
    await expectPaired(seen.channelId, "deadline")
  })

  it("the server enforces deadline-ms by itself: a caller without a timer gets RemoteError deadline_exceeded, processed true", async () => {
    const started = block("d2")
    const session = client.meshSessions[0]!
    const channel = session.openChannel()
    const result = deferred<{ error: MeshCallError | undefined; reply: MeshReply | undefined }>()
    const sentAt = performance.now()
    // No timeoutMs: the caller has no timer of its own; only the metadata tells the server.
    session.call(channel, "/block", Buffer.from("d2"), { meta: new Map([[MetaKey.deadline, "80"]]) }, (error, reply) => result.resolve({ error, reply }))
    const seen = await withTimeout(started, 5000, "the /block handler to start")
    expect(seen.channelId).toBe(channel.id)
    expect(seen.metaDeadline).toBe("80")
    expect(seen.deadline - seen.arrivedAt).toBeLessThanOrEqual(80)
    const { error, reply } = await withTimeout(result.promise, 5000, "the server's deadline answer")
    expect(reply).toBeUndefined()
    expect(error).toBeInstanceOf(RemoteError)
    expect(error).toMatchObject({ code: "deadline_exceeded", processed: true })
    expect(performance.now() - sentAt).toBeGreaterThanOrEqual(75)
    const reason = await withTimeout(seen.aborted, 5000, "the handler's signal to abort")
    expect((reason as Cancelled).message).toContain("deadline of 80 ms passed")
    // That channel is paired too.
    const next = deferred<string>()
    session.call(channel, "/echo", Buffer.from("after-server-deadline"), { timeoutMs: 5000 }, (e, r) => next.resolve(e === undefined ? r!.data.toString() : `error ${e._tag}`))
    expect(await withTimeout(next.promise, 5000, "the next answer on that channel")).toBe("after-server-deadline")
  })

  it("a server deadline that passes while the request waits behind a running one answers it deadline_exceeded without running it, in its turn", async () => {
    const first = block("w1")
    let secondRan = false
    void block("w2").then(() => (secondRan = true))
    const session = client.meshSessions[0]!
    const channel = session.openChannel()
    const results = [deferred<MeshCallError | undefined>(), deferred<MeshCallError | undefined>()]
    // No timers at the caller: only the server's deadlines end them, the queued one's first.
    session.call(channel, "/block", Buffer.from("w1"), { meta: new Map([[MetaKey.deadline, "400"]]) }, (error) => results[0]!.resolve(error))
    session.call(channel, "/block", Buffer.from("w2"), { meta: new Map([[MetaKey.deadline, "80"]]) }, (error) => results[1]!.resolve(error))
    const seen = await withTimeout(first, 5000, "the first /block handler to start")
    expect(seen.channelId).toBe(channel.id)
    const firstError = await withTimeout(results[0]!.promise, 5000, "the running request's deadline answer")
    expect(firstError).toMatchObject({ _tag: "RemoteError", code: "deadline_exceeded", processed: true })
    const secondError = await withTimeout(results[1]!.promise, 5000, "the queued request's deadline answer")
    expect(secondError).toMatchObject({ _tag: "RemoteError", code: "deadline_exceeded", processed: false })
    expect((secondError as RemoteError).message).toContain("deadline of 80 ms passed before it ran")
    expect(secondRan).toBe(false)
    const next = deferred<string>()
    session.call(channel, "/echo", Buffer.from("after-queued-deadline"), { timeoutMs: 5000 }, (e, r) => next.resolve(e === undefined ? r!.data.toString() : `error ${e._tag}`))
    expect(await withTimeout(next.promise, 5000, "the next answer on that channel")).toBe("after-queued-deadline")
  })

  it("cancelling a request queued behind a running one answers it without ever running it; both callers settle; pairing holds", async () => {
    // The client writes no request behind another: the session itself pipelines two on one channel.
    const session = client.meshSessions[0]!
    const channel = session.openChannel()
    const call = (path: string, body: string, signal?: AbortSignal) =>
      new Promise<Buffer>((resolve, reject) =>
        session.call(channel, path, Buffer.from(body), { timeoutMs: 10_000, ...(signal === undefined ? {} : { signal }) }, (error, reply) =>
          error === undefined ? resolve(reply!.data) : reject(error)
        )
      )
    const first = block("q1")
    let secondRan = false
    void block("q2").then(() => (secondRan = true))
    const firstController = new AbortController()
    const secondController = new AbortController()
    const firstCall = rejection(call("/block", "q1", firstController.signal))
    const secondCall = rejection(call("/block", "q2", secondController.signal))
    const seen = await withTimeout(first, 5000, "the first /block handler to start")
    // Both are on the one channel: q2 waits in the server's mailbox behind q1.
    expect(seen.channelId).toBe(channel.id)
    expect(session.callingCount).toBe(2)
    secondController.abort()
    expect(await secondCall).toBeInstanceOf(Cancelled)
    firstController.abort()
    expect(await firstCall).toBeInstanceOf(Cancelled)
    expect(await withTimeout(seen.aborted, 5000, "q1's signal to abort")).toBeInstanceOf(Cancelled)
    // Both late answers are consumed; the next calls on the channel get their own answers.
    const inputs = [1, 2, 3].map((i) => `queued-after-${i}`)
    expect((await Promise.all(inputs.map((input) => call("/echo", input)))).map(String)).toEqual(inputs)
    for (const input of inputs) expect(echoChannel.get(input)).toBe(channel.id)
    expect(session.callingCount).toBe(0)
    expect(serverEvents.filter((e) => e.event === "protocol-violation")).toEqual([])
    expect(secondRan).toBe(false)
  })
})
