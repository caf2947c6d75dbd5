// The Effect surface of IIP (src/effect): IipServer and IipClient as layers (from Config too),
// streamed calls as Streams with the window's back-pressure both ways, handlers as supervised
// fibers. Sockets are real (127.0.0.1, port 0); the deadline test runs on the TestClock.
// - R through the layer: a handler needing a service gets it from the layer that adds the route.
// - 64 MiB up and back down through an echoing stream handler with a slow consumer: what the
//   upload has produced never runs more than a few windows ahead of what the consumer has read,
//   and the process's resident memory (sampled after a full collection) grows by far less
//   than the 64 MiB moved.
// - Interrupting the caller's fiber interrupts the handler's fiber (its finalizer observed)
//   promptly; for a streamed call, interrupting the consumer does the same to the streaming handler,
//   through the load-balance client too (whose streamed answer streams: chunk 2 waits on chunk 1).
// - A deadline interrupts the handler at the deadline on the TestClock, not before.
// - Closing the client's connection interrupts all its handler fibers and runs their finalizers;
//   closing the server's layer (drain) interrupts the handlers still running after the drain timeout.
// - A defect gives the caller a typed RemoteError (handler_failed), its cause is logged, and the
//   server keeps serving.
// - A call from the server runs the client's Effect handler; the server's pushes arrive on the
//   client as a Stream.
import { assert, describe, expect, it } from "@effect/vitest"
import { ConfigProvider, Context, Deferred, Effect, Exit, Fiber, Layer, Logger, Scope, Stream } from "effect"
import { TestClock } from "effect/testing"
import * as v8 from "node:v8"
import * as vm from "node:vm"
import { IipClient, IipLoadBalancer } from "../../src/effect/client.ts"
import { IipServer } from "../../src/effect/server.ts"
import { RemoteError } from "../../src/mux/meshSession.ts"
import { CANCEL_PROPAGATES_MS } from "../support/promptness.ts"

const quiet = { log: () => {} }

/** A full collection, so memory samples show what is live (the flag is set once, here only). */
v8.setFlagsFromString("--expose-gc")
const collectGarbage = vm.runInNewContext("gc") as () => void

class Greeter extends Context.Service<Greeter, { readonly greet: (name: string) => string }>()("test/Greeter") {
  static readonly layer = Layer.succeed(Greeter, { greet: (name) => `hello ${name}` })
}

/** A server on port 0 and a client of it, in the current scope. */
const serverAndClient = Effect.gen(function*() {
  const server = yield* Layer.build(IipServer.layer({ host: "127.0.0.1", port: 0, ...quiet, drainTimeoutMs: 50, keepAlive: false }))
  const core = Context.get(server, IipServer)
  const client = yield* Layer.build(IipClient.layer({ host: "127.0.0.1", port: core.address.port, requestTimeoutMs: 0, keepAlive: false, ...quiet }))
  return { server: core, client: Context.get(client, IipClient) }
})

/** Waits on a Deferred with a real-time bound (a hang fails the test instead of timing it out). */
const awaitBounded = <A>(deferred: Deferred.Deferred<A>, what: string) =>
  Deferred.await(deferred).pipe(Effect.timeoutOrElse({ duration: "5 seconds", orElse: () => Effect.die(new Error(`timed out waiting for ${what}`)) }))

/** Resolves once `condition` holds, checking after each turn of the event loop (real I/O only). */
const waitUntil = (condition: () => boolean): Promise<void> =>
  new Promise((resolve) => {
    const check = () => (condition() ? resolve() : setImmediate(check))
    check()
  })

describe("layers", () => {
  it.live("server and client come from Config; the handler's R comes from the layer that adds its route", () =>
    Effect.gen(function*() {
      const config = ConfigProvider.layer(ConfigProvider.fromUnknown({ IIP_SERVER_PORT: "0", IIP_SERVER_NODE: "cfg-server" }))
      const server = yield* Layer.build(IipServer.layerConfig().pipe(Layer.provide(config)))
      const core = Context.get(server, IipServer)
      yield* Layer.build(
        IipServer.routes((s) => s.handle("/greet", (request) => Greeter.use((g) => Effect.succeed(g.greet(request.data.toString()))))).pipe(
          Layer.provide([Greeter.layer, Layer.succeedContext(server)])
        )
      )
      const clientConfig = ConfigProvider.layer(ConfigProvider.fromUnknown({ IIP_CLIENT_PORT: String(core.address.port), IIP_CLIENT_DEADLINE: "2 seconds" }))
      const client = Context.get(yield* Layer.build(IipClient.layerConfig().pipe(Layer.provide(clientConfig))), IipClient)
      const answer = yield* client.request("/greet", "alice")
      assert.strictEqual(answer.toString(), "hello alice")
    })
  )
})

