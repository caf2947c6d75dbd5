// One sidecar's tracing: an OpenTelemetry tracer provider of its own (several sidecars in one
// process each keep their service name), fed to the embedded trace store and, when the OTEL_*
// variables ask for it, to an OTLP exporter; plus the Effect layer that makes Effect.withSpan
// create spans through the same provider. The sidecar starts its client, server and app spans
// as compact records through `spans` (spanRecord.ts; the same sampler, store and exporters) and
// carries their context with propagation.ts; `tracer` is the SDK's, for Effect and other code.
//
//   const tracing = makeTracing({ service: "catalog", store, instanceId: node })
//   const span = tracing.tracer.startSpan("GET catalog", { kind: SpanKind.CLIENT }, parentContext)
//   program.pipe(withOtelParent(trace.setSpan(parentContext, span)), Effect.provide(tracing.layer))
//   await tracing.shutdown()                         // flushes the exporter, then stops it
//
// Which variables mean what, and which wins, is in otelEnv.ts. Nothing is registered globally: no
// global tracer provider, propagator or context manager, so contexts are passed explicitly:
// startSpan's third argument; `withOtelParent(context)` to run Effect code under an OTel span; and
// `trace.setSpan(ROOT_CONTEXT, yield* OtelTracer.currentOtelSpan)` for the other way, a plain span
// under the current Effect span. Exporters are loaded only when configured (the OTLP packages
// cost about 100 ms to load), and the SDK itself only when an exporter, `tracer` or `layer` needs
// it (otelSdk.ts): a sidecar that exports nothing keeps its spans as records and never loads it. OTLP export goes through a BatchSpanProcessor
// held to 2048 spans the collector has not answered for (BoundedExport; what it drops is counted in
// `droppedSpans`; this SDK version reads no OTEL_BSP_* variable); the SDK reads the span limits, the
// OTLP TLS files and (for gRPC) the OTLP headers from process.env itself, whatever `env` says. A
// failed export goes to `onExportError`; forceFlush and shutdown
// never reject, but with the collector down they wait out the export timeout (10 s by default).
//
// Times: the SDK starts a span at Date.now() (whole ms) and measures its duration on the monotonic
// clock; Effect spans are timed the same way. So spans nest in time, except that a child's end may
// pass its parent's by less than 1 ms (a waterfall should clamp it).
//
// `enabled: false` (or OTEL_SDK_DISABLED=true) gives a no-op: `tracer` makes non-recording spans
// that carry their parent's context (so a traceparent from the app still reaches the next hop
// unchanged), `layer` turns Effect's tracer off, and nothing is stored or exported.
import { type Context, isSpanContextValid, ProxyTracerProvider, trace, TraceFlags, type Tracer } from "@opentelemetry/api"
import type { ExportResult } from "@opentelemetry/core"
import type { CompressionAlgorithm } from "@opentelemetry/otlp-exporter-base"
import type { Resource } from "@opentelemetry/resources"
import type { BasicTracerProvider, ReadableSpan, Sampler, Span, SpanExporter, SpanProcessor } from "@opentelemetry/sdk-trace-base"
import * as Effect from "effect/Effect"
import { dual } from "effect/Function"
import * as Layer from "effect/Layer"
import * as References from "effect/References"
import * as EffectTracer from "effect/Tracer"
import { createRequire } from "node:module"
import { MAX_TIMER_MS } from "../mux/deadlines.ts"
import { messageOf } from "../iip/log.ts"
import { loggable, redactUrl } from "../iip/redact.ts"
import {
  type Env,
  type ExporterSettings,
  type OtlpProtocol,
  type OtlpSettings,
  readTracingSettings,
  type SamplerSettings,
  type TelemetryWarning
} from "./otelEnv.ts"
import { deadlineAgents } from "./exportDeadline.ts"
import { effectOtelTracer, otelCore, otelResources, otelSdkTraceBase } from "./otelSdk.ts"
import { SpanRecorder } from "./spanRecord.ts"
import type { Origin, TraceStore } from "./traceStore.ts"

