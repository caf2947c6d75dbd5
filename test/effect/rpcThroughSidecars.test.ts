// Effect RPC across two real sidecars, as issue 18 asks: an RpcGroup client calls an RpcGroup
// server with app -> sidecar A ("store") -> IIP -> sidecar B ("catalog") -> app between them. The
// sidecars carry HTTP, so the RPCs use effect/rpc's HTTP protocol (NDJSON): the client posts to
// A's outbound listener with Host "catalog" (node:http client, which lets the Host be set), and B
// forwards to an Effect HttpServer serving RpcServer.layerHttp. Both sidecars export their spans
// to a real OTLP/HTTP receiver on loopback; the test synchronises on their forceFlush.
// Checked: unary, streaming and failing RPCs (the typed error decodes to its Schema class);
// interrupting the caller interrupts the server's handler (its finalizer observed) through both
// sidecars; the caller's span, both sidecars' spans and the server's RPC span are one trace (A's
// client span under the caller's HTTP request, B's server span under A's, B's app span under that,
// the server's HTTP request span under B's app span and the RPC's span under that one: effect/rpc's
// HTTP protocol does not carry the RPC's own span, so the server continues the HTTP trace, which
// needs HttpMiddleware.tracer on the server; without it the RPC span starts a trace of its own).
import { NodeHttpClient, NodeHttpServer } from "@effect/platform-node"
import { assert, describe, expect, it } from "@effect/vitest"
import { Context, Deferred, Effect, Fiber, Layer, Schema, Stream } from "effect"
import { HttpClient, HttpClientRequest, HttpMiddleware, HttpRouter, HttpServer } from "effect/http"
import { Rpc, RpcClient, RpcGroup, RpcSerialization, RpcServer } from "effect/rpc"
import * as http from "node:http"
import { Cleanup } from "../support/iipRaw.ts"
import { spansOf, startOtlpReceiver } from "../support/otlpReceiver.ts"
import { LOOPBACK, quietLog, sidecarConfig, startSidecar } from "../support/sidecarHarness.ts"

class NotFound extends Schema.TaggedError<NotFound>()("NotFound", { id: Schema.String }) {}

class MeshRpcs extends RpcGroup.make(
  Rpc.make("Echo", { payload: { text: Schema.String }, success: Schema.String }),
  Rpc.make("Count", { payload: { n: Schema.Int }, success: Schema.Int, stream: true }),
  Rpc.make("Find", { payload: { id: Schema.String }, success: Schema.String, error: NotFound }),
  Rpc.make("Hang", { success: Schema.Void }),
  Rpc.make("Trace", {
    success: Schema.Struct({
      traceId: Schema.String,
      parent: Schema.String,
      /** The parent of the span's parent (the HTTP request's span). */
      grandparent: Schema.String
    })
  })
) {}

interface Probes {
  readonly hangStarted: Deferred.Deferred<void>
  readonly hangFinalized: Deferred.Deferred<void>
}

const handlers = (probes: Probes) =>
  MeshRpcs.toLayer({
    Echo: ({ text }) => Effect.succeed(text),
    Count: ({ n }) => Stream.range(1, n),
    Find: ({ id }) => (id === "known" ? Effect.succeed("found") : Effect.fail(new NotFound({ id }))),
    Hang: () =>
      Deferred.succeed(probes.hangStarted, undefined).pipe(
        Effect.andThen(Effect.never),
        Effect.ensuring(Deferred.succeed(probes.hangFinalized, undefined))
      ),
    Trace: () =>
      Effect.gen(function*() {
        const span = yield* Effect.currentSpan
        const parent = span.parent._tag === "Some" ? span.parent.value : undefined
        const grandparent = parent?._tag === "Span" && parent.parent._tag === "Some" ? parent.parent.value.spanId : ""
        return { traceId: span.traceId, parent: parent?.spanId ?? "", grandparent }
      }).pipe(Effect.orDie)
  })

/** The RPC server app (HTTP on 127.0.0.1:0) in the current scope: its port. */
const startRpcApp = (probes: Probes) =>
  Effect.gen(function*() {
    const app = HttpRouter.serve(RpcServer.layerHttp({ group: MeshRpcs, path: "/rpc", protocol: "http" }).pipe(Layer.provide([handlers(probes), RpcSerialization.layerNdjson])), {
      disableLogger: true,
      disableListenLog: true,
      // The HTTP request's span, continuing the traceparent sidecar B sends.
      middleware: HttpMiddleware.tracer
    }).pipe(Layer.provideMerge(NodeHttpServer.layer(http.createServer, { host: LOOPBACK, port: 0 })))
    const address = Context.get(yield* Layer.build(app), HttpServer.HttpServer).address
    return "port" in address ? address.port : 0
  })

