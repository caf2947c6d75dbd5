// The embedded trace store: the last finished spans, kept in memory so the admin server can show
// recent traces with no collector running. It sits at the end of the span pipeline, beside the
// OTLP export: every sidecar's tracer provider (tracing.ts) adds `store.spanProcessor()`, and each
// span that ends and was sampled is copied here as a compact record. Several sidecars in one
// process may share one store (the demo does), so one admin URL shows traces across them; each
// span records the `service.name` (and `service.instance.id`) of the provider that made it.
//
// Bounds: at most `maxTraces` traces (default 1000) and `maxSpansPerTrace` spans in each (default
// 128). When a new trace arrives at the limit the oldest trace (the one the store saw first) is
// dropped; spans beyond a trace's limit are dropped and counted in `droppedSpans`. With
// `maxNewTracesPerSecond`, at most that many new traces a second are kept (spans of a trace kept
// still join it): under load the store holds a sample of the traffic instead of turning over its
// whole content many times a second, each kept span an object that outlives the young generation
// (issue 14: keeping every trace cost a sidecar at saturation ~1-2 µs a span in the store's Map
// and its ring, plus the garbage collection of what it let go).
//
//   const store = new TraceStore({ maxTraces: 500 })
//   makeTracing({ service: "catalog", store })          // feeds it
//   store.recent(20)    // newest first: TraceSummary[] (trace id, root span, services, counts, timing, error)
//   store.get(traceId)  // SpanJson[] ordered by start time, or undefined when the store holds none
//
// The request path's spans (spanRecord.ts) are kept packed: one line of JSON each (`pack`), its
// service and attribute names indexes into the store's few origins and names, written as UTF-8
// into a byte ring outside the JS heap (spanRing.ts, `maxBytes`, the oldest overwritten first).
// A kept span lives for seconds (1000 traces at 100 new a second turn over in 10 s): as heap
// strings and the objects holding them, a kept trace of a sidecar B promoted ~1.3 KB to old space,
// which at 1,000 req/s was most of what set off a traced sidecar's mark-compacts (issue 14). Per
// trace the heap now holds only its id (in the index Map and the order ring) and numbers in typed
// arrays preallocated per slot (a slot: a trace's place in the order ring). Packing costs a
// JSON.stringify per kept span (a few µs, at most `maxNewTracesPerSecond` traces a second). SDK
// spans (Effect's) are copied on end (a few fields and references to the span's own attribute and
// event objects), on the heap as before. Both are turned into JSON only when read.
import type { Attributes, AttributeValue, HrTime } from "@opentelemetry/api"
import { SpanKind, SpanStatusCode, TraceFlags } from "@opentelemetry/api"
import type { Resource } from "@opentelemetry/resources"
import type { ReadableSpan, SpanProcessor } from "@opentelemetry/sdk-trace-base"
import { monotonicMs } from "../mux/clock.ts"
import { SpanRing } from "./spanRing.ts"

export interface TraceStoreOptions {
  /** How many traces to keep; the oldest goes first. Default 1000. */
  readonly maxTraces?: number
  /** How many spans to keep per trace; later ones are counted, not kept. Default 128. */
  readonly maxSpansPerTrace?: number
  /** How many new traces to keep per second (a span of a trace not kept is dropped). Default: all. */
  readonly maxNewTracesPerSecond?: number
  /**
   * Bytes for the request path's packed spans, allocated once outside the JS heap; when full the
   * oldest trace goes (a trace of a sidecar B packs to ~750 bytes). Default 2 KiB per `maxTraces`.
   */
  readonly maxBytes?: number
  /**
   * Now in ms for the per-second budget (tests); default monotonicMs(): a wall clock step neither
   * renews the budget nor holds it back.
   */
  readonly now?: () => number
}

export type SpanKindName = "internal" | "server" | "client" | "producer" | "consumer"

export interface SpanEventJson {
  readonly name: string
  readonly timeUnixNano: string
  readonly timeMs: number
  readonly attributes: Readonly<Record<string, AttributeValue>>
}

/** One span as `get` returns it. Times are Unix epoch: exact nanoseconds as a string, and ms as a number. */
export interface SpanJson {
  readonly traceId: string
  readonly spanId: string
  /** null for a root span. The parent may live in another process (the app, or a remote sidecar). */
  readonly parentSpanId: string | null
  readonly name: string
  readonly kind: SpanKindName
  /** `service.name` of the provider that made the span. */
  readonly service: string
  /** `service.instance.id`, when the provider's resource has one. */
  readonly instance: string | null
  readonly startTimeUnixNano: string
  readonly startTimeMs: number
  readonly durationMs: number
  readonly status: { readonly code: "unset" | "ok" | "error"; readonly message?: string }
  readonly attributes: Readonly<Record<string, AttributeValue>>
  readonly events: ReadonlyArray<SpanEventJson>
}