export interface TracingOptions {
  /** The service this sidecar fronts: service.name unless OTEL_SERVICE_NAME is set. */
  readonly service: string
  /** Where finished spans are kept for the admin server; several sidecars may share one. */
  readonly store: TraceStore
  /** The OTEL_* variables. Default process.env. */
  readonly env?: Env
  /** Default: on unless OTEL_SDK_DISABLED=true. False makes tracing a no-op. */
  readonly enabled?: boolean
  /** service.instance.id, for example the sidecar's node name. */
  readonly instanceId?: string
  /** Told of every failed export (the collector down, or refusing); by default they are dropped. */
  readonly onExportError?: (error: Error) => void
}

/** Spans an OTLP exporter did not deliver, by why; running totals (shown at /metrics). */
export interface DroppedSpans {
  /** Ended while the exporter held EXPORT_QUEUE spans the collector had not answered for (a slow or silent collector). */
  queueFull: number
  /** In a batch the collector refused, or did not take within the export timeout. */
  exportFailed: number
}

/** An exporter as /config may show it (headers left out: they may hold credentials). */
/** Where spans go, as shown (`/config`): an OTLP URL's credentials are `***` (iip/redact.ts). */
export type ExporterDescription =
  | { readonly kind: "otlp"; readonly protocol: OtlpProtocol; readonly url: string }
  | { readonly kind: "console" }

export interface Tracing {
  readonly enabled: boolean
  /** The service.name its spans carry. */
  readonly serviceName: string
  /** Starts spans through the SDK (Effect's, and other code's off the request path); a no-op tracer when disabled. */
  readonly tracer: Tracer
  /** The request path's spans, as compact records (spanRecord.ts); undefined when disabled. */
  readonly spans: SpanRecorder | undefined
  readonly exporters: ReadonlyArray<ExporterDescription>
  /** OTEL_* values that could not be used (their defaults were). */
  readonly warnings: ReadonlyArray<TelemetryWarning>
  /** Spans the OTLP exporters dropped so far (all zero without one). */
  readonly droppedSpans: Readonly<DroppedSpans>
  /** Installs Effect's tracer over this provider (or turns Effect tracing off when disabled). */
  readonly layer: Layer.Layer<never>
  /**
   * Exports every span ended so far; resolves when the exporters have answered, whatever the answer
   * (failures go to `onExportError`). With the collector down that takes up to the export timeout
   * (OTEL_EXPORTER_OTLP_TIMEOUT, 10 s by default): race it when a stop must be quicker.
   */
  forceFlush(): Promise<void>
  /** Flushes, then stops the exporters; never rejects, like forceFlush. The trace store is left as it is. */
  shutdown(): Promise<void>
}

const instrumentationName = "iip-mesh"

