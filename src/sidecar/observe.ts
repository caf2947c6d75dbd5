// What a sidecar records about each request it carries (src/telemetry does the recording): on the
// calling side a client span, on the receiving side a server span with a client span for the call
// to the local app, Prometheus metrics in both directions, and the trace id for the access log.
// outbound.ts and inbound.ts call these at the points of a request's life; nothing here touches
// sockets.
//
// Context travels as W3C headers: the outbound side reads `traceparent`, `tracestate` and
// `baggage` from the app's request (none: a new trace starts) and writes its client span's context
// into the headers that cross IIP; the inbound side reads them from there and writes its app span's
// context into the request to the local app. Baggage passes through as it came.
//
// Attribute names follow the OpenTelemetry HTTP semantic conventions, and for gRPC calls the RPC
// ones too (`rpc.system`, `rpc.service`, `rpc.method`, `rpc.grpc.status_code`); the mesh's own are
// under `iip_mesh.`.
import { SpanKind, SpanStatusCode } from "@opentelemetry/api"
import type { GoldenSeries, ServedGolden } from "../telemetry/golden.ts"
import type { MeshMetrics, ServiceMetrics } from "../telemetry/metrics.ts"
import { type HeaderPairs, type HeaderRecord, type IncomingTrace, incomingTraceOfPairs, incomingTraceOfRecord, replaceTraceHeaders } from "../telemetry/propagation.ts"
import type { SpanRecord, SpanRecorder } from "../telemetry/spanRecord.ts"
import type { TraceStore } from "../telemetry/traceStore.ts"
import type { Tracing } from "../telemetry/tracing.ts"
import type { Meta } from "../protocol/mesh.ts"
import { grpcStatusIn, isGrpc, MAX_PATH_ATTRIBUTE, rpcAttributes } from "./grpcStatus.ts"
import { trailersOf } from "./httpEnvelope.ts"
import { ShapeAnchor } from "../mux/shapeAnchor.ts"

/**
 * A span's name, "METHOD service": the pair repeats request after request, so the last one's text
 * is kept (a joined string per span otherwise, issue 14). One entry: bounded whatever a peer sends.
 */
let lastSpanMethod = ""
let lastSpanService = ""
let lastSpanName = " "
const spanName = (method: string, service: string): string => {
  if (method !== lastSpanMethod || service !== lastSpanService) {
    lastSpanMethod = method
    lastSpanService = service
    lastSpanName = `${method} ${service}`
  }
  return lastSpanName
}

export interface SidecarTelemetry {
  readonly tracing: Tracing
  readonly metrics: MeshMetrics
  /** The spans this sidecar (and, in the demo, its neighbours in the process) finished. */
  readonly traces: TraceStore
}

export interface Failure {
  readonly hop: string
  readonly reason: string
}

/** The path of a URI as a span keeps it: what comes before its query, cut to MAX_PATH_ATTRIBUTE. */
const pathOf = (uri: string): string => {
  const q = uri.indexOf("?")
  const path = q === -1 ? uri : uri.slice(0, q)
  if (path.length <= MAX_PATH_ATTRIBUTE) return path
  // A peer's path is UTF-8 (up to 64 KiB): the cut must not leave the high half of an astral
  // character, a lone surrogate that OTLP/JSON carries as a bare \uD8xx escape.
  return path.slice(0, (path.charCodeAt(MAX_PATH_ATTRIBUTE - 1) & 0xfc00) === 0xd800 ? MAX_PATH_ATTRIBUTE - 1 : MAX_PATH_ATTRIBUTE)
}

interface HostAndPort {
  readonly host: string
  readonly port: number
}

/** The last address taken apart: a connection's requests all name the same one (per request, traced). */
let lastAddress = ""
let lastHostAndPort: HostAndPort = { host: "", port: NaN }

/** "host:port" or "[v6]:port" apart. */
const hostAndPort = (address: string): HostAndPort => {
  if (address === lastAddress) return lastHostAndPort
  const colon = address.lastIndexOf(":")
  const host = address.slice(0, colon)
  lastAddress = address
  lastHostAndPort = { host: host.startsWith("[") && host.endsWith("]") ? host.slice(1, -1) : host, port: Number(address.slice(colon + 1)) }
  return lastHostAndPort
}

/** The span's status and error attributes for an HTTP status and a mesh failure. */
const settle = (span: SpanRecord, status: number, failure: Failure | undefined): void => {
  const attributes = span.attributes
  attributes["http.response.status_code"] = status
  if (failure !== undefined) {
    attributes["error.type"] = failure.reason
    attributes["iip_mesh.error.hop"] = failure.hop
  }
  if (status >= 500 || failure !== undefined) {
    span.statusCode = SpanStatusCode.ERROR
    span.statusMessage = failure === undefined ? `HTTP ${status}` : `${failure.hop}: ${failure.reason}`
  }
}

/** Keeps the hidden class of OutboundObservation alive while idle (shapeAnchor.ts). */
const outboundObservationShape = new ShapeAnchor<OutboundObservation>()

