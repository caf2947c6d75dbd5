// Every setting of the sidecar and the value it takes (README "Configuration"), as one Schema that
// loadSidecarConfig.ts validates the merged sources with, and SidecarConfig, the configuration the
// sidecar and the admin server are given. Where each setting comes from and its default: settings.ts.
import * as Schema from "effect/Schema"
import { isIPv4 } from "node:net"
import { pickerNames } from "../balancer/serviceBalancer.ts"
import { IPV6_SOURCE_PREFIX } from "../iip/sourceKey.ts"
import {
  Address,
  Bytes,
  Count,
  DnsName,
  EndpointSpec,
  FilePath,
  HashKey,
  isDnsServer,
  kubernetesServicePattern,
  NodeName,
  Percent,
  PerService,
  PositiveMs,
  ServiceName,
  VersionLabel
} from "./settingValues.ts"

export const SidecarConfigSchema = Schema.Struct({
  /** The service this sidecar fronts (its name in the mesh). */
  service: ServiceName,
  /** This sidecar's name in hellos and traces. */
  node: NodeName,
  /** The local app the inbound side forwards to; null for an app that only calls out. */
  app: Schema.NullOr(Address),
  /** Where the local app sends its outbound HTTP (keep it on loopback). */
  outbound: Address,
  /** Where other sidecars reach this one over IIP. */
  inbound: Address,
  /** The read-only admin listener: /health, /ready, /metrics (probes and Prometheus; safe on the pod address). */
  admin: Address,
  /** Static endpoints per service (until discovery finds them). */
  endpoints: PerService(Schema.Array(EndpointSpec)),
  /** A JSON file of endpoints shaped like `endpoints`, re-read when it changes; null for none. */
  endpointsFile: Schema.NullOr(FilePath),
  /** DNS SRV names per service (a Kubernetes headless Service's full name). */
  dnsSrv: PerService(DnsName),
  /**
   * Kubernetes Services per mesh service, as "NAMESPACE/NAME" or "NAMESPACE/NAME+NAME..." (version
   * Services that together make the service): their EndpointSlices are watched with the in-cluster
   * configuration (port named "mesh"). Optional in the type so configurations
   * built in code without it stay valid; loadSidecarConfig always fills it.
   */
  kubernetes: Schema.optionalKey(
    Schema.Record(
      Schema.String,
      Schema.String.pipe(
        Schema.check(
          Schema.makeFilter((text: string) =>
            kubernetesServicePattern.test(text) ? undefined : `Expected NAMESPACE/NAME[+NAME...] (DNS labels), got ${JSON.stringify(text)}`
          )
        )
      )
    )
  ),
  /** DNS servers for the SRV lookups ("ip" or "ip:port"); empty for the system's. */
  dnsServers: Schema.Array(Schema.String.pipe(Schema.check(Schema.makeFilter((text: string) => (isDnsServer(text) ? undefined : `Expected an IP address, or IP:PORT ([IPv6]:PORT), got ${JSON.stringify(text.slice(0, 80))}`))))),
  /** A directory where sidecars on this machine announce themselves and find each other; null for none. */
  localDiscovery: Schema.NullOr(FilePath),
  /** Announce this service and find the others by mDNS on the LAN. */
  mdns: Schema.Boolean,
  /** Keeps two meshes on one LAN apart (mDNS). */
  meshName: ServiceName,
  /** IPv4 address of the interface mDNS uses; null for all. */
  mdnsInterface: Schema.NullOr(Schema.String.pipe(Schema.check(Schema.makeFilter((text: string) => (isIPv4(text) ? undefined : `Expected the IPv4 address of an interface, got ${JSON.stringify(text.slice(0, 80))}`))))),
  /** This instance's version, announced (mDNS TXT `version`, the local directory) as its subset label; null: none. */
  appVersion: Schema.NullOr(VersionLabel),
  /** This instance's share of its service's traffic, as announced. */
  /**
   * Dial endpoints learned from another host (DNS SRV, Kubernetes, another host's mDNS answer) even
   * when their address, resolved, is on this host (loopback, unspecified, multicast, the metadata
   * service): for a one-machine setup whose DNS or API server lists loopback peers. Off: such a dial
   * is refused (src/iip/dialGuard.ts), so a spoofed answer cannot aim this sidecar at its own app.
   * Either way no endpoint is dialled at this sidecar's own listeners (src/iip/ownListeners.ts).
   */
  dialLocalEndpoints: Schema.Boolean,
  weight: Schema.Int.pipe(Schema.check(Schema.isBetween({ minimum: 1, maximum: 1000 }))),
  requestTimeoutMs: PositiveMs,
  drainTimeoutMs: PositiveMs,
  /** How long a stopped sidecar waits on a stdout or stderr that takes nothing of what they hold (nobody may read them any more) before it exits. */
  outputFlushTimeoutMs: PositiveMs,
  accessLog: Schema.Boolean,
  /** Spans for every request (kept in the admin's trace store; exported when OTEL_* says so). */
  tracing: Schema.Boolean,
  /**
   * Compress bodies sent to other sidecars (zstd or gzip, as the two agree) when it shrinks them.
   * For slow or metered links: on a LAN it costs more CPU than it saves. Compressed bodies from
   * peers are read either way.
   */
  compress: Schema.Boolean,
  /** How a service's endpoint is chosen per request (src/balancer/pickers.ts). */
  loadBalancer: Schema.Literals(pickerNames),
  /** The key of consistent-hash and MethodURIParam (MethodIpHash always hashes the client's address); null for none. */
  hashKey: Schema.NullOr(HashKey),
  /** Requests in flight per endpoint; past it the endpoint is skipped, and with all full the request is shed (503). */
  maxPendingPerEndpoint: Schema.Int.pipe(Schema.check(Schema.isBetween({ minimum: 1, maximum: 1_000_000 }))),
  /** Retries may add this share of the requests sent (over 10 s). */
  retryBudgetRatio: Schema.Number.pipe(Schema.check(Schema.isBetween({ minimum: 0, maximum: 10 }))),
  /** Retries per second allowed on top of the ratio. */
  retryBudgetMinPerSecond: Schema.Number.pipe(Schema.check(Schema.isBetween({ minimum: 0, maximum: 100_000 }))),
  /** Each try's own timeout, inside the request's deadline; null: a try may use all that is left. */
  perTryTimeoutMs: Schema.NullOr(PositiveMs),
  /** Failures in a row that eject an endpoint; 0 for never. */
  ejectConsecutiveFailures: Schema.Int.pipe(Schema.check(Schema.isBetween({ minimum: 0, maximum: 1_000_000 }))),
  /** Error rate (percent over 10 s, at least 20 requests) that ejects an endpoint; 0 for never. */
  ejectErrorRatePercent: Percent,
  /** The first ejection's length; each one that follows closely doubles it, up to ejectionMaxMs. */
  ejectionBaseMs: PositiveMs,
  ejectionMaxMs: PositiveMs,
  /** At most this share of a service's endpoints ejected at once. */
  maxEjectedPercent: Percent,
  /** Active health checks (a connect and a ping) of every endpoint this often; null for off. */
  healthCheckIntervalMs: Schema.NullOr(PositiveMs),
  /** Inbound budgets (src/mux/budget.ts): per connection, past it that connection's reading pauses. */
  maxQueuedRequestsPerConnection: Count,
  maxQueuedBytesPerConnection: Bytes,
  /** Inbound budgets of the whole listener: past them new requests are refused `overloaded`. */
  maxQueuedRequests: Count,
  maxQueuedBytes: Bytes,
  /** Bytes the inbound listener's connections hold queued to send, all together: past it those holding more than their share read no new requests, past twice it none. */
  maxQueuedWriteBytes: Bytes,
  /** Channels a peer may open on one inbound connection, and on all of them together. */
  maxChannelsPerConnection: Count,
  maxChannels: Count,
  /** Upgraded connections (WebSockets) open through the inbound side at once; past it new upgrades are refused `overloaded`. */
  maxTunnels: Count,
  /** Of those, open at once for one peer (a peer sidecar's address inbound, a calling app's outbound: sidecar/tunnelSeats.ts). */
  maxTunnelsPerPeer: Count,
  /** Connections the local apps hold open to the outbound listener at once; past it a new one is closed at once. */
  maxAppConnections: Count,
  /** Most body bytes of a mesh message sent whole (in one packet); a larger one must stream. */
  maxWholeBodyBytes: Bytes,
  /** An inbound connection must complete its first packet (its hello) within this; null for no limit. */
  firstPacketTimeoutMs: Schema.NullOr(PositiveMs),
  /** A packet, once started, must be complete within this; null for no limit. */
  packetTimeoutMs: Schema.NullOr(PositiveMs),
  /** An inbound connection with nothing in flight and no traffic for this long is closed; null for never. */
  idleTimeoutMs: Schema.NullOr(PositiveMs),
  /** An inbound connection whose peer takes none of what it is sent for this long is closed; null for never. */
  writeTimeoutMs: Schema.NullOr(PositiveMs),
  /** Sockets the inbound side keeps to its app at most; requests past it wait for one. */
  appPoolSize: Schema.Int.pipe(Schema.check(Schema.isBetween({ minimum: 1, maximum: 100_000 }))),
  /** A streamed request body that sends nothing for this long is given up (the app's socket freed). */
  bodyIdleTimeoutMs: PositiveMs,
  /**
   * A streamed answer from the app that the mesh takes nothing of for this long (a caller that
   * stopped reading) is given up, the app's pool socket freed. Apart from the body idle timeout: the
   * mesh takes an answer in steps of half a window (512 KiB), so this is also the slowest caller
   * served (512 KiB over it), like nginx's `send_timeout`.
   */
  answerIdleTimeoutMs: PositiveMs,
  /** The deadline of an inbound request that carries none (plain IIP callers, pushes). */
  inboundDefaultTimeoutMs: PositiveMs,
  /**
   * After an endpoint says go-away (or discovery drops it), a refused connection within this long is
   * a restart: held out without an ejection until it connects again, at most this long.
   */
  restartWindowMs: PositiveMs,
  /** Silence on a connection to an endpoint with requests waiting before it is pinged. */
  busyPingAfterMs: PositiveMs,
  /** That ping unanswered this long: the connection is lost (its requests move on) and the endpoint held out. */
  busyPingTimeoutMs: PositiveMs,
  /**
   * Without perTryTimeoutMs: an idempotent try with no answer after this long, or 10x its
   * endpoint's latency estimate if longer, goes to another endpoint when a retry is possible; null: never.
   */
  slowTryFloorMs: Schema.NullOr(PositiveMs),
  /**
   * Quiet this long (no request started or finished, under 5 % of a core) after its memory grew by
   * a tenth (a burst), the sidecar runs one full garbage collection that hands the heap's freed
   * pages back to the system (src/cli/memoryRelease.ts); null: never.
   */
  idleGcMs: Schema.NullOr(PositiveMs),
  /** The authorization policy file (JSON, or YAML for .yaml/.yml), re-read on change; null: every caller is allowed. */
  authzPolicy: Schema.NullOr(FilePath),
  /** The policy file is stat'ed this often besides the directory watch (which can miss events). */
  authzPolicyPollMs: PositiveMs,
  /**
   * The admin control listener: the dashboard and its data, /mesh, /traces, /config and weight
   * overrides. Loopback by default; anywhere else only with a token (adminToken or adminTokenFile).
   */
  adminControl: Address,
  /** The bearer token the control listener requires (when set, on any address); secret: never shown. */
  adminToken: Schema.NullOr(Schema.String.pipe(Schema.check(Schema.isMinLength(16)))),
  /** A file holding that token (a mounted Secret), read at start; null for none. */
  adminTokenFile: Schema.NullOr(FilePath),
  /** The identity issuer (`iip-mesh identity`), https://HOST:PORT; null: no issuer. Its host may hold "_" (a Compose service): it is verified by its SPIFFE ID, not its name. */
  identityIssuer: Schema.NullOr(
    Schema.String.pipe(
      Schema.check(Schema.makeFilter((text: string) => (/^https:\/\/(?:[A-Za-z0-9_.-]{1,253}|\[[0-9a-fA-F:.]+\])(?::\d{1,5})?\/?$/.test(text) ? undefined : `Expected https://HOST:PORT, got ${JSON.stringify(text.slice(0, 200))}`)))
    )
  ),
  /** A projected ServiceAccount token (audience: the issuer's), re-read on every request; proves a Kubernetes identity. */
  identityTokenFile: Schema.NullOr(FilePath),
  /** A file holding a join token the issuer knows; proves spiffe://<td>/svc/<service>. */
  identityJoinTokenFile: Schema.NullOr(FilePath),
  /** The roots (PEM) the issuer is verified against. */
  trustBundleFile: Schema.NullOr(FilePath),
  /** The mesh's SPIFFE trust domain. */
  trustDomain: Schema.String.pipe(
    Schema.check(Schema.makeFilter((text: string) => (/^[a-z0-9._-]{1,255}$/.test(text) ? undefined : `Expected a trust domain (a-z, 0-9, ., -, _), got ${JSON.stringify(text)}`)))
  ),
  /** Development only: a CA directory whose intermediate key this sidecar signs its own certificate with. */
  identityDevCaDir: Schema.NullOr(FilePath),
  /** A request to the issuer must be answered within this. */
  identityRequestTimeoutMs: PositiveMs,
  /**
   * Between renewals the trust bundle is fetched again this often (+- 10 %): how soon a rotation's
   * new root reaches this sidecar. At least 10 s: every sidecar of the mesh asks the one issuer.
   */
  identityBundleRefreshMs: Schema.Int.pipe(Schema.check(Schema.isBetween({ minimum: 10_000, maximum: 3_600_000 }))),
  /**
   * Mutual TLS between sidecars: on (TLS only), permissive (also plain IIP from peers, counted),
   * off; null: on when the sidecar has credentials, off (said in the log) without.
   */
  mtls: Schema.NullOr(Schema.Literals(["on", "permissive", "off"])),
  /** For tests and benches: fixed credentials from key.pem, chain.pem and bundle.pem in this directory (never renewed). */
  tlsCredentialsDir: Schema.NullOr(FilePath),
  /** From accept (or dial) to a finished TLS handshake. */
  tlsHandshakeTimeoutMs: PositiveMs,
  /**
   * New traces the admin's trace store keeps per second (the rest are still exported when OTEL_*
   * says so); null: every one. Under load a sample, instead of the whole store turning over.
   */
  traceStoreRate: Schema.NullOr(Count),
  /** Bytes the admin's trace store holds the request path's spans in, allocated once outside the JS heap; the oldest trace goes first. */
  traceStoreBytes: Schema.Int.pipe(Schema.check(Schema.isBetween({ minimum: 64 * 1024, maximum: 1024 ** 3 }))),
  /** Free read slabs (64 KiB each) the process keeps to read IIP connections (TCP or TLS) into again (src/mux/readSlabs.ts); 0: none kept. */
  readSlabPoolBytes: Schema.Int.pipe(Schema.check(Schema.isBetween({ minimum: 0, maximum: 1024 ** 3 }))),
  /** Routes (path templates, gRPC methods) per served service with golden metrics of their own; later ones share `_other`. */
  goldenRoutes: Schema.Int.pipe(Schema.check(Schema.isBetween({ minimum: 1, maximum: 1_000 }))),
  /**
   * An outbound endpoint series (iip_mesh_requests_total, iip_mesh_request_duration_seconds) whose
   * endpoint no discovery source lists and that saw no request for this long is removed, its place
   * in the budget given back (src/telemetry/endpointSeries.ts). At least 1 s: sweeps then run at
   * most once a second, each costing every series once.
   */
  metricSeriesIdleMs: Schema.Int.pipe(Schema.check(Schema.isBetween({ minimum: 1000, maximum: 86_400_000 }))),
  /** Live tap: listeners at once, records a second each takes, records queued for a slow reader. */
  tapListeners: Schema.Int.pipe(Schema.check(Schema.isBetween({ minimum: 1, maximum: 256 }))),
  tapRate: Schema.Int.pipe(Schema.check(Schema.isBetween({ minimum: 1, maximum: 100_000 }))),
  tapQueue: Schema.Int.pipe(Schema.check(Schema.isBetween({ minimum: 1, maximum: 100_000 }))),
  /** Admin federation: a peer admin's answer must come whole within this, and be at most this large. */
  federationTimeoutMs: PositiveMs,
  federationMaxBytes: Bytes,
  /** A peer admin not heard from for this long (or whose last call failed) is shown stale. */
  federationStaleMs: PositiveMs,
  /** Peer admins followed at most (the rest are counted, not called). */
  federationMaxPeers: Schema.Int.pipe(Schema.check(Schema.isBetween({ minimum: 1, maximum: 10_000 }))),
  /** An upgraded connection (WebSocket) with no byte either way for this long is closed, on both sidecars. */
  upgradeIdleTimeoutMs: PositiveMs,
  /** An upgraded connection holding bytes none of which its reader takes for this long is ended (sidecar/tunnelStalls.ts), on both sidecars. */
  upgradeStallTimeoutMs: PositiveMs,
  /** The routes file (JSON, or YAML for .yaml/.yml; src/sidecar/routes.ts), re-read on change; null: no routes. */
  routes: Schema.NullOr(FilePath),
  /** The routes file is stat'ed this often besides the directory watch (which can miss events). */
  routesPollMs: PositiveMs,
  /**
   * Namespaces whose Gateway API HTTPRoutes attached to Services are watched (in-cluster) and
   * applied after the routes file's (src/sidecar/kubernetesRoutes.ts). Optional in the type, as
   * `kubernetes` is.
   */
  kubernetesRoutes: Schema.optionalKey(Schema.Array(Schema.String.pipe(Schema.check(Schema.makeFilter((text: string) =>
    /^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$/.test(text) ? undefined : `Expected a namespace (a DNS label), got ${JSON.stringify(text.slice(0, 80))}`
  ))))),
  /** Buckets one keyed rate limit keeps at most (src/sidecar/rateLimits.ts); later keys share one. At most 100,000: a sweep of refilled buckets walks them all. */
  rateLimitKeys: Schema.Int.pipe(Schema.check(Schema.isBetween({ minimum: 1, maximum: 100_000 }))),
  /** The prefix an IPv6 caller without an identity counts by in a rate limit keyed by caller (src/iip/sourceKey.ts: a /64 by default, as the issuer's). */
  ipv6SourcePrefix: Schema.Int.pipe(Schema.check(Schema.isBetween({ minimum: IPV6_SOURCE_PREFIX.min, maximum: IPV6_SOURCE_PREFIX.max }))),
  /** How the inbound side speaks to its app: HTTP/1.1, or cleartext HTTP/2 (gRPC apps). */
  appProtocol: Schema.Literals(["http1", "h2c", "auto"]),
  /** Streams one HTTP/2 connection from the app may have open at once (its SETTINGS_MAX_CONCURRENT_STREAMS). */
  h2MaxStreams: Schema.Int.pipe(Schema.check(Schema.isBetween({ minimum: 1, maximum: 100_000 }))),
  /** Streams open at once to an h2c app (sidecar/appH2.ts), fewer if it allows fewer; as many again may wait for one. */
  appH2MaxStreams: Schema.Int.pipe(Schema.check(Schema.isBetween({ minimum: 1, maximum: 100_000 }))),
  /** Bytes the h2c app's answers hold at the sidecar, all streams together (sidecar/heldAnswers.ts); past it the longest stalled are taken back. */
  appH2MaxHeldBytes: Bytes,
  /** Bytes the HTTP/1.1 app's streamed answers hold at the sidecar, paused sockets' kernel buffers counted (sidecar/appExchange.ts); past it the longest stalled are taken back. */
  appPoolMaxHeldBytes: Bytes,
  /** Stream window bytes the outbound h2c listener grants request bodies, all connections together (sidecar/h2BodyCredit.ts); past it requests with a body are refused REFUSED_STREAM. */
  outboundH2MaxHeldBodyBytes: Bytes,
  /** Bytes the mesh's streamed answers hold at the outbound side for its callers, all connections (streams.ts GrantingPool); past it they are granted a chunk at a time, once read. */
  outboundMaxHeldAnswerBytes: Bytes
})

export type SidecarConfig = typeof SidecarConfigSchema.Type