export interface TraceSummary {
  readonly traceId: string
  /** Name and service of the root span: the earliest span whose parent is not in the store. */
  readonly rootName: string
  readonly rootService: string
  /** Every service with a span in the trace, sorted. */
  readonly services: ReadonlyArray<string>
  readonly spanCount: number
  /** Spans that ended after the trace reached `maxSpansPerTrace`. */
  readonly droppedSpans: number
  readonly startTimeMs: number
  /** From the earliest start to the latest end of the spans held. */
  readonly durationMs: number
  /** Whether any span ended with status error. */
  readonly error: boolean
}

/**
 * What the store keeps of a span: a SpanRecord as it is (spanRecord.ts: the request path's spans),
 * or for an SDK span (Effect's, through `spanProcessor`) its fields and references, no conversion.
 * `start` is epoch ms (a record's, from Date.now()) or the SDK's HrTime.
 */
export interface StoredSpan {
  readonly spanId: string
  readonly parentSpanId: string | null
  readonly name: string
  readonly kind: SpanKind
  readonly origin: Origin
  readonly start: number | HrTime
  readonly durationMs: number
  readonly statusCode: SpanStatusCode
  readonly statusMessage: string | undefined
  readonly attributes: Attributes
  readonly events: ReadableSpan["events"]
}

/** Which sidecar made a span: `service.name` and `service.instance.id` of its resource. */
export interface Origin {
  readonly service: string
  readonly instance: string | null
}

/** The origin of spans made under `resource`. */
export const originOf = (resource: Resource): Origin => {
  const attributes = resource.attributes
  const instance = attributes["service.instance.id"]
  return { service: String(attributes["service.name"] ?? "unknown_service"), instance: instance === undefined ? null : String(instance) }
}

const kindNames: Record<SpanKind, SpanKindName> = {
  [SpanKind.INTERNAL]: "internal",
  [SpanKind.SERVER]: "server",
  [SpanKind.CLIENT]: "client",
  [SpanKind.PRODUCER]: "producer",
  [SpanKind.CONSUMER]: "consumer"
}

const statusNames: Record<SpanStatusCode, "unset" | "ok" | "error"> = {
  [SpanStatusCode.UNSET]: "unset",
  [SpanStatusCode.OK]: "ok",
  [SpanStatusCode.ERROR]: "error"
}

const hrToMs = (time: HrTime): number => time[0] * 1e3 + time[1] / 1e6
const hrToNanoString = (time: HrTime): string => (BigInt(time[0]) * 1_000_000_000n + BigInt(time[1])).toString()
const startMs = (span: StoredSpan): number => (typeof span.start === "number" ? span.start : hrToMs(span.start))
const startNanoString = (span: StoredSpan): string =>
  typeof span.start === "number" ? (BigInt(Math.round(span.start * 1e3)) * 1000n).toString() : hrToNanoString(span.start)

/** Drops undefined values (allowed by the OTel `Attributes` type, meaningless in JSON). */
const attributesJson = (attributes: Attributes | undefined): Record<string, AttributeValue> => {
  const out: Record<string, AttributeValue> = {}
  if (attributes === undefined) return out
  for (const key in attributes) {
    const value = attributes[key]
    if (value !== undefined) out[key] = value
  }
  return out
}

/** Buckets of TraceStore's `known` count. */
const DIGEST_BITS = 14

/**
 * A trace id's bucket in TraceStore's `known` count: its last four characters (of a random hex id,
 * 16 bits of entropy) multiplied out (Fibonacci hashing) to DIGEST_BITS. Any string has one (past
 * its start charCodeAt reads NaN, taken as 0).
 */
const digestOf = (traceId: string): number => {
  const n = traceId.length
  const last = traceId.charCodeAt(n - 1) | (traceId.charCodeAt(n - 2) << 8) | (traceId.charCodeAt(n - 3) << 16) | (traceId.charCodeAt(n - 4) << 24)
  return Math.imul(last, 0x9e3779b1) >>> (32 - DIGEST_BITS)
}

