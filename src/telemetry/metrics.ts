// One sidecar's Prometheus metrics: the golden signals per service and endpoint, in both
// directions, plus connections, channels, retries and ejections, in a prom-client Registry of its
// own (several sidecars in one process each keep theirs), and the process metrics. The sidecar
// updates them on the request path; the admin server serves `text()` at /metrics.
//
//   const metrics = makeMetrics()
//   const pricing = metrics.service("outbound", "pricing")      // cached: look it up once per request
//   pricing.requestStarted()
//   ...
//   pricing.requestFinished("10.0.0.7:4143", "GET", 200, seconds) // exactly once per started request
//   pricing.requestFailed(503, "outbound", "no_endpoint")         // as well, when it failed
//   const { contentType, body } = await metrics.text()
//
// Names and labels (Prometheus conventions: base units, _total for counters, _seconds, _bytes):
//   iip_mesh_requests_total{direction,service,endpoint,method,code}   counter
//   iip_mesh_request_duration_seconds{direction,service,endpoint}     histogram (both: 1,000 endpoints in all, shared fairly and
//                                                                     freed as endpoints leave discovery, then the service's _other: endpointSeries.ts)
//   iip_mesh_metric_series_dropped_total{direction,service}           counter: requests counted in their service's endpoint="_other"
//                                                                     for want of a series of their own (throttled line metric-series-full)
//   iip_mesh_request_errors_total{direction,service,code,hop,reason}  counter
//   iip_mesh_requests_in_flight{direction,service}                    gauge
//   iip_mesh_retries_total{direction,service}                         counter
//   iip_mesh_request_bytes_total{direction,service}                   counter: request bodies
//   iip_mesh_response_bytes_total{direction,service}                  counter: response bodies
//   iip_mesh_endpoint_ejections_total{service,endpoint}               counter (1,000 series, then _other)
//   iip_mesh_endpoint_refusals_total{service,endpoint}                counter: tries whose connection could not be made, the
//                                                                     endpoint held out for them, not ejected (balancer/holdOuts.ts);
//                                                                     1,000 series, then _other
//   iip_mesh_dials_refused_total{service,endpoint}                    counter: tries not dialled, an endpoint (or federation peer admin) from another host
//                                                                     whose address is on this host (src/iip/dialGuard.ts), or one at this sidecar's
//                                                                     own listener (src/iip/ownListeners.ts); 1,000 series, then _other
//   iip_mesh_discovery_endpoints_left_out{source}                    gauge, read at scrape: endpoints discovery leaves out now at
//                                                                     the cap per service (src/discovery/discovery.ts), by source kind
//   iip_mesh_invalid_headers_total{direction}                         counter: header pairs dropped as unwritable
//   iip_mesh_open_connections{direction}, iip_mesh_open_channels{direction}   gauges, read at scrape
//   iip_mesh_inbound_evicted_draining_connections                    gauge, read at scrape: of the inbound open connections,
//                                                                     those evicted busy at the cap, still draining (PROTOCOL.md §11)
//   iip_mesh_inbound_answer_bytes                                     gauge, read at scrape: bytes of the app's answers
//                                                                     the inbound side holds gathered whole (at most maxQueuedBytes)
//   iip_mesh_tunnel_unread_bytes{direction}                          gauge, read at scrape: bytes upgraded connections hold that
//                                                                     their readers have not taken: inbound, the callers' in the
//                                                                     tunnels' pool; outbound, the far apps' (each at most maxQueuedBytes)
//   iip_mesh_authz_denied_total{service,reason}                      counter: inbound calls the policy refused (403)
//   iip_mesh_authz_policy_reloads_total{result}                       counter: policy file re-reads, ok or invalid (last good kept)
//   iip_mesh_tls_handshakes_total{direction,result}                   counter: mesh TLS handshakes, result ok or
//                                                                     the refusal's reason (src/iip/tls.ts)
//   iip_mesh_plain_connections_total{result}                          counter: plain IIP peers accepted (permissive)
//                                                                     or refused (mtls on)
//   iip_mesh_inbound_connections_at_limit_total{result}               counter: newcomers at the inbound listener's
//                                                                     connection limit: evicted_unproven,
//                                                                     evicted_fair_share (src/iip/fairPlaces.ts), refused
//   iip_mesh_trust_bundle_roots{state}                                gauge, read at scrape: the bundle's roots valid,
//                                                                     expired or not_yet_valid (with credentials only)
//   iip_mesh_identity_expiry_timestamp_seconds                        gauge: when this sidecar's chain stops being usable
//                                                                     (first expiry of leaf, intermediates, their root)
//   iip_mesh_trust_bundle_refreshes_total{result}                     counter, read at scrape: fetches of the trust bundle
//                                                                     between renewals, updated, unchanged, failed or
//                                                                     refused (src/identity/identityClient.ts)
//   iip_mesh_rate_limited_total{direction,service,limit}              counter: requests a rate limit answered 429
//                                                                     (src/sidecar/rateLimits.ts; limit: its name)
//   iip_mesh_spans_dropped_total{reason}                             counter, read at scrape: spans the OTLP exporter
//                                                                     dropped, queue_full (the collector slow or silent)
//                                                                     or export_failed (tracing.ts)
//   iip_mesh_uncaught_errors_total{kind}                              counter: exceptions and rejections
//                                                                     nothing handled, that the process survived
//   iip_mesh_log_lines_dropped_total{stream}                          counter, read at scrape: access and log lines
//                                                                     dropped while stdout or stderr was not read
//                                                                     (iip/outputLines.ts)
//   iip_mesh_inbound_peer_events_total{event}                        counter, read at scrape: events of the inbound IIP
//                                                                     listener a peer can repeat at will (protocol-violation,
//                                                                     tls-refused, handler-crashed, ...), each one, logged or not
//   iip_mesh_inbound_peer_event_lines_suppressed_total{event}         counter, read at scrape: of those, the ones whose line was
//                                                                     held back (20 lines a minute an event; iip/log.ts throttledEvents)
//   iip_mesh_route_requests_total{service,route,outcome}              counter: served requests per route (golden.ts:
//                                                                     path template or gRPC method, capped per service)
//   iip_mesh_route_request_duration_seconds{service,route}            histogram (the golden metrics' buckets)
//   iip_mesh_edge_requests_total{caller,callee,outcome}               counter: this sidecar's calls per edge
//   iip_mesh_edge_request_duration_seconds{caller,callee}             histogram
// outcome: success, or failure (a 5xx or a mesh error), as the golden metrics' success rate counts.
//   process_*, nodejs_*                                               prom-client's default metrics
// direction: outbound (the local app calls out; service is the target) or inbound (a peer calls
// in; service is this sidecar's own). endpoint: outbound, the peer's host:port that was tried last
// (`-` when none was picked); inbound, the local app's address. For connections and channels,
// outbound means dialed by this sidecar and inbound accepted by it. method is the HTTP method
// (anything unusual becomes _OTHER); code the HTTP status sent back; hop and reason those of
// `x-iip-mesh-error`. At most `maxServices` services per direction get series of their own (the
// target comes from the app's Host header); the rest share service="_other". A reason can come
// from a peer (its typed error's code): past 100 error series per service, new ones share
// reason="_other".
//
// Cost on the request path: counters and gauges are plain numbers on cached objects, handed to
// prom-client only when scraped (its own label lookup costs 0.2-0.5 µs per update), the duration
// histogram too (bucket counts per endpoint, rendered in prom-client's histogram form). The process metrics are collected once
// per process (prom-client's collectors install GC and event-loop observers that cannot be
// removed), and every sidecar's `text()` appends them.
import { collectDefaultMetrics, Counter, Gauge, type Metric, Registry } from "prom-client"
import { GOLDEN_BUCKETS, type GoldenMetrics, type GoldenOptions, type GoldenSeries, makeGolden } from "./golden.ts"
import { processFaults } from "./processFaults.ts"
import { durationBuckets, EndpointSeriesBudget, type Labels, type ServiceEndpoints, type Tally, tally } from "./endpointSeries.ts"
import { type EventCount, neverThrowing, stderrLog, type Log } from "../iip/log.ts"
import { monotonicMs } from "../mux/clock.ts"
import type { BundleRefreshResult } from "../identity/identityClient.ts"
import type { DroppedSpans } from "./tracing.ts"
import { Tap, type TapLimits } from "./tap.ts"

