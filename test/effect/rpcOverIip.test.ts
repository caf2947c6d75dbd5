// Effect RPC over IIP mesh mode (src/effect/rpc.ts): one RpcGroup with a unary, a streaming, a
// failing and a hanging RPC, served by RpcServer over an IipServer and called by RpcClient over
// an IipClient (real sockets on 127.0.0.1, port 0), with NDJSON, JSON, MessagePack (msgpack.ts)
// and Effect's SchemaBinary serializations.
// - Unary and streaming answers arrive whole and in order; a streaming RPC of 2,000 items too.
// - A typed error decodes to its Schema class (instanceof, fields), a Date field included.
// - Dates, bigints (past 2^64 too) and Uint8Arrays in payloads, answers and stream items round-trip.
// - Interrupting the caller interrupts the server's handler (its finalizer observed) promptly.
// - The server handler's span is in the caller's trace (same trace id, the caller's span its parent).
// - An RPC server stopped while its IIP server still serves answers an RPC with a defect at once
//   (the IIP answer is not left waiting).
// - Through the load-balance client (IipLoadBalancer, round robin over three servers, JSON and
//   MessagePack): calls spread evenly, fail over when a server is gone, typed errors decode; a
//   streaming RPC streams (its server sends the rest only once the caller has the first item);
//   interrupting the caller interrupts the handler at its backend.
import { assert, describe, expect, it } from "@effect/vitest"
import { Context, Deferred, Effect, Exit, Fiber, Layer, Schema, Scope, Stream } from "effect"
import { Rpc, RpcClient, RpcGroup, RpcSerialization, RpcServer } from "effect/rpc"
import { IipClient, IipLoadBalancer } from "../../src/effect/client.ts"
import { layerMsgPack } from "../../src/effect/msgpack.ts"
import { layerBalancedClientProtocol, layerClientProtocol, layerServerProtocol } from "../../src/effect/rpc.ts"
import { IipServer } from "../../src/effect/server.ts"
import { CANCEL_PROPAGATES_MS } from "../support/promptness.ts"

class NotFound extends Schema.TaggedError<NotFound>()("NotFound", { id: Schema.String }) {}
class Expired extends Schema.TaggedError<Expired>()("Expired", { at: Schema.Date, serial: Schema.BigInt }) {}

const Typed = Schema.Struct({ at: Schema.Date, serial: Schema.BigInt, bytes: Schema.Uint8Array })

class TestRpcs extends RpcGroup.make(
  Rpc.make("Echo", { payload: { text: Schema.String }, success: Schema.String }),
  Rpc.make("Count", { payload: { n: Schema.Int }, success: Schema.Int, stream: true }),
  Rpc.make("Find", { payload: { id: Schema.String }, success: Schema.String, error: NotFound }),
  Rpc.make("Hang", { success: Schema.Void }),
  Rpc.make("Trace", { success: Schema.Struct({ traceId: Schema.String, parent: Schema.String }) }),
  Rpc.make("Types", { payload: Typed.fields, success: Typed, error: Expired }),
  Rpc.make("Blobs", { payload: { n: Schema.Int }, success: Typed, stream: true })
) {}

/** The Types RPC: the payload back with its bytes reversed and its date a day on; a negative serial fails. */
const types = ({ at, serial, bytes }: typeof Typed.Type) =>
  serial < 0n
    ? Effect.fail(new Expired({ at, serial }))
    : Effect.succeed({ at: new Date(at.getTime() + 86_400_000), serial: serial * 2n, bytes: bytes.slice().reverse() })
const blobs = ({ n }: { readonly n: number }) =>
  Stream.range(1, n).pipe(Stream.map((i) => ({ at: new Date(i * 1000), serial: BigInt(i) << 70n, bytes: new Uint8Array(i).fill(i) })))

interface Probes {
  readonly hangStarted: Deferred.Deferred<void>
  readonly hangFinalized: Deferred.Deferred<number>
}