describe("channels as Streams", () => {
  it.live("64 MiB up and down with a slow consumer: the upload stays within a few windows of the consumer, memory bounded", () =>
    Effect.gen(function*() {
      const { server, client } = yield* serverAndClient
      yield* server.handleStream("/echo", (_request, body) => body)
      const chunk = new Uint8Array(64 * 1024).map((_, i) => i % 251)
      const chunks = 1024 // 64 MiB
      let produced = 0
      let consumed = 0
      let maxAhead = 0
      collectGarbage()
      const baseline = process.memoryUsage().rss
      let peak = 0
      // One chunk per pull (a range is emitted in batches), so `produced` counts what was pulled.
      const upload = Stream.range(1, chunks).pipe(
        Stream.rechunk(1),
        Stream.map(() => {
          produced += chunk.length
          return chunk
        })
      )
      let checksum = 0
      yield* client.stream("/echo", upload).pipe(
        Stream.tap((piece) =>
          Effect.gen(function*() {
            consumed += piece.length
            if (piece.length > 0) checksum = (checksum + piece[0]! + piece[piece.length - 1]!) % 1_000_003
            maxAhead = Math.max(maxAhead, produced - consumed)
            // Live memory, not garbage waiting for a collection: collect, then sample, every 8 MiB.
            if (consumed % (8 * 1024 * 1024) < piece.length) {
              collectGarbage()
              peak = Math.max(peak, process.memoryUsage().rss - baseline)
            }
            // Slow: the consumer yields to the timer queue about every 256 KiB it reads.
            if (consumed % (256 * 1024) < piece.length) yield* Effect.sleep("1 millis")
          })
        ),
        Stream.runDrain
      )
      assert.strictEqual(consumed, 64 * 1024 * 1024)
      assert.strictEqual(produced, 64 * 1024 * 1024)
      expect(checksum).toBeGreaterThan(0)
      // Windows are 1 MiB each way: a few of them in flight, never the whole transfer.
      expect(maxAhead).toBeLessThan(8 * 1024 * 1024)
      // The resident set (after a collection) grows by far less than the 64 MiB moved each way.
      expect(peak).toBeLessThan(64 * 1024 * 1024)
    }), 60_000)

  it.live("interrupting the consumer of a streamed call interrupts the streaming handler (finalizer observed)", () =>
    Effect.gen(function*() {
      const { server, client } = yield* serverAndClient
      const started = yield* Deferred.make<void>()
      const finalized = yield* Deferred.make<number>()
      yield* server.handleStream("/ticks", () =>
        Stream.fromEffect(Deferred.succeed(started, undefined)).pipe(
          Stream.flatMap(() => Stream.fromEffect(Effect.never)),
          Stream.ensuring(Effect.suspend(() => Deferred.succeed(finalized, performance.now())))
        )
      )
      const consumer = yield* Effect.forkChild(client.stream("/ticks", Stream.make(new Uint8Array([1]))).pipe(Stream.runDrain))
      yield* awaitBounded(started, "the handler to start")
      const interruptedAt = performance.now()
      yield* Fiber.interrupt(consumer)
      const finalizedAt = yield* awaitBounded(finalized, "the handler's finalizer")
      expect(finalizedAt - interruptedAt).toBeLessThan(CANCEL_PROPAGATES_MS)
    })
  )

  it.live("through the load-balance client a streamed answer streams, and interrupting its consumer interrupts the handler", () =>
    Effect.gen(function*() {
      const { server } = yield* serverAndClient
      const port = server.address.port
      const firstRead = yield* Deferred.make<void>()
      const finalized = yield* Deferred.make<number>()
      // Its second chunk waits for the consumer to have the first; then it hangs until interrupted.
      yield* server.handleStream("/held", () =>
        Stream.concat(
          Stream.make(new Uint8Array([1])),
          Stream.fromEffect(Deferred.await(firstRead)).pipe(Stream.flatMap(() => Stream.concat(Stream.make(new Uint8Array([2])), Stream.never)))
        ).pipe(Stream.ensuring(Effect.suspend(() => Deferred.succeed(finalized, performance.now()))))
      )
      const balancer = Context.get(
        yield* Layer.build(IipLoadBalancer.layer({ backends: `127.0.0.1:${port}#1`, requestTimeoutMs: 0, client: { log: () => {} } })),
        IipLoadBalancer
      )
      const second = yield* Deferred.make<void>()
      const consumer = yield* Effect.forkChild(
        balancer.stream("/held").pipe(
          Stream.runForEach((chunk) => (chunk[0] === 1 ? Deferred.succeed(firstRead, undefined) : Deferred.succeed(second, undefined)))
        )
      )
      yield* awaitBounded(second, "the second chunk")
      const interruptedAt = performance.now()
      yield* Fiber.interrupt(consumer)
      const finalizedAt = yield* awaitBounded(finalized, "the handler's finalizer")
      expect(finalizedAt - interruptedAt).toBeLessThan(CANCEL_PROPAGATES_MS)
    })
  )
})