export { EndpointSeriesGraceMs, MaxEndpointSeries, MinEndpointSeriesGraceMs } from "./endpointSeries.ts"

export type Direction = "outbound" | "inbound"

/** Why the outbound listener resets an app's HTTP/2 stream: its answer waited the answer idle timeout with none of it taken. */
export type H2ResetReason = "answer_stalled"
/** Why the outbound listener ended a calling app's HTTP/2 session (GOAWAY ENHANCE_YOUR_CALM, sidecar/outboundH2Session.ts). */
export type H2SessionEndReason = "too_many_pings" | "too_many_premature_resets"
/** The bound an upgrade was refused by (sidecar/tunnelSeats.ts): maxTunnels, maxTunnelsPerPeer, the tunnels' pool of unread bytes. */
export type TunnelLimit = "tunnels" | "per_peer" | "bytes" | "channels"
/** Requests waiting for a stream to an h2c app, those refused for want of one, and long-lived ones refused for their share (sidecar/appH2.ts); event streams refused for the HTTP/1.1 pool's share, and its peers' shares (sidecar/appPool.ts). */
export interface AppStreamCounts {
  readonly waiting: number
  readonly refused: number
  readonly longStreamsRefused: number
  /** Sessions to the h2c app drained for want of resets, and calls refused with as many draining as may (appH2.ts). */
  readonly sessionsRotated: number
  readonly resetRefused: number
  readonly eventStreamsRefused: number
  /** Requests waiting for a socket of the HTTP/1.1 pool now. */
  readonly poolWaiting: number
  /** Freed pool sockets given to a peer under its share ahead of older requests of a peer at its share. */
  readonly poolSharePassed: number
  /** Pool exchanges ended to take their socket back for another peer: held past their peer's share, their answer unread. */
  readonly poolShareReclaimed: number
  /** Bytes the h2c leg's answers hold now, and answers taken back past their budget (heldAnswers.ts). */
  readonly h2HeldBytes: number
  readonly h2HeldTakenBack: number
  /** Bytes the HTTP/1.1 leg's streamed answers hold now (their paused sockets' kernel buffers as counted), and answers taken back past their budget (appExchange.ts). */
  readonly poolHeldBytes: number
  readonly poolHeldTakenBack: number
}
/** Bytes of whole answers the outbound listener holds unsent for callers that do not read them, and the requests refused past their budget (sidecar/http1Connection.ts). */
export interface HeldAnswers {
  readonly bytes: number
  readonly refused: number
  /** The stream windows granted to the h2c streams' request bodies (sidecar/h2BodyCredit.ts), the requests with a body refused for want of room, and the idle bodies reset to make it. */
  readonly bodyWindowBytes: number
  readonly bodiesRefused: number
  readonly bodiesReset: number
  /** Bytes of the mesh's streamed answers the outbound side holds unread for its callers (streams.ts GrantingPool). */
  readonly answerStreamBytes: number
  /** Those and what their senders may still send (the pool's `committed`): bounded by --outbound-max-held-answer-bytes. */
  readonly answerStreamWindowBytes: number
}
/** No upgrade refused (a side with no tunnels: a sidecar without an app has no inbound leg). */
const TUNNEL_LIMITS: ReadonlyArray<TunnelLimit> = ["tunnels", "per_peer", "bytes", "channels"]
export const NO_TUNNEL_REFUSALS: Readonly<Record<TunnelLimit, number>> = { tunnels: 0, per_peer: 0, bytes: 0, channels: 0 }

export interface MetricsOptions {
  /** Services per direction with series of their own; later ones count as `_other`. Default 500. */
  readonly maxServices?: number
  /** The golden metrics' caps and clock (golden.ts). */
  readonly golden?: GoldenOptions
  /** The live tap's limits (tap.ts). */
  readonly tap?: Partial<TapLimits>
  /** Where the endpoint-series budget says it is full (metric-series-full); stderr by default. */
  readonly log?: Log
  /** The endpoint-series budget's clock (monotonic ms); tests move it by hand. */
  readonly now?: () => number
  /** How long an outbound endpoint series is kept once its endpoint left discovery and it saw no request (--metric-series-idle; endpointSeries.ts). */
  readonly seriesIdleMs?: number
}

export interface ServiceMetrics {
  /** A request began: in flight + 1. */
  requestStarted(): void
  /** It ended, whatever the outcome: in flight - 1, one request counted, its duration observed. */
  requestFinished(endpoint: string, method: string, code: number, seconds: number): void
  /** It failed with the mesh error sent in `x-iip-mesh-error` (in addition to requestFinished). */
  requestFailed(code: number, hop: string, reason: string): void
  /** Another endpoint was tried for the same request. */
  retried(): void
  requestBytes(bytes: number): void
  responseBytes(bytes: number): void
}

export interface ConnectionCounts {
  readonly connections: number
  readonly channels: number
  /** Of `connections`, those evicted at the inbound listener's cap while busy, still draining (inbound only). */
  readonly evictedDraining?: number
}

export interface TrafficSummary {
  readonly service: string
  readonly requests: number
  /** Answered with a 5xx (the mesh's own errors included). */
  readonly errors: number
  readonly durationSeconds: number
  readonly inFlight: number
}

/** What the identity gauges read at each scrape (sidecar/meshTls.ts): the bundle's roots' validity, and when this sidecar's chain stops being usable (ms). */
export interface TrustState {
  readonly roots: ReadonlyArray<{ readonly notBefore: number; readonly notAfter: number }>
  readonly usableUntil: number
}