const handlers = (probes: Probes) =>
  TestRpcs.toLayer({
    Echo: ({ text }) => Effect.succeed(text),
    Count: ({ n }) => Stream.range(1, n),
    Find: ({ id }) => (id === "known" ? Effect.succeed("found") : Effect.fail(new NotFound({ id }))),
    Hang: () =>
      Deferred.succeed(probes.hangStarted, undefined).pipe(
        Effect.andThen(Effect.never),
        Effect.ensuring(Effect.suspend(() => Deferred.succeed(probes.hangFinalized, performance.now())))
      ),
    Trace: () =>
      Effect.gen(function*() {
        const span = yield* Effect.currentSpan
        const parent = span.parent._tag === "Some" ? span.parent.value.spanId : ""
        return { traceId: span.traceId, parent }
      }).pipe(Effect.orDie),
    Types: types,
    Blobs: blobs
  })

const quiet = { log: () => {} }

const serializations = [
  ["ndjson", RpcSerialization.layerNdjson],
  ["json", RpcSerialization.layerJson],
  ["msgpack", layerMsgPack],
  ["SchemaBinary", RpcSerialization.layerSchemaBinary()]
] as const

/** An RPC server on an IIP server and an RPC client over an IIP client to it, in the current scope. */
const setUp = (serialization: Layer.Layer<RpcSerialization.RpcSerialization>, probes: Probes) =>
  Effect.gen(function*() {
    const server = yield* Layer.build(IipServer.layer({ host: "127.0.0.1", port: 0, ...quiet }))
    const port = Context.get(server, IipServer).address.port
    yield* Layer.build(
      RpcServer.layer(TestRpcs).pipe(
        Layer.provide([handlers(probes), layerServerProtocol()]),
        Layer.provide([Layer.succeedContext(server), serialization])
      )
    )
    const clientContext = yield* Layer.build(
      layerClientProtocol().pipe(Layer.provide([IipClient.layer({ host: "127.0.0.1", port, requestTimeoutMs: 0, ...quiet }), serialization]))
    )
    return yield* RpcClient.make(TestRpcs).pipe(Effect.provide(clientContext))
  })

const makeProbes = Effect.all({ hangStarted: Deferred.make<void>(), hangFinalized: Deferred.make<number>() })