/** One outbound request: the app's call to another service. */
export class OutboundObservation {
  private readonly telemetry: SidecarTelemetry
  private readonly method: string
  /** The app's trace headers (tracing on only: off, they go on untouched as end-to-end headers). */
  private readonly incoming: IncomingTrace | undefined
  /** The app's content-type (tracing on only): a gRPC call's span gets the RPC attributes. */
  private readonly contentType: string | undefined
  private span: SpanRecord | undefined = undefined
  private service: ServiceMetrics | undefined = undefined
  private calls: GoldenSeries | undefined = undefined
  private target = "-"
  private uri = ""
  private readonly started: number

  /** `started`: when the request began (performance.now()), as its caller read it. */
  constructor(telemetry: SidecarTelemetry, method: string, appHeaders: HeaderRecord, started: number = performance.now()) {
    outboundObservationShape.newest = this
    this.telemetry = telemetry
    this.method = method
    this.started = started
    this.incoming = telemetry.tracing.spans === undefined ? undefined : incomingTraceOfRecord(appHeaders)
    this.contentType = telemetry.tracing.spans === undefined ? undefined : (appHeaders["content-type"] as string | undefined)
  }

  /** The target is known: the client span starts, the request counts as in flight. */
  begin(service: string, uri: string): void {
    this.service = this.telemetry.metrics.service("outbound", service)
    this.calls = this.telemetry.metrics.golden.callsTo(service)
    this.target = service
    this.uri = uri
    this.service.requestStarted()
    const spans = this.telemetry.tracing.spans
    if (spans === undefined) return
    const incoming = this.incoming!
    const span = spans.start(spanName(this.method, service), SpanKind.CLIENT, incoming.parent, incoming.traceState, this.started)
    if (span.recording) {
      const attributes = span.attributes
      attributes["http.request.method"] = this.method
      attributes["url.path"] = pathOf(uri)
      attributes["iip_mesh.service"] = service
      if (isGrpc(this.contentType)) rpcAttributes(attributes, uri)
    }
    this.span = span
  }

  /** A gRPC call's status: sent by the mesh (`code`), or read from the answer's trailers (their metadata). */
  grpcStatus(code: number | undefined, trailers?: Meta): void {
    const span = this.span
    if (span === undefined || !span.recording || span.attributes["rpc.system"] === undefined) return
    const status = code ?? (trailers === undefined ? undefined : grpcStatusIn(trailersOf(trailers)))
    if (status !== undefined) span.attributes["rpc.grpc.status_code"] = status
  }

  /** A route (or the sticky baggage member: route "baggage") sent the request to a subset, or another service (routing.ts). */
  routed(route: string, backend: string, subset: string | undefined): void {
    const span = this.span
    if (span === undefined || !span.recording) return
    span.attributes["iip_mesh.route"] = route
    if (backend !== this.target) span.attributes["iip_mesh.backend"] = backend
    if (subset !== undefined) span.attributes["iip_mesh.subset"] = subset
  }

  /** Puts this span's context into the headers that cross IIP (replacing the app's). */
  propagate(headers: Array<readonly [string, string]>): void {
    if (this.span !== undefined) replaceTraceHeaders(headers, this.span.traceparent(), this.incoming!)
  }

  retried(): void {
    this.service?.retried()
  }

  ejected(service: string, endpoint: string): void {
    this.telemetry.metrics.endpointEjected(service, endpoint)
  }

  requestBytes(bytes: number): void {
    this.service?.requestBytes(bytes)
  }

  responseBytes(bytes: number): void {
    this.service?.responseBytes(bytes)
  }

  /** The request ended (exactly once; `at`: now, if the caller has read it): the span ends, the metrics count it. Returns the trace id. */
  end(status: number, endpoint: string, attempts: number, failure: Failure | undefined, at: number = performance.now()): string | undefined {
    const seconds = (at - this.started) / 1000
    const service = this.service ?? this.telemetry.metrics.service("outbound", "-")
    if (this.service === undefined) service.requestStarted()
    service.requestFinished(endpoint, this.method, status, seconds)
    if (failure !== undefined) service.requestFailed(status, failure.hop, failure.reason)
    const metrics = this.telemetry.metrics
    this.calls?.record(metrics.golden.now(), seconds, status >= 500 || failure !== undefined)
    const span = this.span
    if (metrics.tap.active) {
      metrics.tap.publish({
        time: Date.now(),
        direction: "outbound",
        service: this.target,
        caller: metrics.golden.self,
        method: this.method,
        path: pathOf(this.uri),
        status,
        latencyMs: seconds * 1000,
        endpoint,
        traceId: span?.traceId ?? null,
        errorHop: failure?.hop ?? null,
        errorReason: failure?.reason ?? null
      })
    }
    if (span === undefined) return undefined
    if (span.recording) {
      const attributes = span.attributes
      if (endpoint !== "-") {
        const { host, port } = hostAndPort(endpoint)
        attributes["server.address"] = host
        attributes["server.port"] = port
      }
      attributes["iip_mesh.attempts"] = attempts
      if (attempts > 1) attributes["http.request.resend_count"] = attempts - 1
      settle(span, status, failure)
    }
    this.telemetry.tracing.spans!.end(span)
    return span.traceId
  }
}