export interface MeshMetrics {
  /** The mesh metrics (without the process metrics, which `text()` adds). */
  readonly registry: Registry
  /** Success rate, rate and latency percentiles over sliding windows, per service, edge and route (golden.ts). */
  readonly golden: GoldenMetrics
  /** Live request records for whoever listens (tap.ts); idle when nobody does. */
  readonly tap: Tap
  /** The metrics of one service in one direction, created on first use and cached. */
  service(direction: Direction, service: string): ServiceMetrics
  endpointEjected(service: string, endpoint: string): void
  /** A try to an endpoint found no connection to make (refused, timed out, TLS refused, not dialled): held out, not ejected, so not in the ejections. */
  endpointRefused(service: string, endpoint: string): void
  /** A try to an endpoint (or a federation fetch from a peer admin, `endpoint` its admin address) was not dialled: from another host, at an address on this host or the metadata service (src/iip/dialGuard.ts); or at this sidecar's own listener (src/iip/ownListeners.ts). */
  dialRefused(service: string, endpoint: string): void
  /** Where the endpoints discovery leaves out now at its cap per service are read at each scrape, by the kind of source (mdns, dns, kubernetes, static, local). */
  watchDiscoveryLeftOut(read: () => ReadonlyMap<string, number>): void
  /** Where the endpoint-series budget asks whether an outbound endpoint ("host:port") is still in discovery under any service (a routed request counts under its target's name): its series may be freed once not. */
  watchLiveEndpoints(isLive: (endpoint: string) => boolean): void
  /** `count` header pairs were dropped for an invalid name or value (sidecar/headerFilter.ts). */
  invalidHeaders(direction: Direction, count: number): void
  /** An HTTP/1.1 connection was closed for bytes no exchange could own (sidecar/appPool.ts inbound, http1Connection.ts outbound). */
  http1StrayBytes(direction: Direction): void
  /** The authorization policy refused an inbound call to `service`; `reason` is its verdict (a small fixed set). */
  authzDenied(service: string, reason: string): void
  /** The policy file was read again: it held a policy (ok) or not (invalid: the last good one stays). */
  authzPolicyReloaded(result: "ok" | "invalid"): void
  /** A TLS handshake with a peer ended: `result` "ok" or the refusal's reason (a fixed set of tokens). */
  tlsHandshake(direction: Direction, result: string): void
  /** A rate limit (its name, from the routes document) answered a request to `service` with 429. */
  rateLimited(direction: Direction, service: string, limit: string): void
  /** A plain IIP peer was taken (permissive mode) or refused (mtls on). */
  plainConnection(result: "accepted" | "refused"): void
  /** A newcomer at the inbound listener's connection limit: a connection evicted for it (by which rule), or it refused. */
  inboundAtLimit(result: "evicted_unproven" | "evicted_fair_share" | "refused"): void
  /** The outbound listener reset `count` HTTP/2 streams of an app for `reason` (sidecar/outboundH2.ts). */
  h2StreamsReset(reason: H2ResetReason, count: number): void
  /** The outbound listener ended a calling app's HTTP/2 session for `reason` (sidecar/outboundH2.ts). */
  h2SessionEnded(reason: H2SessionEndReason): void
  /** Where the connection and channel gauges are read at each scrape (the sidecar's server and clients). */
  watchConnections(read: () => Record<Direction, ConnectionCounts>): void
  /** Where the inbound side's gathered answers' bytes are read at each scrape (appExchange.ts's answer budget). */
  watchAnswerBytes(read: () => number): void
  /** Where the tunnels' unread bytes are read at each scrape: the inbound server's tunnels' pool, the outbound upgrades' count. */
  watchTunnelBytes(read: () => Record<Direction, number>): void
  /** Where the upgrades refused for want of a tunnel's place are read at each scrape, by the bound that refused them (sidecar/tunnelSeats.ts). */
  watchTunnelRefusals(read: () => Record<Direction, Readonly<Record<TunnelLimit, number>>>): void
  /** Where the h2c app leg's waiting and refused requests are read at each scrape. */
  watchAppStreams(read: () => AppStreamCounts): void
  /** Where the outbound listener's answers held for callers that do not read them, and the requests refused past their budget, are read at each scrape. */
  watchHeldAnswers(read: () => HeldAnswers): void
  /** Where the event streams the outbound side refused for want of a stream place are read at each scrape (sidecar/outbound.ts). */
  watchOutboundEventStreamRefusals(read: () => number): void
  /** Where the spans the OTLP exporters dropped are read at each scrape (tracing.ts). */
  watchDroppedSpans(read: () => Readonly<DroppedSpans>): void
  /** Where the lines dropped by stdout and stderr nobody read are read at each scrape (iip/outputLines.ts). */
  watchDroppedLines(read: () => Readonly<Record<"stdout" | "stderr", number>>): void
  /** Where the inbound IIP listener's counts of the events a peer can repeat are read at each scrape (IipServer.peerEvents). */
  watchInboundPeerEvents(read: () => ReadonlyArray<EventCount>): void
  /** Where the trust bundle and identity gauges are read at each scrape; without it they have no series (no credentials). */
  watchTrust(read: () => TrustState): void
  /** Where the identity's trust bundle refreshes are read at each scrape; without it they have no series (no identity). */
  watchBundleRefreshes(read: () => Readonly<Record<BundleRefreshResult, number>>): void
  /** The Prometheus text exposition of the mesh and process metrics. */
  text(): Promise<{ readonly contentType: string; readonly body: string }>
  /** Running totals per service and direction, for the dashboard (which turns them into rates). */
  summary(): Record<Direction, ReadonlyArray<TrafficSummary>>
  /** `wake` is called once, at the next request started in either direction (the idle GC sleeps on it: cli/memoryRelease.ts). */
  onNextRequest(wake: () => void): void
}

/** The one waiter for the next request, shared by every series: a request pays one field check. */
interface NextRequest {
  wake: (() => void) | undefined
}

const methods = new Set(["GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"])

/**
 * Series per tally map (countIn): discovery bounds the endpoints listed at once, not the names a
 * hostile source lists one after another over a sidecar's life, each of which would stay a series.
 */
const MAX_TALLY_SERIES = 1000

/**
 * Adds `amount` (one) to the tally of `labels` in `tallies`, keyed by the label values. Past
 * MAX_TALLY_SERIES label sets, every new one counts in one whose values are all `_other`.
 */
const countIn = (tallies: Map<string, Tally>, labels: Labels, amount = 1): void => {
  let counted = labels
  let key = Object.values(counted).join(" ")
  let t = tallies.get(key)
  if (t === undefined && tallies.size >= MAX_TALLY_SERIES) {
    counted = Object.fromEntries(Object.keys(labels).map((name) => [name, "_other"]))
    key = Object.values(counted).join(" ")
    t = tallies.get(key)
  }
  if (t === undefined) {
    t = tally(counted)
    tallies.set(key, t)
  }
  t.value += amount
}