export class TraceStore {
  readonly maxTraces: number
  readonly maxSpansPerTrace: number
  /** Trace id -> its slot. */
  private readonly slots = new Map<string, number>()
  /**
   * The ids in `slots` and `underWay`, counted by digestOf: a bucket at 0 holds neither, so
   * `wouldKeep` answers for a trace it has never seen (a remote parent's, nearly every request at a
   * traced sidecar B) without hashing that new 32-character id or looking in either map (issue 14:
   * those lookups were ~1.2 µs a request of B's profile at saturation, cache misses in two tables).
   */
  private readonly known = new Int32Array(1 << DIGEST_BITS)
  /** Per slot, a ring in the order the store first saw the traces: `next` is the oldest once all are used. */
  private readonly ids: Array<string | undefined> = []
  private next = 0
  /** Per slot: spans kept (packed and copied) and spans dropped past maxSpansPerTrace. */
  private readonly counts: Int32Array
  private readonly dropped: Int32Array
  /** Per slot, SDK spans (copied, rare on the request path). */
  private readonly copied: Array<Array<StoredSpan> | undefined> = []
  /** The request path's spans, packed, per slot. */
  private readonly ring: SpanRing
  /** service.name / service.instance.id per resource, read once (resource attributes are a getter). */
  private readonly origins = new WeakMap<Resource, Origin>()
  private readonly maxNewPerSecond: number
  private readonly now: () => number
  /** `now` is monotonicMs: a caller's performance.now() reading may stand for it (wouldKeep). */
  private readonly ownClock: boolean
  /** The second new traces are counted in, and how many were kept in it. */
  private second = -1
  private keptThisSecond = 0
  /** The trace of the last span recorded, and the last trace not kept: a request's spans end one after the other. */
  private lastId = ""
  private lastSlot = -1
  private notKeptId = ""

  constructor(options: TraceStoreOptions = {}) {
    this.maxTraces = Math.max(1, options.maxTraces ?? 1000)
    this.maxSpansPerTrace = Math.max(1, options.maxSpansPerTrace ?? 128)
    this.maxNewPerSecond = Math.max(0, options.maxNewTracesPerSecond ?? Infinity)
    this.now = options.now ?? monotonicMs
    this.ownClock = options.now === undefined
    this.counts = new Int32Array(this.maxTraces)
    this.dropped = new Int32Array(this.maxTraces)
    this.ring = new SpanRing(options.maxBytes ?? this.maxTraces * 2048, this.maxTraces, (slot) => this.evict(slot))
  }

  /**
   * A span processor that copies each sampled span into this store when it ends. Give every tracer
   * provider its own (a provider shuts its processors down with it; this one's shutdown leaves the
   * store as it is, so other sidecars sharing it go on).
   */
  spanProcessor(): SpanProcessor {
    return {
      onStart: () => {},
      onEnd: (span) => this.add(span),
      forceFlush: () => Promise.resolve(),
      shutdown: () => Promise.resolve()
    }
  }

  /** Records a finished SDK span; unsampled spans are ignored, as an exporter would. */
  private add(span: ReadableSpan): void {
    const context = span.spanContext()
    if ((context.traceFlags & TraceFlags.SAMPLED) === 0) return
    this.keep(context.traceId, {
      spanId: context.spanId,
      parentSpanId: span.parentSpanContext?.spanId ?? null,
      name: span.name,
      kind: span.kind,
      origin: this.originOf(span.resource),
      start: span.startTime,
      durationMs: hrToMs(span.duration),
      statusCode: span.status.code,
      statusMessage: span.status.message,
      attributes: span.attributes,
      events: span.events
    }, false)
  }

  /**
   * Whether a span of `traceId` ending now would be kept: its trace is held, or a new one may be
   * (maxNewTracesPerSecond), without counting it; `fresh`: the id was just made for a new trace;
   * `at`: now as performance.now() gives it, if the caller has read it (used unless the store was
   * given a clock of its own). The request path asks when a span starts, and records nothing for
   * one that would not be kept (spanRecord.ts).
   */
  wouldKeep(traceId: string, fresh = false, at = NaN): boolean {
    // A trace id just drawn at random (a root span's) is in no map: no lookup, no hash of a new string.
    if (this.maxNewPerSecond === Infinity) return true
    if (!fresh && (traceId === this.lastId || (this.known[digestOf(traceId)] !== 0 && (this.slots.has(traceId) || this.underWay.has(traceId))))) return true
    // Room in the second counted (or in a new one, which starts at 0): no need to know which second it is.
    if (this.keptThisSecond < this.maxNewPerSecond) return true
    // The caller's reading of the store's own clock (performance.now()), when it has one: at
    // saturation the budget is spent early in each second, and each span start read the clock again
    // (issue 14: 45-160 ns a read on these machines, twice a request between the sidecars).
    return Math.floor((this.ownClock && at === at ? at : this.now()) / 1000) !== this.second
  }