/** Keeps the hidden class of InboundObservation alive while idle (shapeAnchor.ts). */
const inboundObservationShape = new ShapeAnchor<InboundObservation>()

/** One inbound request: a peer's call, served by the local app. */
export class InboundObservation {
  private readonly telemetry: SidecarTelemetry
  private readonly method: string
  private readonly path: string
  private readonly serviceName: string
  private readonly service: ServiceMetrics
  private readonly served: ServedGolden
  private readonly started = performance.now()
  private readonly spans: SpanRecorder | undefined
  /** The caller's trace headers (tracing on only). */
  private incoming: IncomingTrace | undefined = undefined
  private server: SpanRecord | undefined = undefined
  private app: SpanRecord | undefined = undefined
  private ended = false

  constructor(telemetry: SidecarTelemetry, service: string, method: string, path: string, headers: HeaderPairs, remoteAddress: string) {
    inboundObservationShape.newest = this
    this.telemetry = telemetry
    this.method = method
    this.path = path
    this.serviceName = service
    this.service = telemetry.metrics.service("inbound", service)
    this.served = telemetry.metrics.golden.served(service)
    this.service.requestStarted()
    const spans = telemetry.tracing.spans
    this.spans = spans
    if (spans === undefined) return
    const incoming = incomingTraceOfPairs(headers)
    this.incoming = incoming
    const server = spans.start(spanName(method, service), SpanKind.SERVER, incoming.parent, incoming.traceState, this.started)
    if (server.recording) {
      // The peer's "host:port": semantic conventions keep the port apart (client.port).
      const client = hostAndPort(remoteAddress)
      const attributes = server.attributes
      attributes["http.request.method"] = method
      attributes["url.path"] = pathOf(path)
      attributes["client.address"] = client.host
      if (Number.isInteger(client.port) && client.port > 0) attributes["client.port"] = client.port
      attributes["iip_mesh.service"] = service
      for (let i = 0; i < headers.length; i++) {
        const pair = headers[i]!
        if (pair[0] === "content-type") {
          if (isGrpc(pair[1])) rpcAttributes(attributes, path)
          break
        }
      }
    }
    this.server = server
  }

  /** The gRPC status the app answered with (in its trailers, or a trailers-only head). */
  grpcStatus(code: number | undefined): void {
    const server = this.server
    if (code === undefined || server === undefined || !server.recording || server.attributes["rpc.system"] === undefined) return
    server.attributes["rpc.grpc.status_code"] = code
    if (this.app?.recording === true) this.app.attributes["rpc.grpc.status_code"] = code
  }

  requestBytes(bytes: number): void {
    this.service.requestBytes(bytes)
  }

  responseBytes(bytes: number): void {
    this.service.responseBytes(bytes)
  }

  /** The call to the local app starts: its span, a child of the server span, goes into the app's headers (replacing the peer's). */
  callApp(appHost: string, appPort: number, headers: Array<readonly [string, string]>): void {
    if (this.server === undefined) return
    const app = this.spans!.start(this.method, SpanKind.CLIENT, this.server)
    if (app.recording) {
      const attributes = app.attributes
      attributes["http.request.method"] = this.method
      attributes["server.address"] = appHost
      attributes["server.port"] = appPort
      attributes["iip_mesh.hop"] = "app"
      if (this.server.attributes["rpc.system"] !== undefined) rpcAttributes(attributes, this.path)
    }
    this.app = app
    replaceTraceHeaders(headers, app.traceparent(), this.incoming!)
  }

  /** The request ended (exactly once): both spans end, the metrics count it. */
  end(appAddress: string, status: number, failure: Failure | undefined): void {
    if (this.ended) return
    this.ended = true
    const seconds = (performance.now() - this.started) / 1000
    this.service.requestFinished(appAddress, this.method, status, seconds)
    if (failure !== undefined) this.service.requestFailed(status, failure.hop, failure.reason)
    const metrics = this.telemetry.metrics
    this.served.record(this.path, seconds, status >= 500 || failure !== undefined)
    if (metrics.tap.active) {
      metrics.tap.publish({
        time: Date.now(),
        direction: "inbound",
        service: this.serviceName,
        caller: "-",
        method: this.method,
        path: pathOf(this.path),
        status,
        latencyMs: seconds * 1000,
        endpoint: appAddress,
        traceId: this.server?.traceId ?? null,
        errorHop: failure?.hop ?? null,
        errorReason: failure?.reason ?? null
      })
    }
    this.endSpan(this.app, status, failure)
    this.endSpan(this.server, status, failure)
  }

  private endSpan(span: SpanRecord | undefined, status: number, failure: Failure | undefined): void {
    if (span === undefined) return
    if (span.recording) settle(span, status, failure)
    this.spans!.end(span)
  }
}