/** A counter (or gauge) whose values are read from tallies at scrape time. */
const fromTallies = (
  registry: Registry,
  kind: "counter" | "gauge",
  name: string,
  help: string,
  labelNames: ReadonlyArray<string>,
  tallies: () => Iterable<Tally>
): void => {
  if (kind === "counter") {
    new Counter({
      name,
      help,
      labelNames,
      registers: [registry],
      collect(this: Counter) {
        this.reset()
        for (const t of tallies()) this.inc(t.labels, t.value)
      }
    })
  } else {
    new Gauge({
      name,
      help,
      labelNames,
      registers: [registry],
      collect(this: Gauge) {
        this.reset()
        for (const t of tallies()) this.set(t.labels, t.value)
      }
    })
  }
}

/** What a histogram is read from at scrape time: counts per bucket (not cumulative, the last one past every bound), sum, count. */
interface BucketCounts {
  readonly labels: Labels
  readonly counts: ArrayLike<number>
  readonly sum: number
  readonly count: number
}

/**
 * The duration histogram, read from DurationTallies at scrape time in prom-client's own form
 * (`_bucket` lines with `le` first, `+Inf`, `_sum`, `_count` per label set): prom-client's
 * Histogram checks and hashes the labels on every observe, even bound ones.
 */
const durationHistogram = (registry: Registry, name: string, help: string, tallies: () => Iterable<BucketCounts>, buckets: ReadonlyArray<number> = durationBuckets): void => {
  const get = () => {
    const values: Array<{ metricName: string; labels: Labels | { le: number | string }; sharedLabels: Labels; value: number }> = []
    for (const t of tallies()) {
      let cumulative = 0
      for (let i = 0; i < buckets.length; i++) {
        cumulative += t.counts[i]!
        values.push({ metricName: `${name}_bucket`, labels: { le: buckets[i]! }, sharedLabels: t.labels, value: cumulative })
      }
      values.push({ metricName: `${name}_bucket`, labels: { le: "+Inf" }, sharedLabels: t.labels, value: t.count })
      values.push({ metricName: `${name}_sum`, labels: {}, sharedLabels: t.labels, value: t.sum })
      values.push({ metricName: `${name}_count`, labels: {}, sharedLabels: t.labels, value: t.count })
    }
    return { name, help, type: "histogram" as const, values, aggregator: "sum" as const }
  }
  registry.registerMetric({ name, help, type: "histogram", aggregator: "sum", get: () => Promise.resolve(get()) } as unknown as Metric)
}

/** Error series per service before new reasons share `_other`. */
const MAX_ERROR_SERIES = 100

class ServiceSeries implements ServiceMetrics {
  private readonly labels: Labels
  private readonly next: NextRequest
  readonly endpoints: ServiceEndpoints
  readonly errors = new Map<string, Tally>()
  readonly inFlight: Tally
  readonly retries: Tally
  readonly requestBodyBytes: Tally
  readonly responseBodyBytes: Tally
  /** For the dashboard's rates (summary()): plain running totals. */
  finished = 0
  failedWith5xx = 0
  durationSum = 0

  constructor(labels: Labels, next: NextRequest, endpoints: ServiceEndpoints) {
    this.labels = labels
    this.next = next
    this.endpoints = endpoints
    this.inFlight = tally(labels)
    this.retries = tally(labels)
    this.requestBodyBytes = tally(labels)
    this.responseBodyBytes = tally(labels)
  }

  requestStarted(): void {
    this.inFlight.value++
    if (this.next.wake !== undefined) {
      const wake = this.next.wake
      this.next.wake = undefined
      wake()
    }
  }

  requestFinished(endpoint: string, method: string, code: number, seconds: number): void {
    this.inFlight.value--
    const series = this.endpoints.of(endpoint)
    series.count(methods.has(method) ? method : "_OTHER", code)
    series.duration.observe(seconds)
    this.finished++
    if (code >= 500) this.failedWith5xx++
    this.durationSum += seconds
  }

  requestFailed(code: number, hop: string, reason: string): void {
    let key = `${code} ${hop} ${reason}`
    let t = this.errors.get(key)
    if (t === undefined && this.errors.size >= MAX_ERROR_SERIES) {
      reason = "_other"
      key = `${code} ${hop} ${reason}`
      t = this.errors.get(key)
    }
    if (t === undefined) {
      t = tally({ ...this.labels, code: String(code), hop, reason })
      this.errors.set(key, t)
    }
    t.value++
  }

  retried(): void {
    this.retries.value++
  }

  requestBytes(bytes: number): void {
    this.requestBodyBytes.value += bytes
  }

  responseBytes(bytes: number): void {
    this.responseBodyBytes.value += bytes
  }
}

let processRegistry: Registry | undefined

/** prom-client's default metrics and the process's uncaught errors, collected once per process whatever the number of sidecars. */
const processMetrics = (): Registry => {
  if (processRegistry === undefined) {
    processRegistry = new Registry()
    collectDefaultMetrics({ register: processRegistry })
    fromTallies(processRegistry, "counter", "iip_mesh_uncaught_errors_total", "Exceptions (kind=exception) and promise rejections (kind=rejection) nothing handled, logged and survived.", ["kind"], () =>
      Object.entries(processFaults.counts()).map(([kind, value]) => ({ labels: { kind }, value })))
  }
  return processRegistry
}

const directions: ReadonlyArray<Direction> = ["outbound", "inbound"]

/** Rate limit series at most; later ones share service and limit "_other". */
const MAX_RATE_LIMIT_SERIES = 1000

