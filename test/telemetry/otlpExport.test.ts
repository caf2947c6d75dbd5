// OTLP export as the OTEL_* variables configure it (src/telemetry/tracing.ts, otelEnv.ts), against
// a real OTLP/HTTP receiver on loopback: spans arrive at /v1/traces with their service.name and
// resource attributes and correct parent/child links, over http/json and http/protobuf; two
// sidecars in one process export one trace under two service names; the traces endpoint and the
// headers variables are honoured; a refused export is reported, never thrown; the gRPC exporter
// loads. Synchronised on forceFlush and on the receiver's requests.
import { SpanKind, trace } from "@opentelemetry/api"
import * as Effect from "effect/Effect"
import * as http from "node:http"
import type { AddressInfo } from "node:net"
import { afterEach, describe, expect, it } from "vitest"
import { extractContext, injectContext } from "../../src/telemetry/propagation.ts"
import { TraceStore } from "../../src/telemetry/traceStore.ts"
import { makeTracing, withOtelParent } from "../../src/telemetry/tracing.ts"
import { Cleanup, waitFor, withTimeout } from "../support/iipRaw.ts"
import { type OtlpReceiver, spansOf, startOtlpReceiver } from "../support/otlpReceiver.ts"

describe("OTLP export", () => {
  const cleanup = new Cleanup()
  afterEach(() => cleanup.run())

  const receiver = async (status?: number): Promise<OtlpReceiver> => {
    const started = await startOtlpReceiver(status === undefined ? {} : { status })
    cleanup.add(() => started.close())
    return started
  }

  const tracingFor = (service: string, env: Record<string, string>, instanceId?: string) => {
    const tracing = makeTracing({ service, store: new TraceStore(), env, ...(instanceId === undefined ? {} : { instanceId }) })
    cleanup.add(() => tracing.shutdown())
    return tracing
  }

  it("http/json: a server span, its client child and an Effect span reach /v1/traces with service.name and parents", async () => {
    const otlp = await receiver()
    const tracing = tracingFor("catalog", {
      OTEL_EXPORTER_OTLP_ENDPOINT: otlp.url,
      OTEL_EXPORTER_OTLP_PROTOCOL: "http/json",
      OTEL_RESOURCE_ATTRIBUTES: "deployment.environment.name=test,service.name=ignored"
    }, "catalog-1")
    expect(tracing.exporters).toStrictEqual([{ kind: "otlp", protocol: "http/json", url: `${otlp.url}/v1/traces` }])

    const server = tracing.tracer.startSpan("GET /items", { kind: SpanKind.SERVER })
    const serverContext = trace.setSpan(extractContext({}), server)
    const client = tracing.tracer.startSpan("GET pricing", { kind: SpanKind.CLIENT, attributes: { "http.request.method": "GET" } }, serverContext)
    client.end()
    await Effect.runPromise(Effect.void.pipe(Effect.withSpan("lookup"), withOtelParent(serverContext), Effect.provide(tracing.layer)))
    server.end()
    await tracing.forceFlush()

    const request = await withTimeout(otlp.next(), 5000, "the export")
    expect(request.path).toBe("/v1/traces")
    expect(request.contentType).toMatch(/^application\/json/)
    const spans = spansOf(request.body)
    const byName = new Map(spans.map((span) => [span.name, span]))
    expect([...byName.keys()].sort()).toStrictEqual(["GET /items", "GET pricing", "lookup"])
    const root = byName.get("GET /items")!
    expect(root.traceId).toBe(server.spanContext().traceId)
    expect(root.parentSpanId).toBe("")
    expect(root.kind).toBe(2) // SPAN_KIND_SERVER in OTLP numbering
    for (const child of ["GET pricing", "lookup"]) {
      expect(byName.get(child)!.traceId).toBe(root.traceId)
      expect(byName.get(child)!.parentSpanId).toBe(root.spanId)
    }
    expect(byName.get("GET pricing")!.attributes["http.request.method"]).toBe("GET")
    for (const span of spans) {
      expect(span.service).toBe("catalog")
      expect(span.resource["service.instance.id"]).toBe("catalog-1")
      expect(span.resource["deployment.environment.name"]).toBe("test")
      expect(span.resource["telemetry.sdk.language"]).toBe("nodejs")
    }
  })

  it("http/protobuf (the default protocol) posts protobuf to /v1/traces", async () => {
    const otlp = await receiver()
    const tracing = tracingFor("pricing", { OTEL_EXPORTER_OTLP_ENDPOINT: `${otlp.url}/` })
    expect(tracing.exporters).toStrictEqual([{ kind: "otlp", protocol: "http/protobuf", url: `${otlp.url}/v1/traces` }])
    const span = tracing.tracer.startSpan("protobuf-span")
    span.end()
    await tracing.forceFlush()

    const request = await withTimeout(otlp.next(), 5000, "the export")
    expect(request.path).toBe("/v1/traces")
    expect(request.contentType).toBe("application/x-protobuf")
    // Protobuf carries strings as they are and ids as raw bytes.
    expect(request.body.includes(Buffer.from("protobuf-span"))).toBe(true)
    expect(request.body.includes(Buffer.from("pricing"))).toBe(true)
    expect(request.body.includes(Buffer.from(span.spanContext().traceId, "hex"))).toBe(true)
    expect(request.body.includes(Buffer.from(span.spanContext().spanId, "hex"))).toBe(true)
  })

  it("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT is used as it is, and the headers variables are sent", async () => {
    const otlp = await receiver()
    const tracing = tracingFor("catalog", {
      OTEL_EXPORTER_OTLP_ENDPOINT: "http://127.0.0.1:9/not-this-one",
      OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: `${otlp.url}/custom/traces`,
      OTEL_EXPORTER_OTLP_TRACES_PROTOCOL: "http/json",
      OTEL_EXPORTER_OTLP_PROTOCOL: "grpc",
      OTEL_EXPORTER_OTLP_HEADERS: "authorization=Bearer%20general,x-tenant=a",
      OTEL_EXPORTER_OTLP_TRACES_HEADERS: "x-tenant=b"
    })
    tracing.tracer.startSpan("custom").end()
    await tracing.forceFlush()
    const request = await withTimeout(otlp.next(), 5000, "the export")
    expect(request.path).toBe("/custom/traces")
    expect(request.headers["authorization"]).toBe("Bearer general")
    expect(request.headers["x-tenant"]).toBe("b")
    expect(spansOf(request.body).map((span) => span.name)).toStrictEqual(["custom"])
  })

  it("a refused export goes to onExportError; forceFlush and shutdown still resolve", async () => {
    const otlp = await receiver(400)
    const errors: Array<Error> = []
    const tracing = makeTracing({ service: "catalog", store: new TraceStore(), env: { OTEL_EXPORTER_OTLP_ENDPOINT: otlp.url }, onExportError: (error) => errors.push(error) })
    tracing.tracer.startSpan("refused").end()
    await tracing.forceFlush()
    expect((await withTimeout(otlp.next(), 5000, "the export")).path).toBe("/v1/traces")
    expect(errors).toHaveLength(1)
    expect(errors[0]).toMatchObject({ code: 400, message: "Bad Request" })
    tracing.tracer.startSpan("refused too").end()
    await tracing.shutdown()
    expect(errors).toHaveLength(2)
  })

  it("a collector that never answers: the exporter holds at most 2048 spans not answered for, the rest are counted as dropped", async () => {
    // Takes each export and never answers it (the sockets close with the server).
    const held: Array<http.ServerResponse> = []
    const silent = http.createServer((req, res) => {
      req.resume()
      held.push(res)
    })
    await new Promise<void>((resolve) => silent.listen(0, "127.0.0.1", resolve))
    cleanup.add(() => new Promise<void>((resolve) => silent.close(() => resolve())))
    cleanup.add(() => silent.closeAllConnections())
    const tracing = makeTracing({
      service: "catalog",
      store: new TraceStore(),
      env: { OTEL_EXPORTER_OTLP_ENDPOINT: `http://127.0.0.1:${(silent.address() as AddressInfo).port}`, OTEL_EXPORTER_OTLP_TIMEOUT: "600000" }
    })
    const spans = tracing.spans!
    for (let i = 0; i < 3000; i++) spans.end(spans.start("GET catalog", SpanKind.SERVER, undefined))
    expect(tracing.droppedSpans).toStrictEqual({ queueFull: 3000 - 2048, exportFailed: 0 })
    // Still held after the batches went out: the collector has not answered for them.
    await waitFor(() => held.length > 0, 5000, "an export")
    spans.end(spans.start("GET catalog", SpanKind.SERVER, undefined))
    expect(tracing.droppedSpans.queueFull).toBe(3000 - 2048 + 1)
  })

  it("a collector that answers 200 and trickles its body for ever: each batch is given up at the export timeout, counted once, and shutdown still ends", async () => {
    // A byte of body every 10 ms keeps the socket's idle timeout (the exporter's only timer) from firing.
    const trickles: Array<NodeJS.Timeout> = []
    const answers: Array<http.ServerResponse> = []
    const trickling = http.createServer((req, res) => {
      req.resume()
      res.writeHead(200, { "content-type": "application/x-protobuf" })
      trickles.push(setInterval(() => res.write("\n"), 10))
      answers.push(res)
    })
    await new Promise<void>((resolve) => trickling.listen(0, "127.0.0.1", resolve))
    cleanup.add(() => new Promise<void>((resolve) => trickling.close(() => resolve())))
    cleanup.add(() => trickling.closeAllConnections())
    cleanup.add(() => trickles.forEach(clearInterval))
    const errors: Array<Error> = []
    const tracing = makeTracing({
      service: "catalog",
      store: new TraceStore(),
      env: { OTEL_EXPORTER_OTLP_ENDPOINT: `http://127.0.0.1:${(trickling.address() as AddressInfo).port}`, OTEL_EXPORTER_OTLP_TIMEOUT: "200" },
      onExportError: (error) => errors.push(error)
    })
    const spans = tracing.spans!
    for (let i = 0; i < 2048; i++) spans.end(spans.start("GET catalog", SpanKind.SERVER, undefined))
    // Before: the first batch was never answered, so its 512 spans (and the next three batches,
    // 30 s apart) stayed held for ever and every later span was dropped as queue_full.
    await waitFor(() => tracing.droppedSpans.exportFailed === 2048, 3000, "the four batches given up")
    expect(errors.length).toBe(4)
    spans.end(spans.start("GET catalog", SpanKind.SERVER, undefined))
    await withTimeout(tracing.forceFlush(), 1500, "forceFlush with the collector trickling")
    expect(tracing.droppedSpans).toStrictEqual({ queueFull: 0, exportFailed: 2049 })
    // Nothing left to flush: shutdown waited for the five unanswered requests (for ever, before); now up to the timeout.
    await withTimeout(tracing.shutdown(), 1500, "shutdown with the collector trickling")
    expect(tracing.droppedSpans).toStrictEqual({ queueFull: 0, exportFailed: 2049 })
    // The exchanges themselves were cut at the same timeout (exportDeadline.ts; before, they trickled
    // on for ever, each holding one of the exporter's 30 export slots): their late ends count nothing.
    await waitFor(() => answers.every((answer) => answer.closed), 3000, "the trickled answers closed by the exporter")
    expect(answers.length).toBe(5)
    expect(tracing.droppedSpans).toStrictEqual({ queueFull: 0, exportFailed: 2049 })
    expect(errors.length).toBe(5)
  })

  it("an export timeout past what a timer holds (2^31-1 ms) still lets a batch be answered", async () => {
    const otlp = await receiver()
    const errors: Array<Error> = []
    const tracing = makeTracing({ service: "catalog", store: new TraceStore(), env: { OTEL_EXPORTER_OTLP_ENDPOINT: otlp.url, OTEL_EXPORTER_OTLP_TIMEOUT: "3000000000" }, onExportError: (error) => errors.push(error) })
    cleanup.add(() => tracing.shutdown())
    tracing.tracer.startSpan("answered").end()
    await tracing.forceFlush()
    expect((await withTimeout(otlp.next(), 5000, "the export")).path).toBe("/v1/traces")
    expect(errors).toStrictEqual([])
    expect(tracing.droppedSpans).toStrictEqual({ queueFull: 0, exportFailed: 0 })
  })

  it("grpc: the exporter package is there, so the exporter starts and stops cleanly", async () => {
    const tracing = tracingFor("catalog", { OTEL_EXPORTER_OTLP_ENDPOINT: "http://127.0.0.1:9", OTEL_EXPORTER_OTLP_PROTOCOL: "grpc" })
    expect(tracing.exporters).toStrictEqual([{ kind: "otlp", protocol: "grpc", url: "http://127.0.0.1:9" }])
    expect(tracing.warnings).toStrictEqual([])
  })

  it("two sidecars in one process export one trace under their own service names", async () => {
    const otlp = await receiver()
    const env = { OTEL_EXPORTER_OTLP_ENDPOINT: otlp.url, OTEL_EXPORTER_OTLP_PROTOCOL: "http/json" }
    const storefront = tracingFor("storefront", env)
    const catalog = tracingFor("catalog", env)

    // storefront's client span, carried in header pairs (as across IIP) to catalog's server span
    const client = storefront.tracer.startSpan("GET catalog", { kind: SpanKind.CLIENT })
    const pairs: Array<[string, string]> = [["accept", "*/*"]]
    injectContext(trace.setSpan(extractContext({}), client), pairs)
    const server = catalog.tracer.startSpan("GET /items", { kind: SpanKind.SERVER }, extractContext(pairs))
    server.end()
    client.end()
    await Promise.all([storefront.forceFlush(), catalog.forceFlush()])

    const spans = [...spansOf((await withTimeout(otlp.next(), 5000, "an export")).body), ...spansOf((await withTimeout(otlp.next(), 5000, "another export")).body)]
    const clientSpan = spans.find((span) => span.name === "GET catalog")!
    const serverSpan = spans.find((span) => span.name === "GET /items")!
    expect(clientSpan.service).toBe("storefront")
    expect(serverSpan.service).toBe("catalog")
    expect(serverSpan.traceId).toBe(clientSpan.traceId)
    expect(serverSpan.parentSpanId).toBe(clientSpan.spanId)
  })
})