describe.each(serializations)("Effect RPC over IIP (%s)", (_name, serialization) => {
  it.live("unary, streaming and failing RPCs; typed errors decode to their Schema class", () =>
    Effect.gen(function*() {
      const client = yield* setUp(serialization, yield* makeProbes)
      assert.strictEqual(yield* client.Echo({ text: "hello" }), "hello")
      assert.deepStrictEqual(yield* Stream.runCollect(client.Count({ n: 5 })), [1, 2, 3, 4, 5])
      const many = yield* Stream.runCollect(client.Count({ n: 2000 }))
      assert.strictEqual(many.length, 2000)
      assert.strictEqual(many[1999], 2000)
      assert.strictEqual(yield* client.Find({ id: "known" }), "found")
      const error = yield* Effect.flip(client.Find({ id: "nope" }))
      assert.instanceOf(error, NotFound)
      assert.strictEqual((error as NotFound).id, "nope")
    })
  )

  it.live("Dates, bigints and Uint8Arrays round-trip in payloads, answers, stream items and typed errors", () =>
    Effect.gen(function*() {
      const client = yield* setUp(serialization, yield* makeProbes)
      const big = (1n << 80n) + 7n
      const answer = yield* client.Types({ at: new Date(Date.UTC(2026, 11, 4)), serial: big, bytes: new Uint8Array([0, 1, 255]) })
      assert.instanceOf(answer.at, Date)
      assert.strictEqual(answer.at.toISOString(), "2026-12-05T00:00:00.000Z")
      assert.strictEqual(answer.serial, big * 2n)
      assert.instanceOf(answer.bytes, Uint8Array)
      assert.deepStrictEqual([...answer.bytes], [255, 1, 0])
      const items = yield* Stream.runCollect(client.Blobs({ n: 3 }))
      assert.deepStrictEqual(items.map((item) => [item.at.getTime(), item.serial, [...item.bytes]]), [
        [1000, 1n << 70n, [1]],
        [2000, 2n << 70n, [2, 2]],
        [3000, 3n << 70n, [3, 3, 3]]
      ])
      const error = yield* Effect.flip(client.Types({ at: new Date(5), serial: -1n, bytes: new Uint8Array(0) }))
      assert.instanceOf(error, Expired)
      assert.instanceOf((error as Expired).at, Date)
      assert.strictEqual((error as Expired).at.getTime(), 5)
      assert.strictEqual((error as Expired).serial, -1n)
    })
  )

  it.live("interrupting the caller interrupts the server's handler promptly", () =>
    Effect.gen(function*() {
      const probes = yield* makeProbes
      const client = yield* setUp(serialization, probes)
      const caller = yield* Effect.forkChild(client.Hang())
      yield* Deferred.await(probes.hangStarted).pipe(Effect.timeout("5 seconds"))
      const interruptedAt = performance.now()
      yield* Fiber.interrupt(caller)
      const finalizedAt = yield* Deferred.await(probes.hangFinalized).pipe(Effect.timeout("5 seconds"))
      expect(finalizedAt - interruptedAt).toBeLessThan(CANCEL_PROPAGATES_MS)
    })
  )

  it.live("an undecodable request is answered at once and the next RPCs decode", () =>
    Effect.gen(function*() {
      const server = yield* Layer.build(IipServer.layer({ host: "127.0.0.1", port: 0, ...quiet }))
      const port = Context.get(server, IipServer).address.port
      yield* Layer.build(
        RpcServer.layer(TestRpcs).pipe(Layer.provide([handlers(yield* makeProbes), layerServerProtocol()]), Layer.provide([Layer.succeedContext(server), serialization]))
      )
      const iip = yield* Layer.build(IipClient.layer({ host: "127.0.0.1", port, requestTimeoutMs: 5000, ...quiet }))
      const garbage = Buffer.from("\x00\x00\x00\x05{bad\n", "latin1")
      const answer = yield* Context.get(iip, IipClient).request("/rpc", garbage)
      // A defect, or for SchemaBinary (which takes the bytes for an unfinished message) an empty answer.
      if (answer.length > 0) assert.strictEqual(answer.readUInt32BE(0), answer.length - 4)
      const protocol = yield* Layer.build(layerClientProtocol().pipe(Layer.provide([Layer.succeedContext(iip), serialization])))
      const client = yield* RpcClient.make(TestRpcs).pipe(Effect.provide(protocol))
      assert.deepStrictEqual(yield* Effect.forEach(["a", "b"], (text) => client.Echo({ text })), ["a", "b"])
    })
  )

  it.live("the server's span joins the caller's trace", () =>
    Effect.gen(function*() {
      const client = yield* setUp(serialization, yield* makeProbes)
      const [callerSpan, seen] = yield* Effect.all([Effect.currentSpan, client.Trace()]).pipe(Effect.withSpan("caller"))
      assert.strictEqual(seen.traceId, callerSpan.traceId)
      expect(seen.parent).not.toBe("")
    })
  )
})