export const makeMetrics = (options: MetricsOptions = {}): MeshMetrics => {
  const maxServices = options.maxServices ?? 500
  const registry = new Registry()
  const services: Record<Direction, Map<string, ServiceSeries>> = { outbound: new Map(), inbound: new Map() }
  const next: NextRequest = { wake: undefined }
  const endpointBudget = new EndpointSeriesBudget({ now: options.now ?? monotonicMs, log: neverThrowing(options.log ?? stderrLog), ...(options.seriesIdleMs === undefined ? {} : { graceMs: options.seriesIdleMs }) })
  const ejections = new Map<string, Tally>()
  const endpointRefusals = new Map<string, Tally>()
  const refusedDials = new Map<string, Tally>()
  let readDiscoveryLeftOut: () => ReadonlyMap<string, number> = () => new Map()
  const invalidHeaders: Record<Direction, Tally> = { outbound: tally({ direction: "outbound" }), inbound: tally({ direction: "inbound" }) }
  const strayBytes: Record<Direction, Tally> = { outbound: tally({ direction: "outbound" }), inbound: tally({ direction: "inbound" }) }
  const authzDenied = new Map<string, Tally>()
  const policyReloads = { ok: tally({ result: "ok" }), invalid: tally({ result: "invalid" }) }
  const handshakes = new Map<string, Tally>()
  const rateLimited = new Map<string, Tally>()
  const plainConnections = { accepted: tally({ result: "accepted" }), refused: tally({ result: "refused" }) }
  const atLimit = { evicted_unproven: tally({ result: "evicted_unproven" }), evicted_fair_share: tally({ result: "evicted_fair_share" }), refused: tally({ result: "refused" }) }
  const h2Resets: Record<H2ResetReason, Tally> = { answer_stalled: tally({ reason: "answer_stalled" }) }
  const h2SessionsEnded: Record<H2SessionEndReason, Tally> = { too_many_pings: tally({ reason: "too_many_pings" }), too_many_premature_resets: tally({ reason: "too_many_premature_resets" }) }
  let readConnections: () => Record<Direction, ConnectionCounts> = () => ({ outbound: { connections: 0, channels: 0 }, inbound: { connections: 0, channels: 0 } })
  let readTrust: (() => TrustState) | undefined
  let readBundleRefreshes: (() => Readonly<Record<BundleRefreshResult, number>>) | undefined
  let readAnswerBytes = () => 0
  let readTunnelBytes: () => Record<Direction, number> = () => ({ outbound: 0, inbound: 0 })
  let readAppStreams: () => AppStreamCounts = () => ({ waiting: 0, refused: 0, longStreamsRefused: 0, sessionsRotated: 0, resetRefused: 0, eventStreamsRefused: 0, poolWaiting: 0, poolSharePassed: 0, poolShareReclaimed: 0, h2HeldBytes: 0, h2HeldTakenBack: 0, poolHeldBytes: 0, poolHeldTakenBack: 0 })
  let readHeldAnswers: () => HeldAnswers = () => ({ bytes: 0, refused: 0, bodyWindowBytes: 0, bodiesRefused: 0, bodiesReset: 0, answerStreamBytes: 0, answerStreamWindowBytes: 0 })
  let readOutboundEventStreamRefusals: () => number = () => 0
  let readTunnelRefusals: () => Record<Direction, Readonly<Record<TunnelLimit, number>>> = () => ({ outbound: NO_TUNNEL_REFUSALS, inbound: NO_TUNNEL_REFUSALS })
  let readDroppedSpans: () => Readonly<DroppedSpans> = () => ({ queueFull: 0, exportFailed: 0 })
  let readDroppedLines: () => Readonly<Record<"stdout" | "stderr", number>> = () => ({ stdout: 0, stderr: 0 })
  let readPeerEvents: () => ReadonlyArray<EventCount> = () => []
  const rootStates = function*(): Iterable<Tally> {
    if (readTrust === undefined) return
    const now = Date.now()
    const counts = { valid: 0, expired: 0, not_yet_valid: 0 }
    for (const root of readTrust().roots) counts[root.notAfter < now ? "expired" : root.notBefore > now ? "not_yet_valid" : "valid"]++
    for (const [state, value] of Object.entries(counts)) yield { labels: { state }, value }
  }
  const connectionGauge = (field: "connections" | "channels") => () => {
    const counts = readConnections()
    return directions.map((direction) => ({ labels: { direction }, value: counts[direction][field] }))
  }

  function* allServices(): Iterable<ServiceSeries> {
    for (const direction of directions) yield* services[direction].values()
  }
  const each = (pick: (series: ServiceSeries) => Tally) =>
    function*(): Iterable<Tally> {
      for (const series of allServices()) yield pick(series)
    }

  durationHistogram(registry, "iip_mesh_request_duration_seconds", "Time from a request's arrival at the sidecar to the end of its answer, per service and endpoint.", function*() {
    for (const series of allServices()) for (const endpoint of series.endpoints.series.values()) yield endpoint.duration
  })
  fromTallies(registry, "counter", "iip_mesh_requests_total", "Requests the sidecar handled, by the status code sent back.", ["direction", "service", "endpoint", "method", "code"], function*() {
    for (const series of allServices()) for (const endpoint of series.endpoints.series.values()) yield* endpoint.tallies()
  })
  fromTallies(registry, "counter", "iip_mesh_metric_series_dropped_total", "Requests counted in their service's endpoint=\"_other\" series of iip_mesh_requests_total and iip_mesh_request_duration_seconds for want of a series of their own: the 1,000 endpoint series all services share were full, and this service held its fair part of them. Said in a metric-series-full log line (one a minute per service at most).", ["direction", "service"], function*() {
    for (const series of allServices()) if (series.endpoints.dropped > 0) yield { labels: series.endpoints.labels, value: series.endpoints.dropped }
  })
  fromTallies(registry, "counter", "iip_mesh_request_errors_total", "Requests that failed with a mesh error, by status code and the hop and reason of x-iip-mesh-error.", ["direction", "service", "code", "hop", "reason"], function*() {
    for (const series of allServices()) yield* series.errors.values()
  })
  fromTallies(registry, "gauge", "iip_mesh_requests_in_flight", "Requests begun and not yet finished.", ["direction", "service"], each((s) => s.inFlight))
  fromTallies(registry, "counter", "iip_mesh_retries_total", "Requests sent again to another endpoint.", ["direction", "service"], each((s) => s.retries))
  fromTallies(registry, "counter", "iip_mesh_request_bytes_total", "Bytes of request bodies proxied.", ["direction", "service"], each((s) => s.requestBodyBytes))
  fromTallies(registry, "counter", "iip_mesh_response_bytes_total", "Bytes of response bodies proxied.", ["direction", "service"], each((s) => s.responseBodyBytes))
  fromTallies(registry, "counter", "iip_mesh_endpoint_ejections_total", "Times an endpoint was taken out of balancing for failing.", ["service", "endpoint"], () => ejections.values())
  fromTallies(registry, "counter", "iip_mesh_endpoint_refusals_total", "Tries to an endpoint whose connection could not be made (refused, no answer within the connect timeout, TLS refused, not dialled) or that a stopping endpoint turned away unsent: the endpoint is held out until a connection succeeds, not ejected.", ["service", "endpoint"], () => endpointRefusals.values())
  fromTallies(registry, "counter", "iip_mesh_dials_refused_total", "Tries not dialled: an endpoint or federation peer admin learned from another host whose address is on this host (loopback, unspecified, multicast) or the metadata service, or an endpoint at one of this sidecar's own listeners.", ["service", "endpoint"], () => refusedDials.values())
  fromTallies(registry, "gauge", "iip_mesh_discovery_endpoints_left_out", "Endpoints discovery leaves out now, reported past the cap of 1,000 per service and source (admitted as others leave), by the kind of source, summed over services; at most 1,000 a service and source are kept waiting and counted. DNS SRV answers are cut by their lookup, which stops asking at the cap (logged discovery.dns-capped), and are not counted here.", ["source"], () =>
    Array.from(readDiscoveryLeftOut(), ([source, value]) => ({ labels: { source }, value })))
  fromTallies(registry, "counter", "iip_mesh_invalid_headers_total", "Header pairs dropped for a name or value that cannot be written.", ["direction"], () => directions.map((d) => invalidHeaders[d]))
  fromTallies(registry, "counter", "iip_mesh_http1_stray_bytes_total", "HTTP/1.1 connections closed for bytes no exchange could own: inbound, the app's past its answer or with no request waiting (kept, they would be the next request's answer); outbound, a caller's that are no valid request after the ones it sent.", ["direction"], () => directions.map((d) => strayBytes[d]))
  fromTallies(registry, "counter", "iip_mesh_authz_denied_total", "Inbound calls the authorization policy refused with 403, by the reason of its verdict.", ["service", "reason"], () => authzDenied.values())
  fromTallies(registry, "counter", "iip_mesh_authz_policy_reloads_total", "Re-reads of the authorization policy file: ok, or invalid (the last good policy stays in force).", ["result"], () => [policyReloads.ok, policyReloads.invalid])
  fromTallies(registry, "counter", "iip_mesh_tls_handshakes_total", "Mesh TLS handshakes, by direction and result (ok, or why the peer was refused).", ["direction", "result"], () => handshakes.values())
  fromTallies(registry, "counter", "iip_mesh_rate_limited_total", "Requests a rate limit answered with 429, by direction, service and the limit's name.", ["direction", "service", "limit"], () => rateLimited.values())
  fromTallies(registry, "counter", "iip_mesh_plain_connections_total", "Plain IIP peers accepted (mtls permissive) or refused (mtls on).", ["result"], () => Object.values(plainConnections))
  fromTallies(registry, "counter", "iip_mesh_inbound_connections_at_limit_total", "Newcomers at the inbound listener's connection limit: a connection that proved nothing evicted for it (evicted_unproven), one of the source holding the most (evicted_fair_share), or it refused (refused).", ["result"], () => Object.values(atLimit))
  fromTallies(registry, "counter", "iip_mesh_h2_streams_reset_total", "HTTP/2 streams of the local app the outbound listener reset, by reason (answer_stalled: its answer waited the answer idle timeout with none of it taken).", ["reason"], () => Object.values(h2Resets))
  fromTallies(registry, "counter", "iip_mesh_h2_sessions_ended_total", "HTTP/2 sessions of a calling app the outbound listener ended with GOAWAY ENHANCE_YOUR_CALM, by reason (too_many_pings: PINGs faster than one a second with nothing open; too_many_premature_resets: past 500 streams, more than half reset by the caller before an answer, within 1 s of their start; or past 1,000 such resets, 33 a second after).", ["reason"], () => Object.values(h2SessionsEnded))
  const golden = makeGolden({ maxServices, ...options.golden })
  const outcomes = (labels: Labels, totals: GoldenSeries["totals"]): Array<Tally> => [
    { labels: { ...labels, outcome: "success" }, value: totals.requests - totals.errors },
    { labels: { ...labels, outcome: "failure" }, value: totals.errors }
  ]
  const bucketsOf = (labels: Labels, totals: GoldenSeries["totals"]): BucketCounts => ({ labels, counts: totals.buckets, sum: totals.seconds, count: totals.requests })
  fromTallies(registry, "counter", "iip_mesh_route_requests_total", "Requests served per route (path template or gRPC method), by outcome: failure is a 5xx or a mesh error.", ["service", "route", "outcome"], function*() {
    for (const r of golden.series().routes) yield* outcomes({ service: r.service, route: r.route }, r.series.totals)
  })
  durationHistogram(registry, "iip_mesh_route_request_duration_seconds", "Time to serve a request, per route.", function*() {
    for (const r of golden.series().routes) yield bucketsOf({ service: r.service, route: r.route }, r.series.totals)
  }, GOLDEN_BUCKETS)
  fromTallies(registry, "counter", "iip_mesh_edge_requests_total", "Calls from this sidecar's service to another, by outcome: failure is a 5xx or a mesh error.", ["caller", "callee", "outcome"], function*() {
    for (const e of golden.series().edges) yield* outcomes({ caller: e.caller, callee: e.callee }, e.series.totals)
  })
  durationHistogram(registry, "iip_mesh_edge_request_duration_seconds", "Time of a call from this sidecar's service to another, per edge.", function*() {
    for (const e of golden.series().edges) yield bucketsOf({ caller: e.caller, callee: e.callee }, e.series.totals)
  }, GOLDEN_BUCKETS)
  fromTallies(registry, "counter", "iip_mesh_spans_dropped_total", "Spans the OTLP exporter dropped: queue_full (2048 spans held the collector had not answered for: it is slow or silent) or export_failed (in a batch it refused or did not take in time).", ["reason"], () => {
    const dropped = readDroppedSpans()
    return [{ labels: { reason: "queue_full" }, value: dropped.queueFull }, { labels: { reason: "export_failed" }, value: dropped.exportFailed }]
  })
  fromTallies(registry, "gauge", "iip_mesh_trust_bundle_roots", "Roots of the trust bundle held, by state at the scrape: valid, expired (peers whose chains lead to one are refused), not_yet_valid.", ["state"], rootStates)
  fromTallies(registry, "gauge", "iip_mesh_identity_expiry_timestamp_seconds", "When this sidecar's certificate chain stops being usable (unix seconds): the first expiry among its leaf, its intermediates and the bundle root they lead to.", [], () =>
    readTrust === undefined ? [] : [{ labels: {}, value: readTrust().usableUntil / 1000 }])
  fromTallies(registry, "counter", "iip_mesh_trust_bundle_refreshes_total", "Fetches of the trust bundle from the issuer between renewals, by result: updated (a new bundle taken), unchanged, failed (no bundle had), refused (the bundle had was refused).", ["result"], () =>
    readBundleRefreshes === undefined ? [] : Object.entries(readBundleRefreshes()).map(([result, value]) => ({ labels: { result }, value })))
  fromTallies(registry, "gauge", "iip_mesh_open_connections", "IIP connections open now (outbound: dialed, inbound: accepted, those evicted at the connection limit and still draining included).", ["direction"], connectionGauge("connections"))
  fromTallies(registry, "gauge", "iip_mesh_inbound_evicted_draining_connections", "Inbound mesh connections evicted at the connection limit while requests ran on them, still draining (at most 5 s each; counted in iip_mesh_open_connections too, outside the limit's places).", [], () => [{ labels: {}, value: readConnections().inbound.evictedDraining ?? 0 }])
  fromTallies(registry, "gauge", "iip_mesh_inbound_answer_bytes", "Bytes of the app's answers the inbound side holds gathered whole to send back as one message (at most maxQueuedBytes).", [], () => [{ labels: {}, value: readAnswerBytes() }])
  fromTallies(registry, "gauge", "iip_mesh_tunnel_unread_bytes", "Bytes upgraded connections (WebSockets) hold that their readers have not taken: inbound, the callers' bytes in the tunnels' pool; outbound, the far apps' bytes the callers have not read and the callers' bytes the mesh has not taken (each at most maxQueuedBytes).", ["direction"], () => {
    const bytes = readTunnelBytes()
    return directions.map((direction) => ({ labels: { direction }, value: bytes[direction] }))
  })
  fromTallies(registry, "counter", "iip_mesh_tunnels_refused_total", "Upgrades (WebSockets) refused 503 overloaded before any work, by direction and the bound that refused them: tunnels (maxTunnels), per_peer (maxTunnelsPerPeer: one peer sidecar's address, inbound only), bytes (the tunnels' pool of unread bytes, maxQueuedBytes), channels (no stream place left on the connections to the endpoint picked, outbound only).", ["direction", "limit"], () => {
    const refused = readTunnelRefusals()
    return directions.flatMap((direction) => TUNNEL_LIMITS.map((limit) => ({ labels: { direction, limit }, value: refused[direction][limit] })))
  })
  fromTallies(registry, "gauge", "iip_mesh_outbound_held_answer_bytes", "Bytes of answers the outbound listener holds unsent for callers that have not read them, HTTP/1.1 connections and h2c streams granted no window (at most about maxQueuedBytes: past it new requests are refused).", [], () => [{ labels: {}, value: readHeldAnswers().bytes }])
  fromTallies(registry, "gauge", "iip_mesh_outbound_answer_held_bytes", "Bytes of the answers streaming back from the mesh that the outbound side holds for its callers, received and not yet taken by their sockets, all connections; past --outbound-max-held-answer-bytes an answer is granted more only once its caller took all it held, a chunk at a time.", [], () => [{ labels: {}, value: readHeldAnswers().answerStreamBytes }])
  fromTallies(registry, "gauge", "iip_mesh_outbound_answer_window_bytes", "Bytes of the answers streaming back from the mesh that the outbound side holds for its callers and that their senders may still send (their stream windows), all connections: a stream is widened while its window limits it, within --outbound-max-held-answer-bytes.", [], () => [{ labels: {}, value: readHeldAnswers().answerStreamWindowBytes }])
  fromTallies(registry, "gauge", "iip_mesh_outbound_h2_body_window_bytes", "Stream window bytes the outbound listener's h2c connections grant callers for request bodies not yet taken whole, all connections: what those bodies can hold here (received, not yet taken by the mesh) at most; at most --outbound-h2-max-held-body-bytes.", [], () => [{ labels: {}, value: readHeldAnswers().bodyWindowBytes }])
  fromTallies(registry, "counter", "iip_mesh_outbound_h2_bodies_refused_total", "Requests with a body refused RST_STREAM REFUSED_STREAM (not processed; clients may retry) at the outbound listener's h2c connections because their first window did not fit in --outbound-h2-max-held-body-bytes, or in their connection's share of it (a quarter). Said in a throttled outbound-h2-body-refused log line.", [], () => [{ labels: {}, value: readHeldAnswers().bodiesRefused }])
  fromTallies(registry, "counter", "iip_mesh_outbound_h2_bodies_idle_reset_total", "Request bodies reset RST_STREAM ENHANCE_YOUR_CALM (grpc-js: RESOURCE_EXHAUSTED) at the outbound listener's h2c connections to make room in a full --outbound-h2-max-held-body-bytes for a connection holding less than its fair part (the budget over the connections holding windows): the body whose caller sent nothing on it for longest, 5 s at least, of the connection holding the most past its fair part.", [], () => [{ labels: {}, value: readHeldAnswers().bodiesReset }])
  fromTallies(registry, "counter", "iip_mesh_outbound_event_streams_refused_total", "Event streams (GETs accepting text/event-stream) refused 503 overloaded at the outbound sidecar, nothing sent: no stream place left on the connections to any endpoint tried (the rest of their channels are the requests'). Upgrades refused so count in iip_mesh_tunnels_refused_total, limit channels.", [], () => [{ labels: {}, value: readOutboundEventStreamRefusals() }])
  fromTallies(registry, "counter", "iip_mesh_outbound_held_answers_refused_total", "Requests (HTTP/1.1, and h2c streams) refused 503 overloaded at the outbound listener while the answers it held for callers that do not read them were past maxQueuedBytes.", [], () => [{ labels: {}, value: readHeldAnswers().refused }])
  fromTallies(registry, "counter", "iip_mesh_log_lines_dropped_total", "Access and log lines dropped while stdout or stderr held about 1 MiB its reader had not taken (a stalled log driver).", ["stream"], () =>
    Object.entries(readDroppedLines()).map(([stream, value]) => ({ labels: { stream }, value })))
  fromTallies(registry, "counter", "iip_mesh_inbound_peer_events_total", "Events of the inbound IIP listener a peer can repeat at will (protocol-violation, tls-refused, handler-crashed, push-failed, no-first-packet, packet-timeout, stalled), every one, whether its log line was written or held back.", ["event"], () =>
    readPeerEvents().map(({ event, written, suppressed }) => ({ labels: { event }, value: written + suppressed })))
  fromTallies(registry, "counter", "iip_mesh_inbound_peer_event_lines_suppressed_total", "Of iip_mesh_inbound_peer_events_total, those whose log line was held back: at most 20 lines a minute an event are written, the count held back going in the next line or, if none comes, in a log-lines-suppressed line when the minute ends.", ["event"], () =>
    readPeerEvents().map(({ event, suppressed }) => ({ labels: { event }, value: suppressed })))
  fromTallies(registry, "gauge", "iip_mesh_app_streams_waiting", "Requests waiting for a stream to the h2c app (past --app-h2-max-streams open, or the app's own SETTINGS_MAX_CONCURRENT_STREAMS); at most as many again.", [], () => [{ labels: {}, value: readAppStreams().waiting }])
  fromTallies(registry, "counter", "iip_mesh_app_streams_refused_total", "Requests refused 503 overloaded (gRPC UNAVAILABLE) before the h2c app saw them: as many waited for a stream to it as may.", [], () => [{ labels: {}, value: readAppStreams().refused }])
  fromTallies(registry, "counter", "iip_mesh_app_long_streams_refused_total", "Long-lived streams (gRPC calls of a method seen to stream, other requests whose body streams, event streams) refused 503 overloaded (gRPC UNAVAILABLE): half the h2c app's places (--app-h2-max-streams, or fewer its SETTINGS allow) held by long-lived streams already. Refused before the app saw them (not processed), or, a gRPC call not known to stream at its start, cut as its second message showed it did (processed).", [], () => [{ labels: {}, value: readAppStreams().longStreamsRefused }])
  fromTallies(registry, "counter", "iip_mesh_app_sessions_rotated_total", "Sessions to the h2c app that took no more streams, left to drain, for want of resets: the app's HTTP/2 server (nghttp2) ends a session that sends it too many (cancelled, timed-out and cut calls), every call on it.", [], () => [{ labels: {}, value: readAppStreams().sessionsRotated }])
  fromTallies(registry, "counter", "iip_mesh_app_reset_refused_total", "Requests refused 503 overloaded (gRPC UNAVAILABLE) before the h2c app saw them: no session to it had a reset to spare for another stream, and as many drained as may.", [], () => [{ labels: {}, value: readAppStreams().resetRefused }])
  fromTallies(registry, "counter", "iip_mesh_app_event_streams_refused_total", "Event streams refused 503 overloaded: half the app pool's sockets (--app-pool-size) held by event streams already. GETs accepting text/event-stream are refused before the app sees them (not processed); other requests whose answer head says text/event-stream are closed there (processed).", [], () => [{ labels: {}, value: readAppStreams().eventStreamsRefused }])
  fromTallies(registry, "gauge", "iip_mesh_app_h2_held_bytes", "Bytes the h2c app's answers hold at this sidecar: read from the app, not yet taken by the mesh (all streams; the streamed answers' queues at most --app-h2-max-held-bytes, past which answers are taken back; answers still gathered whole, 64 KiB each at most, count here too).", [], () => [{ labels: {}, value: readAppStreams().h2HeldBytes }])
  fromTallies(registry, "counter", "iip_mesh_app_h2_held_taken_back_total", "Answers of the h2c app ended overloaded (processed; the app's stream reset CANCEL if it still ran) because the answers held past --app-h2-max-held-bytes: those waiting longest on a reader that took nothing first. Each look is said in an app-h2-held-taken-back log line.", [], () => [{ labels: {}, value: readAppStreams().h2HeldTakenBack }])
  fromTallies(registry, "gauge", "iip_mesh_app_pool_held_bytes", "Bytes the HTTP/1.1 app's streamed answers hold at this sidecar: read from the app, not yet taken by the mesh, and 1 MiB for each pool socket paused a second on its reader (its kernel receive buffer; at most --app-pool-max-held-bytes, past which answers are taken back).", [], () => [{ labels: {}, value: readAppStreams().poolHeldBytes }])
  fromTallies(registry, "counter", "iip_mesh_app_pool_held_taken_back_total", "Streamed answers of the HTTP/1.1 app ended overloaded (processed; their pool socket destroyed if the app still sent) because the answers held past --app-pool-max-held-bytes: those waiting longest on a reader that took nothing first. Each look is said in an app-pool-held-taken-back log line.", [], () => [{ labels: {}, value: readAppStreams().poolHeldTakenBack }])
  fromTallies(registry, "gauge", "iip_mesh_app_pool_waiting", "Requests waiting for one of the app pool's sockets (--app-pool-size), all of them held.", [], () => [{ labels: {}, value: readAppStreams().poolWaiting }])
  fromTallies(registry, "counter", "iip_mesh_app_pool_share_passed_total", "Freed app pool sockets (and places among the streams to an h2c app) given to a peer sidecar holding less than its share (half of them) ahead of older requests of a peer holding its share: a peer held to its share while others wait.", [], () => [{ labels: {}, value: readAppStreams().poolSharePassed }])
  fromTallies(registry, "counter", "iip_mesh_app_pool_share_reclaimed_total", "Requests ended overloaded (processed; their answer had begun) to take their app pool socket, or their stream to an h2c app (reset CANCEL), back for another peer's waiting request: their peer sidecar held more than its share (half of them) and took nothing of their answer for a second. Each look is said in an app-pool-share-reclaimed log line naming the peer and the protocol.", [], () => [{ labels: {}, value: readAppStreams().poolShareReclaimed }])
  fromTallies(registry, "gauge", "iip_mesh_open_channels", "IIP channels open now (outbound: on dialed connections, inbound: on accepted ones).", ["direction"], connectionGauge("channels"))

  return {
    registry,
    golden,
    tap: new Tap(options.tap),
    service: (direction, service) => {
      const known = services[direction]
      let series = known.get(service)
      if (series === undefined) {
        // Past the cap, every new name shares one series.
        const name = known.size < maxServices ? service : "_other"
        const labels = { direction, service: name }
        series = known.get(name) ?? new ServiceSeries(labels, next, endpointBudget.service(labels, direction === "outbound"))
        known.set(name, series)
      }
      return series
    },
    // Endpoint names come from discovery, a hostile source's too: countIn caps the series.
    endpointEjected: (service, endpoint) => countIn(ejections, { service, endpoint }),
    endpointRefused: (service, endpoint) => countIn(endpointRefusals, { service, endpoint }),
    dialRefused: (service, endpoint) => countIn(refusedDials, { service, endpoint }),
    watchDiscoveryLeftOut: (read) => {
      readDiscoveryLeftOut = read
    },
    watchLiveEndpoints: (isLive) => endpointBudget.watchLive(isLive),
    invalidHeaders: (direction, count) => {
      invalidHeaders[direction].value += count
    },
    http1StrayBytes: (direction) => {
      strayBytes[direction].value++
    },
    authzDenied: (service, reason) => countIn(authzDenied, { service, reason }),
    authzPolicyReloaded: (result) => {
      policyReloads[result].value++
    },
    tlsHandshake: (direction, result) => {
      const key = `${direction} ${result}`
      let t = handshakes.get(key)
      if (t === undefined) {
        t = tally({ direction, result })
        handshakes.set(key, t)
      }
      t.value++
    },
    rateLimited: (direction, service, limit) => {
      const key = `${direction} ${service} ${limit}`
      let t = rateLimited.get(key)
      if (t === undefined) {
        // Names come from the routes document (bounded), but reloads may bring new ones: capped.
        const capped = rateLimited.size < MAX_RATE_LIMIT_SERIES ? { direction, service, limit } : { direction, service: "_other", limit: "_other" }
        const cappedKey = `${capped.direction} ${capped.service} ${capped.limit}`
        t = rateLimited.get(cappedKey) ?? tally(capped)
        rateLimited.set(cappedKey, t)
      }
      t.value++
    },
    plainConnection: (result) => {
      plainConnections[result].value++
    },
    inboundAtLimit: (result) => {
      atLimit[result].value++
    },
    h2StreamsReset: (reason, count) => {
      h2Resets[reason].value += count
    },
    h2SessionEnded: (reason) => {
      h2SessionsEnded[reason].value++
    },
    watchConnections: (read) => {
      readConnections = read
    },
    watchTrust: (read) => {
      readTrust = read
    },
    watchBundleRefreshes: (read) => {
      readBundleRefreshes = read
    },
    watchAnswerBytes: (read) => {
      readAnswerBytes = read
    },
    watchHeldAnswers: (read) => {
      readHeldAnswers = read
    },
    watchOutboundEventStreamRefusals: (read) => {
      readOutboundEventStreamRefusals = read
    },
    watchDroppedLines: (read) => {
      readDroppedLines = read
    },
    watchInboundPeerEvents: (read) => {
      readPeerEvents = read
    },
    watchAppStreams: (read) => {
      readAppStreams = read
    },
    watchTunnelRefusals: (read) => {
      readTunnelRefusals = read
    },
    watchTunnelBytes: (read) => {
      readTunnelBytes = read
    },
    watchDroppedSpans: (read) => {
      readDroppedSpans = read
    },
    summary: () => {
      const of = (direction: Direction) =>
        [...services[direction].entries()].map(([service, s]) => ({
          service,
          requests: s.finished,
          errors: s.failedWith5xx,
          durationSeconds: s.durationSum,
          inFlight: s.inFlight.value
        }))
      return { outbound: of("outbound"), inbound: of("inbound") }
    },
    onNextRequest: (wake) => {
      next.wake = wake
    },
    text: async () => {
      // A scrape is when series gone from discovery cost most: they are freed first, at most every few seconds.
      endpointBudget.sweepIfDue()
      const [mesh, process] = await Promise.all([registry.metrics(), processMetrics().metrics()])
      return { contentType: Registry.PROMETHEUS_CONTENT_TYPE, body: `${mesh}\n${process}` }
    }
  }
}
