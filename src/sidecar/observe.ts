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
// Attribute names follow the OpenTelemetry HTTP semantic conventions; the mesh's own are under
// `iip_mesh.`.
import { type Context, ROOT_CONTEXT, type Span, SpanKind, SpanStatusCode, trace } from "@opentelemetry/api"
import type { MeshMetrics, ServiceMetrics } from "../telemetry/metrics.ts"
import { extractContext, type HeaderPairs, type HeaderRecord, injectContext } from "../telemetry/propagation.ts"
import type { TraceStore } from "../telemetry/traceStore.ts"
import type { Tracing } from "../telemetry/tracing.ts"

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

const hostAndPort = (address: string): { readonly host: string; readonly port: number } => {
  const colon = address.lastIndexOf(":")
  return { host: address.slice(0, colon).replace(/^\[|\]$/g, ""), port: Number(address.slice(colon + 1)) }
}

/** The span's status and error attributes for an HTTP status and a mesh failure. */
const settle = (span: Span, status: number, failure: Failure | undefined): void => {
  span.setAttribute("http.response.status_code", status)
  if (failure !== undefined) {
    span.setAttribute("error.type", failure.reason)
    span.setAttribute("iip_mesh.error.hop", failure.hop)
  }
  if (status >= 500 || failure !== undefined) {
    span.setStatus({ code: SpanStatusCode.ERROR, message: failure === undefined ? `HTTP ${status}` : `${failure.hop}: ${failure.reason}` })
  }
}

/** One outbound request: the app's call to another service. */
export class OutboundObservation {
  private readonly telemetry: SidecarTelemetry
  private readonly method: string
  private readonly parent: Context
  private span: Span | undefined = undefined
  private service: ServiceMetrics | undefined = undefined
  private readonly started = performance.now()

  constructor(telemetry: SidecarTelemetry, method: string, appHeaders: HeaderRecord) {
    this.telemetry = telemetry
    this.method = method
    // Tracing off: the app's own trace headers go on untouched, as end-to-end headers.
    this.parent = telemetry.tracing.enabled ? extractContext(appHeaders) : ROOT_CONTEXT
  }

  /** The target is known: the client span starts, the request counts as in flight. */
  begin(service: string, uri: string): void {
    this.service = this.telemetry.metrics.service("outbound", service)
    this.service.requestStarted()
    if (!this.telemetry.tracing.enabled) return
    this.span = this.telemetry.tracing.tracer.startSpan(`${this.method} ${service}`, {
      kind: SpanKind.CLIENT,
      attributes: { "http.request.method": this.method, "url.path": uri.split("?")[0]!, "iip_mesh.service": service }
    }, this.parent)
  }

  /** Puts this span's context into the headers that cross IIP (replacing the app's). */
  propagate(headers: Array<[string, string]>): void {
    if (this.span !== undefined) injectContext(trace.setSpan(this.parent, this.span), headers)
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

  /** The request ended (exactly once): the span ends, the metrics count it. Returns the trace id. */
  end(status: number, endpoint: string, attempts: number, failure: Failure | undefined): string | undefined {
    const seconds = (performance.now() - this.started) / 1000
    const service = this.service ?? this.telemetry.metrics.service("outbound", "-")
    if (this.service === undefined) service.requestStarted()
    service.requestFinished(endpoint, this.method, status, seconds)
    if (failure !== undefined) service.requestFailed(status, failure.hop, failure.reason)
    const span = this.span
    if (span === undefined) return undefined
    if (endpoint !== "-") {
      const { host, port } = hostAndPort(endpoint)
      span.setAttribute("server.address", host)
      span.setAttribute("server.port", port)
    }
    span.setAttribute("iip_mesh.attempts", attempts)
    if (attempts > 1) span.setAttribute("http.request.resend_count", attempts - 1)
    settle(span, status, failure)
    span.end()
    return span.spanContext().traceId
  }
}

/** One inbound request: a peer's call, served by the local app. */
export class InboundObservation {
  private readonly telemetry: SidecarTelemetry
  private readonly method: string
  private readonly service: ServiceMetrics
  private readonly started = performance.now()
  private server: Span | undefined = undefined
  /** The caller's context (its baggage included) with the server span in it. */
  private serverContext: Context = ROOT_CONTEXT
  private app: Span | undefined = undefined
  private ended = false

  constructor(telemetry: SidecarTelemetry, service: string, method: string, path: string, headers: HeaderPairs, remoteAddress: string) {
    this.telemetry = telemetry
    this.method = method
    this.service = telemetry.metrics.service("inbound", service)
    this.service.requestStarted()
    if (!telemetry.tracing.enabled) return
    const parent = extractContext(headers)
    // The peer's "host:port": semantic conventions keep the port apart (client.port).
    const client = hostAndPort(remoteAddress)
    this.server = telemetry.tracing.tracer.startSpan(`${method} ${service}`, {
      kind: SpanKind.SERVER,
      attributes: {
        "http.request.method": method,
        "url.path": path.split("?")[0]!,
        "client.address": client.host,
        ...(Number.isInteger(client.port) && client.port > 0 ? { "client.port": client.port } : {}),
        "iip_mesh.service": service
      }
    }, parent)
    this.serverContext = trace.setSpan(parent, this.server)
  }

  requestBytes(bytes: number): void {
    this.service.requestBytes(bytes)
  }

  responseBytes(bytes: number): void {
    this.service.responseBytes(bytes)
  }

  /** The call to the local app starts: its span, a child of the server span, goes into the app's headers (replacing the peer's). */
  callApp(appHost: string, appPort: number, headers: Array<[string, string]>): void {
    if (this.server === undefined) return
    this.app = this.telemetry.tracing.tracer.startSpan(this.method, {
      kind: SpanKind.CLIENT,
      attributes: { "http.request.method": this.method, "server.address": appHost, "server.port": appPort, "iip_mesh.hop": "app" }
    }, this.serverContext)
    injectContext(trace.setSpan(this.serverContext, this.app), headers)
  }

  /** The request ended (exactly once): both spans end, the metrics count it. */
  end(appAddress: string, status: number, failure: Failure | undefined): void {
    if (this.ended) return
    this.ended = true
    this.service.requestFinished(appAddress, this.method, status, (performance.now() - this.started) / 1000)
    if (failure !== undefined) this.service.requestFailed(status, failure.hop, failure.reason)
    for (const span of [this.app, this.server]) {
      if (span === undefined) continue
      settle(span, status, failure)
      span.end()
    }
  }
}