describe("handlers as supervised fibers", () => {
  it.live("interrupting the caller's fiber interrupts the handler's fiber promptly, finalizer run", () =>
    Effect.gen(function*() {
      const { server, client } = yield* serverAndClient
      const started = yield* Deferred.make<void>()
      const finalized = yield* Deferred.make<number>()
      yield* server.handle("/slow", () =>
        Deferred.succeed(started, undefined).pipe(
          Effect.andThen(Effect.never),
          Effect.ensuring(Effect.suspend(() => Deferred.succeed(finalized, performance.now())))
        )
      )
      const caller = yield* Effect.forkChild(client.request("/slow"))
      yield* awaitBounded(started, "the handler to start")
      const interruptedAt = performance.now()
      yield* Fiber.interrupt(caller)
      const finalizedAt = yield* awaitBounded(finalized, "the handler's finalizer")
      expect(finalizedAt - interruptedAt).toBeLessThan(CANCEL_PROPAGATES_MS)
    })
  )

  it.effect("a deadline interrupts the handler at the deadline on the TestClock", () =>
    Effect.gen(function*() {
      const { server, client } = yield* serverAndClient
      const started = yield* Deferred.make<void>()
      const finalized = yield* Deferred.make<void>()
      yield* server.handle("/slow", () =>
        Deferred.succeed(started, undefined).pipe(Effect.andThen(Effect.never), Effect.ensuring(Deferred.succeed(finalized, undefined)))
      )
      const caller = yield* Effect.forkChild(client.request("/slow", undefined, { deadline: "10 seconds" }))
      yield* Effect.promise(() => Effect.runPromise(Deferred.await(started)))
      yield* TestClock.adjust("9 seconds")
      assert.isFalse(yield* Deferred.isDone(finalized))
      yield* TestClock.adjust("1 second")
      yield* Effect.promise(() => Effect.runPromise(Deferred.await(finalized)))
      const exit = yield* Effect.promise(() => Effect.runPromise(Fiber.await(caller)))
      assert.isTrue(Exit.isFailure(exit))
      const error = Exit.isFailure(exit) ? exit.cause.reasons.find((r) => r._tag === "Fail") : undefined
      assert.instanceOf(error?._tag === "Fail" ? error.error : undefined, RemoteError)
      assert.strictEqual((error as { error: RemoteError }).error.code, "deadline_exceeded")
      // The server's drain ticks on the TestClock: leave it no connection to wait for.
      client.core.close()
      yield* Effect.promise(() => waitUntil(() => server.core.connectionCount === 0))
    })
  )

  it.live("closing the connection interrupts all its handler fibers and runs their finalizers", () =>
    Effect.gen(function*() {
      const { server, client } = yield* serverAndClient
      const starts = [yield* Deferred.make<void>(), yield* Deferred.make<void>(), yield* Deferred.make<void>()]
      let running = 0
      const allFinalized = yield* Deferred.make<void>()
      let finalized = 0
      yield* server.handle("/hold", () =>
        Effect.suspend(() => Deferred.succeed(starts[running++]!, undefined)).pipe(
          Effect.andThen(Effect.never),
          Effect.ensuring(Effect.suspend(() => (++finalized === 3 ? Deferred.succeed(allFinalized, undefined) : Effect.void)))
        )
      )
      // One at a time: a request sent while the others hold their channels goes to a fresh one
      // (the client keeps an idle channel ahead) rather than queueing behind them on a busy one.
      const callers: Array<Fiber.Fiber<Exit.Exit<Buffer, unknown>>> = []
      for (const started of starts) {
        callers.push(yield* Effect.forkChild(Effect.exit(client.request("/hold"))))
        yield* awaitBounded(started, "a handler to start")
      }
      client.core.close()
      yield* awaitBounded(allFinalized, "three finalizers")
      assert.strictEqual(finalized, 3)
      for (const caller of callers) assert.isTrue(Exit.isFailure(yield* Fiber.join(caller)))
    })
  )

  it.live("closing the server's layer interrupts the handlers still running after the drain", () =>
    Effect.gen(function*() {
      const scope = yield* Scope.make()
      const server = Context.get(yield* Layer.buildWithScope(IipServer.layer({ host: "127.0.0.1", port: 0, drainTimeoutMs: 20, ...quiet }), scope), IipServer)
      const client = Context.get(yield* Layer.build(IipClient.layer({ host: "127.0.0.1", port: server.address.port, requestTimeoutMs: 0, ...quiet })), IipClient)
      const started = yield* Deferred.make<void>()
      const finalized = yield* Deferred.make<void>()
      yield* server.handle("/hold", () =>
        Deferred.succeed(started, undefined).pipe(Effect.andThen(Effect.never), Effect.ensuring(Deferred.succeed(finalized, undefined)))
      )
      const caller = yield* Effect.forkChild(Effect.exit(client.request("/hold")))
      yield* awaitBounded(started, "the handler to start")
      yield* Scope.close(scope, Exit.void)
      yield* awaitBounded(finalized, "the handler's finalizer")
      assert.isTrue(Exit.isFailure(yield* Fiber.join(caller)))
    })
  )

  it.live("a defect gives the caller a typed error, its cause is logged, and the server keeps serving", () =>
    Effect.gen(function*() {
      const logged: Array<string> = []
      const collect = Logger.make((options) => void logged.push(`${String(options.message)} ${options.cause.reasons.length}`))
      const { server, client } = yield* serverAndClient
      yield* server.handle("/crash", () => Effect.die(new Error("boom"))).pipe(Effect.provide(Logger.layer([collect])))
      yield* server.handle("/ok", () => Effect.succeed("fine"))
      const failed = yield* Effect.flip(client.request("/crash"))
      assert.instanceOf(failed, RemoteError)
      const remote = failed as RemoteError
      assert.strictEqual(remote.code, "handler_failed")
      expect(remote.message).toContain("boom")
      expect(logged.some((line) => line.includes("iip handler defect") && !line.endsWith(" 0"))).toBe(true)
      assert.strictEqual((yield* client.request("/ok")).toString(), "fine")
    })
  )
})