  /**
   * Traces with a span under way that `wouldKeep` let record, by how many: another span of one of
   * them records too, whatever the budget, so a trace carried by several sidecars sharing this store
   * (the demo) is kept whole or not at all. Bounded: past maxTraces entries (spans never ended) it starts over.
   */
  private readonly underWay = new Map<string, number>()

  /** A span `wouldKeep` let record has started; `closed` when it ends. */
  opened(traceId: string): void {
    if (this.underWay.size >= this.maxTraces) {
      for (const id of this.underWay.keys()) this.known[digestOf(id)]!--
      this.underWay.clear()
    }
    const open = this.underWay.get(traceId)
    if (open === undefined) this.known[digestOf(traceId)]!++
    this.underWay.set(traceId, (open ?? 0) + 1)
  }

  closed(traceId: string): void {
    const open = this.underWay.get(traceId)
    if (open === undefined) return
    if (open <= 1) {
      this.underWay.delete(traceId)
      this.known[digestOf(traceId)]!--
    } else this.underWay.set(traceId, open - 1)
  }

  /** Keeps a finished, sampled span of the request path (a SpanRecord), packed, within the bounds. */
  record(traceId: string, span: StoredSpan): void {
    this.keep(traceId, span, true)
  }

  private keep(traceId: string, span: StoredSpan, pack: boolean): void {
    let slot = traceId === this.lastId ? this.lastSlot : (this.slots.get(traceId) ?? -1)
    if (slot === -1) {
      if (traceId === this.notKeptId) return
      if (!this.admitNew()) {
        this.notKeptId = traceId
        return
      }
      // The oldest trace makes room (a ring of slots: a Map's own oldest key is a scan past deleted entries).
      slot = this.next
      this.next = (this.next + 1) % this.maxTraces
      this.evict(slot)
      this.ids[slot] = traceId
      this.slots.set(traceId, slot)
      this.known[digestOf(traceId)]!++
    }
    this.lastId = traceId
    this.lastSlot = slot
    if (this.counts[slot]! >= this.maxSpansPerTrace) {
      this.dropped[slot]!++
      return
    }
    if (!pack) {
      ;(this.copied[slot] ??= []).push(span)
      this.counts[slot]!++
    } else if (this.ring.append(slot, this.pack(span))) this.counts[slot]!++
    // Not appended: larger than the ring, or making room dropped this very trace (a tiny maxBytes).
    else if (this.ids[slot] === traceId) this.dropped[slot]!++
  }

  /** Empties a slot: the trace in it (if any) is no longer held. */
  private evict(slot: number): void {
    const id = this.ids[slot]
    if (id === undefined) return
    this.slots.delete(id)
    this.known[digestOf(id)]!--
    this.ids[slot] = undefined
    this.counts[slot] = 0
    this.dropped[slot] = 0
    this.copied[slot] = undefined
    this.ring.clear(slot)
    if (id === this.lastId) {
      this.lastId = ""
      this.lastSlot = -1
    }
  }

  /** Origins and attribute names seen, by index: a store serves one sidecar (or the demo's few), whose spans use a few names. */
  private readonly originList: Array<Origin> = []
  private readonly keyList: Array<string> = []
  private readonly keyIndex = new Map<string, number>()

  /**
   * One line of JSON (JSON.stringify escapes every newline): the span's fields in a fixed order,
   * its origin and attribute names as indexes into `originList` and `keyList`.
   */
  private pack(span: StoredSpan): string {
    let origin = this.originList.indexOf(span.origin)
    if (origin === -1) origin = this.originList.push(span.origin) - 1
    const attributes: Array<number | AttributeValue> = []
    for (const key in span.attributes) {
      const value = span.attributes[key]
      if (value === undefined) continue
      let index = this.keyIndex.get(key)
      if (index === undefined) {
        index = this.keyList.push(key) - 1
        this.keyIndex.set(key, index)
      }
      attributes.push(index, value)
    }
    return JSON.stringify([
      span.spanId,
      span.parentSpanId,
      span.name,
      span.kind,
      origin,
      span.start,
      span.durationMs,
      span.statusCode,
      span.statusMessage ?? null,
      attributes
    ])
  }

  private unpack(line: string): StoredSpan {
    const [spanId, parentSpanId, name, kind, origin, start, durationMs, statusCode, statusMessage, packedAttributes] = JSON.parse(line) as PackedSpan
    const attributes: Record<string, AttributeValue> = {}
    for (let i = 0; i < packedAttributes.length; i += 2) attributes[this.keyList[packedAttributes[i] as number]!] = packedAttributes[i + 1]!
    return {
      spanId,
      parentSpanId,
      name,
      kind,
      origin: this.originList[origin]!,
      start,
      durationMs,
      statusCode,
      statusMessage: statusMessage ?? undefined,
      attributes,
      events: noEvents
    }
  }