/** far RPC app <- B ("catalog") <- A ("store") <- an RpcClient posting to A as "catalog". */
const setUp = (cleanup: Cleanup, otlpUrl: string, probes: Probes) =>
  Effect.gen(function*() {
    const env = { OTEL_EXPORTER_OTLP_ENDPOINT: otlpUrl, OTEL_EXPORTER_OTLP_PROTOCOL: "http/json" }
    const appPort = yield* startRpcApp(probes)
    const b = yield* Effect.promise(() => startSidecar(cleanup, sidecarConfig({ service: "catalog", app: `${LOOPBACK}:${appPort}`, tracing: true }), quietLog, { env }))
    const a = yield* Effect.promise(() =>
      startSidecar(cleanup, sidecarConfig({ service: "store", endpoints: { catalog: [{ address: b.inboundAddress, weight: 1 }] }, tracing: true }), quietLog, { env })
    )
    const viaSidecar = Layer.effect(
      HttpClient.HttpClient,
      Effect.map(HttpClient.HttpClient, HttpClient.mapRequest(HttpClientRequest.setHeader("host", "catalog")))
    ).pipe(Layer.provide(NodeHttpClient.layerNodeHttp))
    const protocol = yield* Layer.build(
      RpcClient.layerProtocolHttp({ url: `http://${LOOPBACK}:${a.outboundPort}/rpc` }).pipe(Layer.provide([viaSidecar, RpcSerialization.layerNdjson]))
    )
    const client = yield* RpcClient.make(MeshRpcs).pipe(Effect.provide(protocol))
    const flush = Effect.promise(() => Promise.all([a.sidecar.telemetry.tracing.forceFlush(), b.sidecar.telemetry.tracing.forceFlush()]))
    return { client, flush }
  })

const makeProbes = Effect.all({ hangStarted: Deferred.make<void>(), hangFinalized: Deferred.make<void>() })

/** OTLP numbering of span kinds. */
const SERVER = 2
const CLIENT = 3

describe("Effect RPC through two sidecars (HTTP protocol, NDJSON)", () => {
  it.live("unary, streaming and failing RPCs; typed errors decode; interruption reaches the server; one trace with the sidecars' spans", () => {
    const cleanup = new Cleanup()
    return Effect.gen(function*() {
      const otlp = yield* Effect.promise(() => startOtlpReceiver())
      cleanup.add(() => otlp.close())
      const probes = yield* makeProbes
      const { client, flush } = yield* setUp(cleanup, otlp.url, probes)

      assert.strictEqual(yield* client.Echo({ text: "hello" }), "hello")
      assert.deepStrictEqual(yield* Stream.runCollect(client.Count({ n: 5 })), [1, 2, 3, 4, 5])
      const error = yield* Effect.flip(client.Find({ id: "nope" }))
      assert.instanceOf(error, NotFound)
      assert.strictEqual((error as NotFound).id, "nope")

      const caller = yield* Effect.forkChild(client.Hang())
      yield* Deferred.await(probes.hangStarted).pipe(Effect.timeout("5 seconds"))
      yield* Fiber.interrupt(caller)
      yield* Deferred.await(probes.hangFinalized).pipe(Effect.timeout("5 seconds"))

      const [callerSpan, seen] = yield* Effect.all([Effect.currentSpan, client.Trace()]).pipe(Effect.withSpan("caller"))
      yield* flush
      const spans = otlp.requests.flatMap((request) => spansOf(request.body)).filter((span) => span.traceId === callerSpan.traceId)
      const described = spans.map((s) => `${s.service}/${s.kind}/${s.name}`).join(", ")
      const sidecarClient = spans.filter((s) => s.service === "store" && s.kind === CLIENT)
      const sidecarServer = spans.filter((s) => s.service === "catalog" && s.kind === SERVER)
      const sidecarApp = spans.filter((s) => s.service === "catalog" && s.kind === CLIENT)
      expect([sidecarClient.length, sidecarServer.length, sidecarApp.length], described).toStrictEqual([1, 1, 1])
      // The sidecars' chain: A's client span the parent of B's server span, that of B's app span.
      assert.strictEqual(sidecarServer[0]!.parentSpanId, sidecarClient[0]!.spanId)
      assert.strictEqual(sidecarApp[0]!.parentSpanId, sidecarServer[0]!.spanId)
      // A's span hangs under a span of the caller's process (the RPC's HTTP request), not a new root.
      expect(sidecarClient[0]!.parentSpanId).toMatch(/^[0-9a-f]{16}$/)
      // The server's RPC span: a child of its HTTP request's span (effect/rpc's HTTP protocol does not
      // carry the RPC's own span), which continues the caller's trace under B's app span.
      assert.strictEqual(seen.traceId, callerSpan.traceId)
      expect(seen.parent).toMatch(/^[0-9a-f]{16}$/)
      assert.strictEqual(seen.grandparent, sidecarApp[0]!.spanId)
    }).pipe(Effect.ensuring(Effect.promise(() => cleanup.run())))
  }, 30_000)
})