describe("calls and pushes from the server", () => {
  it.live("the server's call runs the client's Effect handler; its pushes arrive as a Stream", () =>
    Effect.gen(function*() {
      const { server, client } = yield* serverAndClient
      server.core.handle("/ping", () => "pong")
      yield* client.handle("/whoami", (request) => Effect.succeed(`client, asked by ${request.data.toString()}`))
      const pushes = yield* Effect.forkChild(client.pushes("/notify").pipe(Stream.take(2), Stream.map((r) => r.data.toString()), Stream.runCollect))
      assert.strictEqual((yield* client.request("/ping")).toString(), "pong")
      yield* Effect.promise(() => waitUntil(() => server.core.meshSessions.size === 1 && client.core.router.lookup("/notify") !== undefined))
      const session = [...server.core.meshSessions][0]!
      const answer = yield* Effect.callback<string, unknown>((resume) =>
        session.call(session.openChannel(), "/whoami", Buffer.from("server"), { timeoutMs: 5000 }, (error, reply) =>
          resume(error === undefined ? Effect.succeed(reply!.data.toString()) : Effect.fail(error))
        )
      )
      assert.strictEqual(answer, "client, asked by server")
      const channel = session.openChannel()
      session.push(channel, "/notify", Buffer.from("n1"))
      session.push(channel, "/notify", Buffer.from("n2"))
      assert.deepStrictEqual(yield* Fiber.join(pushes), ["n1", "n2"])
    })
  )
})

