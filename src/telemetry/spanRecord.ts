// The sidecar's own spans on the request path (client, server and app spans, observe.ts), as
// compact records rather than OpenTelemetry SDK spans: the sampling decision comes first, ids come
// from a pool of random bytes, attributes are one plain object, and no Context is built. An ended
// record goes to the trace store as it is (it has the fields the store keeps), and becomes an
// OpenTelemetry ReadableSpan only when an exporter is configured (OTEL_* variables, tracing.ts);
// the SDK is loaded (otelSdk.ts) only then, or for a ratio sampler.
//
//   const span = recorder.start("GET catalog", SpanKind.CLIENT, parent)   // parent: a TraceParent, a record, or none
//   if (span.sampled) span.attributes["url.path"] = "/items"
//   headers.push(["traceparent", span.traceparent()])
//   recorder.end(span)                                                       // exactly once
//
// A sampled span is *recording* only when something will read it: an exporter is configured, or
// the trace store will keep its trace (traceStore.ts `wouldKeep`, asked at the start: the store
// keeps at most --trace-store-rate new traces a second, so at saturation nearly every trace is
// only passed on). A span that is not recording still has its trace id, sampled flag and span id
// (drawn when first read), for the traceparent the next hop gets and the access log's trace id,
// but no attributes (a shared frozen object: a write throws), no parent id, no clock readings and
// no trip to the store (issue 14: the work a traced sidecar did per request for spans nobody kept).
// Its children in this process inherit the choice.
//
// Times: like the SDK, a span starts at Date.now() (whole ms) and its duration is measured on the
// monotonic clock.
import { type Attributes, ROOT_CONTEXT, type SpanKind, type SpanStatusCode, TraceFlags } from "@opentelemetry/api"
import type { Resource } from "@opentelemetry/resources"
import type { ReadableSpan, SpanProcessor } from "@opentelemetry/sdk-trace-base"
import { randomFillSync } from "node:crypto"
import type { SamplerSettings } from "./otelEnv.ts"
import { otelCore, otelSdkTraceBase } from "./otelSdk.ts"
import { formatTraceparent, type TraceParent } from "./propagation.ts"
import type { Origin, StoredSpan, TraceStore } from "./traceStore.ts"
import { ShapeAnchor } from "../mux/shapeAnchor.ts"

/** Random bytes for ids, refilled a page at a time. */
const idBytes = Buffer.allocUnsafe(4096)
let idOffset = idBytes.length

/** Lower-case hex digits by value. */
const HEX = new Uint8Array(16)
for (let i = 0; i < 16; i++) HEX[i] = "0123456789abcdef".charCodeAt(i)

/**
 * 8 bytes of `idBytes` from `at` as 16 hex digits: one flat string from its character codes, a
 * few times quicker than Buffer's toString("hex") (a call into C++ per id, four ids a request
 * between the two sidecars).
 */
const hex8 = (at: number): string => {
  const b = idBytes
  return String.fromCharCode(
    HEX[b[at]! >> 4]!, HEX[b[at]! & 15]!, HEX[b[at + 1]! >> 4]!, HEX[b[at + 1]! & 15]!,
    HEX[b[at + 2]! >> 4]!, HEX[b[at + 2]! & 15]!, HEX[b[at + 3]! >> 4]!, HEX[b[at + 3]! & 15]!,
    HEX[b[at + 4]! >> 4]!, HEX[b[at + 4]! & 15]!, HEX[b[at + 5]! >> 4]!, HEX[b[at + 5]! & 15]!,
    HEX[b[at + 6]! >> 4]!, HEX[b[at + 6]! & 15]!, HEX[b[at + 7]! >> 4]!, HEX[b[at + 7]! & 15]!
  )
}

/** A span id (8 bytes) or trace id (16) of random bytes as lower-case hex, never all zeros (an invalid id). */
const randomId = (bytes: 8 | 16): string => {
  for (;;) {
    if (idOffset + bytes > idBytes.length) {
      randomFillSync(idBytes)
      idOffset = 0
    }
    const at = idOffset
    idOffset += bytes
    let zero = true
    for (let i = at; i < at + bytes; i++) if (idBytes[i] !== 0) zero = false
    if (!zero) return bytes === 8 ? hex8(at) : hex8(at) + hex8(at + 8)
  }
}