export const makeTracing = (options: TracingOptions): Tracing => {
  const settings = readTracingSettings({
    service: options.service,
    env: options.env ?? process.env,
    ...(options.enabled === undefined ? {} : { enabled: options.enabled }),
    ...(options.instanceId === undefined ? {} : { instanceId: options.instanceId })
  })
  if (!settings.enabled) {
    return {
      enabled: false,
      serviceName: settings.serviceName,
      tracer: new ProxyTracerProvider().getTracer(instrumentationName),
      spans: undefined,
      exporters: [],
      warnings: settings.warnings,
      droppedSpans: { queueFull: 0, exportFailed: 0 },
      layer: Layer.succeed(References.TracerEnabled, false),
      forceFlush: () => Promise.resolve(),
      shutdown: () => Promise.resolve()
    }
  }

  const warnings = [...settings.warnings]
  const droppedSpans: DroppedSpans = { queueFull: 0, exportFailed: 0 }
  const exporting: Array<SpanProcessor> = []
  const exporters: Array<ExporterDescription> = []
  for (const exporter of settings.exporters) {
    try {
      exporting.push(processorOf(exporter, options.onExportError ?? ignore, droppedSpans))
      // The description is what /config shows: the URL without its credentials.
      exporters.push(exporter.kind === "otlp" ? { kind: "otlp", protocol: exporter.protocol, url: redactUrl(exporter.url) } : exporter)
    } catch (error) {
      warnings.push({ variable: "OTEL_TRACES_EXPORTER", message: `${exporter.kind} exporter not started: ${loggable(redactUrl(messageOf(error)))}` })
    }
  }

  // The SDK (otelSdk.ts) is loaded only when something needs it: an exporter (it takes the SDK's
  // spans, and the provider flushes and stops it), or the first use of `tracer` or `layer`. The
  // request path's records need none of it.
  const resourceAttributes = settings.resourceAttributes
  let resource: Resource | undefined
  const resourceNow = (): Resource => {
    const { defaultResource, resourceFromAttributes } = otelResources()
    return (resource ??= defaultResource().merge(resourceFromAttributes(resourceAttributes)))
  }
  let provider: BasicTracerProvider | undefined
  // The provider shuts the exporting processors down (and flushes them), for its spans and the records'.
  const providerNow = (): BasicTracerProvider =>
    (provider ??= new (otelSdkTraceBase().BasicTracerProvider)({
      resource: resourceNow(),
      sampler: samplerOf(settings.sampler),
      spanProcessors: [options.store.spanProcessor(), ...exporting]
    }))
  if (exporting.length > 0) providerNow()
  let tracer: Tracer | undefined
  const tracerNow = (): Tracer => (tracer ??= providerNow().getTracer(instrumentationName))
  const spans = new SpanRecorder({
    sampler: settings.sampler,
    store: options.store,
    origin: originOfAttributes(resourceAttributes),
    exporters: exporting,
    resource: resourceNow,
    scope: { name: instrumentationName }
  })
  return {
    enabled: true,
    serviceName: settings.serviceName,
    get tracer() {
      return tracerNow()
    },
    spans,
    exporters,
    warnings,
    droppedSpans,
    layer: Layer.suspend(() => effectTracer(tracerNow())),
    forceFlush: () => provider === undefined ? Promise.resolve() : provider.forceFlush().catch(ignore),
    shutdown: () => provider === undefined ? Promise.resolve() : provider.shutdown().catch(ignore)
  }
}

/** service.name and service.instance.id as the store shows them (the resource's, which these attributes make). */
const originOfAttributes = (attributes: Readonly<Record<string, string>>): Origin => ({
  service: attributes["service.name"] ?? "unknown_service",
  instance: attributes["service.instance.id"] ?? null
})

/** Export failures reach `onExportError` through BoundedExport; the rejections that repeat them are dropped. */
const ignore = (): void => {}

/**
 * Runs an effect as a child of the span in an OpenTelemetry context (from `extractContext`, or
 * `trace.setSpan(context, span)`): its Effect spans join that trace. Without a valid span the
 * effect runs as it is.
 */
export const withOtelParent: {
  (context: Context): <A, E, R>(self: Effect.Effect<A, E, R>) => Effect.Effect<A, E, R>
  <A, E, R>(self: Effect.Effect<A, E, R>, context: Context): Effect.Effect<A, E, R>
} = dual(2, <A, E, R>(self: Effect.Effect<A, E, R>, context: Context): Effect.Effect<A, E, R> => {
  const parent = trace.getSpanContext(context)
  return parent === undefined || !isSpanContextValid(parent) ? self : effectOtelTracer().withSpanContext(self, parent)
})

/**
 * Effect's tracer, making its spans with `tracer`. Two changes to OtelTracer.make's:
 * - it also runs every Effect step under a span inside Otel.context.with(...), so that a global
 *   context manager would see Effect spans as active; with none installed that does nothing but
 *   cost (about 0.3 µs a step, and a span three times as dear), so only its span factory is kept;
 * - Effect stamps spans with its own clock, which runs up to about 1 ms apart from the SDK's (the
 *   SDK starts a span at Date.now(), in whole ms, and measures the rest on the monotonic clock), so
 *   in one waterfall an Effect child could start before its SDK parent. Effect spans are timed the
 *   SDK's way instead.
 */