  /** Every span of a trace as the store had it. */
  private spansOf(slot: number): Array<StoredSpan> {
    const spans = this.ring.lines(slot).map((line) => this.unpack(line))
    const copied = this.copied[slot]
    return copied === undefined ? spans : spans.concat(copied)
  }

  /** Whether a new trace may be kept now (maxNewTracesPerSecond), counting it if so. */
  private admitNew(): boolean {
    if (this.maxNewPerSecond === Infinity) return true
    const second = Math.floor(this.now() / 1000)
    if (second !== this.second) {
      this.second = second
      this.keptThisSecond = 0
    }
    if (this.keptThisSecond >= this.maxNewPerSecond) return false
    this.keptThisSecond++
    return true
  }

  /** How many traces the store holds now. */
  get size(): number {
    return this.slots.size
  }

  /** Summaries of the `limit` newest traces (by when the store first saw them), newest first. */
  recent(limit: number): Array<TraceSummary> {
    const out: Array<TraceSummary> = []
    const slots = this.maxTraces
    for (let back = 1; back <= slots && out.length < limit; back++) {
      const slot = (this.next - back + slots) % slots
      const id = this.ids[slot]
      // Empty: never used, or its trace went to make room in the byte ring.
      if (id !== undefined) out.push(this.summaryOf(id, slot))
    }
    return out
  }

  /** The spans of one trace, ordered by start time; undefined when the store holds none of it. */
  get(traceId: string): Array<SpanJson> | undefined {
    const slot = this.slots.get(traceId)
    if (slot === undefined) return undefined
    return this.spansOf(slot).sort(byStart).map((span) => spanJson(traceId, span))
  }

  private originOf(resource: Resource): Origin {
    let origin = this.origins.get(resource)
    if (origin === undefined) {
      origin = originOf(resource)
      this.origins.set(resource, origin)
    }
    return origin
  }

  private summaryOf(traceId: string, slot: number): TraceSummary {
    const spans = this.spansOf(slot)
    const ids = new Set(spans.map((span) => span.spanId))
    const services = new Set<string>()
    let root: StoredSpan | undefined
    let start = Infinity
    let end = -Infinity
    let error = false
    for (const span of spans) {
      services.add(span.origin.service)
      const spanStart = startMs(span)
      start = Math.min(start, spanStart)
      end = Math.max(end, spanStart + span.durationMs)
      if (span.statusCode === SpanStatusCode.ERROR) error = true
      const isRoot = span.parentSpanId === null || !ids.has(span.parentSpanId)
      if (isRoot && (root === undefined || byStart(span, root) < 0)) root = span
    }
    return {
      traceId,
      rootName: root?.name ?? "",
      rootService: root?.origin.service ?? "",
      services: [...services].sort(),
      spanCount: spans.length,
      droppedSpans: this.dropped[slot]!,
      startTimeMs: start,
      durationMs: end - start,
      error
    }
  }
}

/** A request-path span as packed: spanId, parentSpanId, name, kind, origin index, start ms, duration ms, status code and message, attributes. */
type PackedSpan = [string, string | null, string, SpanKind, number, number, number, SpanStatusCode, string | null, Array<number | AttributeValue>]

const noEvents: StoredSpan["events"] = []

/** By start time; on a tie (the clock's resolution) a parent comes before its child. */
const byStart = (a: StoredSpan, b: StoredSpan): number =>
  startMs(a) - startMs(b) || (b.parentSpanId === a.spanId ? -1 : a.parentSpanId === b.spanId ? 1 : 0)

const spanJson = (traceId: string, span: StoredSpan): SpanJson => ({
  traceId,
  spanId: span.spanId,
  parentSpanId: span.parentSpanId,
  name: span.name,
  kind: kindNames[span.kind],
  service: span.origin.service,
  instance: span.origin.instance,
  startTimeUnixNano: startNanoString(span),
  startTimeMs: startMs(span),
  durationMs: span.durationMs,
  status: span.statusMessage === undefined || span.statusMessage === ""
    ? { code: statusNames[span.statusCode] }
    : { code: statusNames[span.statusCode], message: span.statusMessage },
  attributes: attributesJson(span.attributes),
  events: span.events.map((event) => ({
    name: event.name,
    timeUnixNano: hrToNanoString(event.time),
    timeMs: hrToMs(event.time),
    attributes: attributesJson(event.attributes)
  }))
})