const noEvents: StoredSpan["events"] = []
/** The attributes of every span that is not recording: nothing may be written to them. */
const notRecorded: Attributes = Object.freeze({})

/** Keeps the hidden class of SpanRecord alive while idle (shapeAnchor.ts). */
const spanShape = new ShapeAnchor<SpanRecord>()

/**
 * The newest recorded span of each kind, for the hidden classes of its attributes (shapeAnchor.ts):
 * only a sample of spans records (the store keeps ~100 traces a second) and the store packs each
 * into bytes, so no attribute object outlives its request and a full collection while idle cleared
 * the maps the code filling them was optimized for (at B: InboundObservation's constructor, callApp).
 */
const recordedShapes = [new ShapeAnchor<SpanRecord>(), new ShapeAnchor<SpanRecord>(), new ShapeAnchor<SpanRecord>(), new ShapeAnchor<SpanRecord>(), new ShapeAnchor<SpanRecord>()]

/** One span of the request path. Mutable until it ends; the store keeps it as it is. */
export class SpanRecord implements StoredSpan, TraceParent {
  readonly traceId: string
  /** spanId's value, "" until drawn. */
  private id: string
  /** The parent's span id; null for a root, and for a span that does not record (nobody reads it). */
  readonly parentSpanId: string | null
  /** The parent came from another process (a traceparent header). */
  readonly parentRemote: boolean
  readonly sampled: boolean
  /** Sampled, and read by someone (the store or an exporter): attributes, status and times are kept. */
  readonly recording: boolean
  /** Passed on from the parent (normalized), for the next hop and the exporter. */
  readonly traceState: string | undefined
  readonly name: string
  readonly kind: SpanKind
  readonly origin: Origin
  readonly start: number
  durationMs = 0
  statusCode: SpanStatusCode = 0
  statusMessage: string | undefined = undefined
  /** Filled by the caller only when `recording` (otherwise frozen: nothing reads it). */
  readonly attributes: Attributes
  readonly events = noEvents
  /** The store counts this span as under way (TraceStore.opened), until it ends. */
  underWay = false
  private readonly startMonotonic: number

  constructor(
    traceId: string,
    parentSpanId: string | null,
    parentRemote: boolean,
    sampled: boolean,
    recording: boolean,
    traceState: string | undefined,
    name: string,
    kind: SpanKind,
    origin: Origin
  ) {
    spanShape.newest = this
    this.traceId = traceId
    this.id = recording ? randomId(8) : ""
    this.parentSpanId = parentSpanId
    this.parentRemote = parentRemote
    this.sampled = sampled
    this.recording = recording
    this.traceState = traceState
    this.name = name
    this.kind = kind
    this.origin = origin
    this.start = recording ? Date.now() : 0
    this.startMonotonic = recording ? performance.now() : 0
    this.attributes = recording ? {} : notRecorded
  }

  /**
   * Drawn when first read: a span that records nothing and is passed on to no one never needs one
   * (sidecar B's server span at saturation, nearly every one: its child, the app span, goes to the
   * app; issue 14). A child that does not record keeps no parent id either (start).
   */
  get spanId(): string {
    if (this.id === "") this.id = randomId(8)
    return this.id
  }

  /** This span as the next hop's parent: a W3C traceparent. */
  traceparent(): string {
    return formatTraceparent(this.traceId, this.spanId, this.sampled)
  }

  /** Called by the recorder's `end`. */
  stop(): void {
    this.durationMs = performance.now() - this.startMonotonic
  }
}

export interface RecorderOptions {
  readonly sampler: SamplerSettings
  readonly store: TraceStore
  /** service.name and service.instance.id, as the store shows them. */
  readonly origin: Origin
  /** Exporting processors (OTLP, console), fed ReadableSpans; none: nothing is converted. */
  readonly exporters: ReadonlyArray<SpanProcessor>
  /** The exported spans' resource, asked for only when there are exporters. */
  readonly resource: () => Resource
  readonly scope: { readonly name: string }
}

/** Starts and ends SpanRecords under one sampler; ended sampled ones go to the store and the exporters. */
export class SpanRecorder {
  private readonly options: RecorderOptions
  /** Decides a root span (and, for the non-parent-based samplers, every span). */
  private readonly root: (traceId: string) => boolean
  private readonly parentBased: boolean