describe("Effect RPC over IIP, an RPC answered at once", () => {
  // Each turn of the event loop between a request's arrival and its answer (a fiber woken by a
  // queue, a task the RpcClient schedules, a write held for the next turn) is latency at one call
  // in flight and CPU at many: an RPC whose handler answers at once is served within the read that
  // brought it, and its answer handed on within the read that brought that, on both sides.
  it.live("schedules no task on the event loop, one call at a time or 64 at once", () =>
    Effect.gen(function*() {
      const client = yield* setUp(RpcSerialization.layerNdjson, yield* makeProbes)
      assert.strictEqual(yield* client.Echo({ text: "warm" }), "warm")
      const real = globalThis.setImmediate
      let scheduled = 0
      const counting = ((...args: Parameters<typeof setImmediate>) => {
        scheduled++
        return real(...args)
      }) as typeof setImmediate
      const calls = 200
      const answers = yield* Effect.acquireUseRelease(
        Effect.sync(() => {
          globalThis.setImmediate = counting
        }),
        () =>
          Effect.gen(function*() {
            const one = yield* Effect.forEach(Array.from({ length: calls }, (_, i) => `one ${i}`), (text) => client.Echo({ text }))
            const many = yield* Effect.forEach(Array.from({ length: calls }, (_, i) => `many ${i}`), (text) => client.Echo({ text }), { concurrency: 64 })
            return [...one, ...many]
          }),
        () =>
          Effect.sync(() => {
            globalThis.setImmediate = real
          })
      )
      assert.deepStrictEqual(answers, [...Array.from({ length: calls }, (_, i) => `one ${i}`), ...Array.from({ length: calls }, (_, i) => `many ${i}`)])
      // Before: one task per RPC on the client, two or three per read on the server (over 400 here).
      expect(scheduled).toBeLessThan(calls / 10)
    }))
})

describe("Effect RPC over IIP, the RPC server stopped", () => {
  it.live("a request that reaches a stopped RPC server fails at once instead of waiting", () =>
    Effect.gen(function*() {
      const server = yield* Layer.build(IipServer.layer({ host: "127.0.0.1", port: 0, ...quiet }))
      const port = Context.get(server, IipServer).address.port
      const rpcScope = yield* Scope.make()
      yield* Layer.build(
        RpcServer.layer(TestRpcs).pipe(
          Layer.provide([handlers(yield* makeProbes), layerServerProtocol()]),
          Layer.provide([Layer.succeedContext(server), RpcSerialization.layerNdjson])
        )
      ).pipe(Scope.provide(rpcScope))
      const clientContext = yield* Layer.build(
        layerClientProtocol().pipe(Layer.provide([IipClient.layer({ host: "127.0.0.1", port, requestTimeoutMs: 0, ...quiet }), RpcSerialization.layerNdjson]))
      )
      const client = yield* RpcClient.make(TestRpcs).pipe(Effect.provide(clientContext))
      assert.strictEqual(yield* client.Echo({ text: "before" }), "before")
      yield* Scope.close(rpcScope, Exit.void)
      const exit = yield* client.Echo({ text: "after" }).pipe(Effect.timeout("2 seconds"), Effect.exit)
      assert.isTrue(Exit.isFailure(exit))
      expect(String(exit)).not.toContain("TimeoutError")
    })
  )
})

/** Three RPC servers, each on its own IIP server in a scope of its own, and an RpcClient over a round-robin balancer of them. */
const balancedSetUp = (serialization: Layer.Layer<RpcSerialization.RpcSerialization>) =>
  Effect.gen(function*() {
    const ports: Array<number> = []
    const scopes: Array<Scope.Closeable> = []
    const seen: Array<string> = []
    const firstSeen = yield* Deferred.make<void>()
    const probes = yield* makeProbes
    for (const name of ["a", "b", "c"]) {
      const scope = yield* Scope.make()
      yield* Effect.addFinalizer(() => Scope.close(scope, Exit.void))
      const server = yield* Layer.build(IipServer.layer({ host: "127.0.0.1", port: 0, ...quiet })).pipe(Scope.provide(scope))
      ports.push(Context.get(server, IipServer).address.port)
      scopes.push(scope)
      const named = TestRpcs.toLayer({
        Echo: ({ text }) => Effect.sync(() => void seen.push(name)).pipe(Effect.as(`${name}:${text}`)),
        // Its second item waits until the caller has the first: an answer delivered whole would never come.
        Count: ({ n }) => Stream.concat(Stream.make(1), Stream.fromEffect(Deferred.await(firstSeen)).pipe(Stream.flatMap(() => Stream.range(2, n)))),
        Find: ({ id }) => Effect.fail(new NotFound({ id })),
        Hang: () =>
          Deferred.succeed(probes.hangStarted, undefined).pipe(
            Effect.andThen(Effect.never),
            Effect.ensuring(Effect.suspend(() => Deferred.succeed(probes.hangFinalized, performance.now())))
          ),
        Trace: () => Effect.succeed({ traceId: "", parent: "" }),
        Types: types,
        Blobs: blobs
      })
      yield* Layer.build(
        RpcServer.layer(TestRpcs).pipe(Layer.provide([named, layerServerProtocol()]), Layer.provide([Layer.succeedContext(server), serialization]))
      ).pipe(Scope.provide(scope))
    }
    const protocol = yield* Layer.build(
      layerBalancedClientProtocol().pipe(
        Layer.provide([
          IipLoadBalancer.layer({ backends: ports.map((p) => `127.0.0.1:${p}#1`).join(","), method: "MethodRoundrobin", requestTimeoutMs: 10_000, client: quiet }),
          serialization
        ])
      )
    )
    const client = yield* RpcClient.make(TestRpcs).pipe(Effect.provide(protocol))
    return { client, scopes, seen, firstSeen, probes }
  })