const effectTracer = (tracer: Tracer): Layer.Layer<never> => {
  const OtelTracer: typeof import("@effect/opentelemetry/OtelTracer") = effectOtelTracer()
  return Layer.effect(
    EffectTracer.Tracer,
    Effect.map(OtelTracer.make, (otel) =>
      EffectTracer.make({
        span: (options) => {
          const startMs = Date.now()
          const startMonotonic = performance.now()
          const now = () => BigInt(startMs) * 1_000_000n + BigInt(Math.round((performance.now() - startMonotonic) * 1e6))
          const span = otel.span({ ...options, startTime: BigInt(startMs) * 1_000_000n })
          const end = span.end
          const event = span.event
          span.end = (_endTime, exit) => end.call(span, now(), exit)
          span.event = (name, _startTime, attributes) => event.call(span, name, now(), attributes)
          return span
        }
      }))
  ).pipe(Layer.provide(Layer.succeed(OtelTracer.OtelTracer, tracer)))
}

const samplerOf = (settings: SamplerSettings): Sampler => {
  const { AlwaysOffSampler, AlwaysOnSampler, ParentBasedSampler, TraceIdRatioBasedSampler } = otelSdkTraceBase()
  switch (settings.name) {
    case "always_on":
      return new AlwaysOnSampler()
    case "always_off":
      return new AlwaysOffSampler()
    case "traceidratio":
      return new TraceIdRatioBasedSampler(settings.ratio)
    case "parentbased_always_on":
      return new ParentBasedSampler({ root: new AlwaysOnSampler() })
    case "parentbased_always_off":
      return new ParentBasedSampler({ root: new AlwaysOffSampler() })
    case "parentbased_traceidratio":
      return new ParentBasedSampler({ root: new TraceIdRatioBasedSampler(settings.ratio) })
  }
}

const processorOf = (settings: ExporterSettings, onError: (error: Error) => void, dropped: DroppedSpans): SpanProcessor => {
  const { ConsoleSpanExporter, SimpleSpanProcessor } = otelSdkTraceBase()
  if (settings.kind === "console") return new SimpleSpanProcessor(new ConsoleSpanExporter())
  const timeoutMillis = Math.min(settings.timeoutMillis ?? OTLP_TIMEOUT, MAX_TIMER_MS)
  return new BoundedExport(otlpExporter(settings, timeoutMillis), timeoutMillis, onError, dropped)
}

/** Spans an OTLP exporter holds at most, queued or in batches the collector has not answered for yet. */
const EXPORT_QUEUE = 2048

/** The OTLP exporters' own export timeout when OTEL_EXPORTER_OTLP_TIMEOUT sets none (ms); a longer one than a timer holds is cut to MAX_TIMER_MS, as Node cuts the exporter's socket timeout. */
const OTLP_TIMEOUT = 10_000

/**
 * The SDK's batch processor, bounded by what the collector has not answered for rather than by its
 * queue alone, and counting what it drops. The batch processor drops past its queue without a
 * trace (a diag message nobody hears), and past its own export timeout (30 s) it starts the next
 * batch while the last is still in flight, so a collector that never answers (with a long
 * OTEL_EXPORTER_OTLP_TIMEOUT) would pile up batches. Here a span is held from its end until its
 * batch is answered or its export timeout passes; past EXPORT_QUEUE held, new spans are dropped and
 * counted (queueFull), and each failed batch is reported to `onError` and counted (exportFailed).
 * The exporter's own timeout is a socket idle timeout: a collector that answers 200 and trickles
 * its body never lets it fire, so without this deadline a batch would be held for ever (and, four
 * such batches, every later span dropped). Its late answer is ignored: a batch counts once. The
 * exporter's shutdown waits for such requests too, so it is given up at the same timeout.
 */
class BoundedExport implements SpanProcessor {
  private held = 0
  private readonly batches: SpanProcessor
  private readonly dropped: DroppedSpans