  constructor(options: RecorderOptions) {
    this.options = options
    const { name, ratio } = options.sampler
    this.parentBased = name.startsWith("parentbased_")
    const rootName = this.parentBased ? name.slice("parentbased_".length) : name
    if (rootName === "traceidratio") {
      const { SamplingDecision, TraceIdRatioBasedSampler } = otelSdkTraceBase()
      const ratioSampler = new TraceIdRatioBasedSampler(ratio)
      this.root = (traceId) => ratioSampler.shouldSample(ROOT_CONTEXT, traceId).decision === SamplingDecision.RECORD_AND_SAMPLED
    } else {
      const always = rootName === "always_on"
      this.root = () => always
    }
  }

  /**
   * A span under `parent`: another process's (a traceparent header, with the tracestate it came
   * with) or one of this recorder's records (whose tracestate it inherits); none: a new trace's root.
   * `at`: now (performance.now()), if the caller has read it: the store's budget needs the time.
   */
  start(name: string, kind: SpanKind, parent: TraceParent | undefined, remoteTraceState?: string, at?: number): SpanRecord {
    const local = parent instanceof SpanRecord
    const traceId = parent?.traceId ?? randomId(16)
    // The decision comes before anything else is made (the parent-based samplers follow the parent's flag).
    const sampled = parent !== undefined && this.parentBased ? parent.sampled : this.root(traceId)
    const traceState = local ? parent.traceState : parent === undefined ? undefined : remoteTraceState
    // Recorded only for a reader: a child as its local parent is, else when exported or the store would keep the trace.
    const store = this.options.store
    const byStore = sampled && !local && this.options.exporters.length === 0
    const recording = sampled && (local ? parent.recording : !byStore || store.wouldKeep(traceId, parent === undefined, at))
    // A parent's id only for a span that keeps it (reading a record's draws it: SpanRecord.spanId).
    const parentSpanId = recording && parent !== undefined ? parent.spanId : null
    const span = new SpanRecord(traceId, parentSpanId, parent !== undefined && !local, sampled, recording, traceState, name, kind, this.options.origin)
    if (byStore && recording) {
      span.underWay = true
      store.opened(traceId)
    }
    return span
  }

  /** Ends a span (exactly once): a recording one is stored, and exported when an exporter is configured. */
  end(span: SpanRecord): void {
    if (!span.recording) return
    span.stop()
    const anchor = recordedShapes[span.kind]
    if (anchor !== undefined) anchor.newest = span
    this.options.store.record(span.traceId, span)
    if (span.underWay) this.options.store.closed(span.traceId)
    const exporters = this.options.exporters
    if (exporters.length === 0) return
    const readable = toReadableSpan(span, this.options.resource(), this.options.scope)
    for (const exporter of exporters) exporter.onEnd(readable)
  }
}

const hrTime = (ms: number): [number, number] => {
  const seconds = Math.floor(ms / 1000)
  return [seconds, Math.round((ms - seconds * 1000) * 1e6)]
}

/** What an exporter takes: the record as the SDK would have ended it. */
const toReadableSpan = (span: SpanRecord, resource: Resource, scope: { readonly name: string }): ReadableSpan => {
  const traceState = span.traceState === undefined ? undefined : new (otelCore().TraceState)(span.traceState)
  const context = { traceId: span.traceId, spanId: span.spanId, traceFlags: TraceFlags.SAMPLED, ...(traceState === undefined ? {} : { traceState }) }
  return {
    name: span.name,
    kind: span.kind,
    spanContext: () => context,
    ...(span.parentSpanId === null
      ? {}
      : { parentSpanContext: { traceId: span.traceId, spanId: span.parentSpanId, traceFlags: TraceFlags.SAMPLED, isRemote: span.parentRemote } }),
    startTime: hrTime(span.start),
    endTime: hrTime(span.start + span.durationMs),
    duration: hrTime(span.durationMs),
    status: span.statusMessage === undefined ? { code: span.statusCode } : { code: span.statusCode, message: span.statusMessage },
    attributes: span.attributes,
    links: [],
    events: [],
    ended: true,
    resource,
    instrumentationScope: scope,
    droppedAttributesCount: 0,
    droppedEventsCount: 0,
    droppedLinksCount: 0
  }
}