describe.each([
  ["json", RpcSerialization.layerJson],
  ["msgpack", layerMsgPack]
] as const)("Effect RPC through the load-balance client (%s)", (_name, serialization) => {
  it.live("RPCs spread over three backends and fail over when one is gone; typed errors decode", () =>
    Effect.gen(function*() {
      const { client, scopes, seen } = yield* balancedSetUp(serialization)
      const answers = yield* Effect.forEach([1, 2, 3, 4, 5, 6], (i) => client.Echo({ text: String(i) }))
      expect(answers.map((a) => a.slice(2))).toStrictEqual(["1", "2", "3", "4", "5", "6"])
      expect([...seen].sort()).toStrictEqual(["a", "a", "b", "b", "c", "c"])
      const error = yield* Effect.flip(client.Find({ id: "x" }))
      assert.instanceOf(error, NotFound)
      // Backend c goes away: every call still succeeds, on a and b.
      yield* Scope.close(scopes[2]!, Exit.void)
      seen.length = 0
      const after = yield* Effect.forEach([1, 2, 3, 4, 5, 6], (i) => client.Echo({ text: String(i) }))
      expect(after.map((a) => a.slice(2))).toStrictEqual(["1", "2", "3", "4", "5", "6"])
      expect(new Set(seen)).toStrictEqual(new Set(["a", "b"]))
    })
  )

  it.live("a streaming RPC streams: its first item arrives before the server sends the rest", () =>
    Effect.gen(function*() {
      const { client, firstSeen } = yield* balancedSetUp(serialization)
      const items = yield* client.Count({ n: 500 }).pipe(
        Stream.tap((item) => (item === 1 ? Deferred.succeed(firstSeen, undefined) : Effect.void)),
        Stream.runCollect,
        Effect.timeout("5 seconds")
      )
      assert.strictEqual(items.length, 500)
      assert.strictEqual(items[499], 500)
      const typed = yield* Stream.runCollect(client.Blobs({ n: 2 }))
      assert.deepStrictEqual(typed.map((item) => item.serial), [1n << 70n, 2n << 70n])
    })
  )

  it.live("interrupting the caller interrupts the handler at the backend promptly", () =>
    Effect.gen(function*() {
      const { client, probes } = yield* balancedSetUp(serialization)
      const caller = yield* Effect.forkChild(client.Hang())
      yield* Deferred.await(probes.hangStarted).pipe(Effect.timeout("5 seconds"))
      const interruptedAt = performance.now()
      yield* Fiber.interrupt(caller)
      const finalizedAt = yield* Deferred.await(probes.hangFinalized).pipe(Effect.timeout("5 seconds"))
      expect(finalizedAt - interruptedAt).toBeLessThan(CANCEL_PROPAGATES_MS)
    })
  )
})