  constructor(exporter: SpanExporter, timeoutMillis: number, onError: (error: Error) => void, dropped: DroppedSpans) {
    const { BatchSpanProcessor } = otelSdkTraceBase()
    const { ExportResultCode } = otelCore()
    this.dropped = dropped
    const answered: SpanExporter = {
      export: (spans, done) => {
        let timer: NodeJS.Timeout | undefined
        const answer = (result: ExportResult) => {
          if (timer === undefined) return
          clearTimeout(timer)
          timer = undefined
          this.held -= spans.length
          if (result.code !== ExportResultCode.SUCCESS) {
            dropped.exportFailed += spans.length
            onError(result.error ?? new Error(`span export failed (${spans.length} spans)`))
          }
          done(result)
        }
        timer = setTimeout(() => answer({ code: ExportResultCode.FAILED, error: new Error(`span export not answered within ${timeoutMillis} ms (${spans.length} spans)`) }), timeoutMillis)
        timer.unref()
        exporter.export(spans, answer)
      },
      shutdown: () => withinMillis(exporter.shutdown(), timeoutMillis),
      forceFlush: () => exporter.forceFlush?.() ?? Promise.resolve()
    }
    this.batches = new BatchSpanProcessor(answered, { maxQueueSize: EXPORT_QUEUE })
  }

  onStart(span: Span, context: Context): void {
    this.batches.onStart(span, context)
  }

  onEnd(span: ReadableSpan): void {
    // The batch processor takes sampled spans only: the others are no one's to hold.
    if ((span.spanContext().traceFlags & TraceFlags.SAMPLED) === 0) return
    if (this.held >= EXPORT_QUEUE) {
      this.dropped.queueFull++
      return
    }
    this.held++
    this.batches.onEnd(span)
  }

  forceFlush(): Promise<void> {
    return this.batches.forceFlush()
  }

  shutdown(): Promise<void> {
    return this.batches.shutdown()
  }
}

/** `promise`, or its end given up after `ms` (the exporter's shutdown waiting on a collector that never finishes answering). */
const withinMillis = (promise: Promise<void>, ms: number): Promise<void> => {
  let timer: NodeJS.Timeout | undefined
  const givenUp = new Promise<void>((resolve) => {
    timer = setTimeout(resolve, ms)
    timer.unref()
  })
  return Promise.race([promise, givenUp]).finally(() => clearTimeout(timer))
}

/** Loads the exporter package for the protocol only now, so a sidecar that exports nothing never loads one. */
const load = createRequire(import.meta.url)

/**
 * The exporter `settings` describe. Over HTTP its agent holds each exchange to `deadlineMs`
 * (exportDeadline.ts: the exporter's timeout is only a socket idle timeout); gRPC calls carry a
 * deadline of the same timeout already (otlp-grpc-exporter-base).
 */
const otlpExporter = (settings: OtlpSettings, deadlineMs: number): SpanExporter => {
  const common = {
    url: settings.url,
    ...(settings.timeoutMillis === undefined ? {} : { timeoutMillis: settings.timeoutMillis }),
    ...(settings.compression === undefined ? {} : { compression: settings.compression as CompressionAlgorithm })
  }
  switch (settings.protocol) {
    case "http/protobuf": {
      const { OTLPTraceExporter } = load("@opentelemetry/exporter-trace-otlp-proto") as typeof import("@opentelemetry/exporter-trace-otlp-proto")
      return new OTLPTraceExporter({ ...common, headers: { ...settings.headers }, httpAgentOptions: deadlineAgents(deadlineMs) })
    }
    case "http/json": {
      const { OTLPTraceExporter } = load("@opentelemetry/exporter-trace-otlp-http") as typeof import("@opentelemetry/exporter-trace-otlp-http")
      return new OTLPTraceExporter({ ...common, headers: { ...settings.headers }, httpAgentOptions: deadlineAgents(deadlineMs) })
    }
    case "grpc": {
      const { OTLPTraceExporter } = load("@opentelemetry/exporter-trace-otlp-grpc") as typeof import("@opentelemetry/exporter-trace-otlp-grpc")
      return new OTLPTraceExporter(common)
    }
  }
}
