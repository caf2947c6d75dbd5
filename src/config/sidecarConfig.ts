// Every setting of the sidecar in one place (README "Configuration"): its schema, its default,
// its environment variable and its flag. Sources are merged as defaults < config file <
// environment < flags, then validated once with Schema; a bad start-up names every wrong setting,
// where it came from and what is expected.
import * as Data from "effect/Data"
import * as Result from "effect/Result"
import * as Schema from "effect/Schema"
import * as SchemaIssue from "effect/SchemaIssue"
import { isIP, isIPv4 } from "node:net"
import { hostname } from "node:os"
import { pickerNames } from "../balancer/serviceBalancer.ts"
import { isSubsetLabel } from "../balancer/subsets.ts"
import { parseSpiffeId } from "../identity/spiffe.ts"
import { parseJsonStrict } from "../iip/jsonStrict.ts"
import { readSmallFile } from "../iip/smallFile.ts"

/** A config file larger than this is refused unread. */
export const MAX_CONFIG_FILE_BYTES = 1024 * 1024

const addressPattern = /^(?:\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+):(\d{1,5})$/
const servicePattern = /^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$/
/** "NAMESPACE/NAME" of a Kubernetes Service: two DNS labels. */
const kubernetesServicePattern = /^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\/[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\+[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?){0,15}$/

const Address = Schema.String.pipe(
  Schema.check(
    Schema.makeFilter((text: string) => {
      const match = addressPattern.exec(text)
      if (match === null || Number(match[1]) > 65535) return `Expected HOST:PORT with a port of 0..65535, got ${JSON.stringify(text.slice(0, 200))}`
      // A DNS name is at most 253 characters: a longer one fails every lookup, later.
      return text.length - match[1]!.length - 1 <= 253 ? undefined : `Expected a host of at most 253 characters, got ${JSON.stringify(`${text.slice(0, 80)}...`)}`
    })
  )
)
const ServiceName = Schema.String.pipe(
  Schema.check(Schema.makeFilter((text: string) => (servicePattern.test(text) ? undefined : `Expected a DNS label (a-z, 0-9, -), got ${JSON.stringify(text)}`)))
)
/** The node names peers accept in a hello or an announcement (src/discovery/types.ts isNodeId): 1-253 characters, no controls. */
const NodeName = Schema.String.pipe(
  Schema.check(Schema.makeFilter((text: string) => (/^[^\u0000-\u001f\u007f]{1,253}$/.test(text) ? undefined : `Expected a node name (1-253 characters, no controls), got ${JSON.stringify(text.slice(0, 80))}`)))
)
/** What Resolver.setServers takes (it throws on anything else): an IP, IPv4:PORT, [IPv6] or [IPv6]:PORT. */
const isDnsServer = (text: string): boolean => {
  const match = /^(?:\[([0-9a-fA-F:.]+)\]|(\d{1,3}(?:\.\d{1,3}){3}))(?::(\d{1,5}))?$/.exec(text)
  if (match === null) return isIP(text) !== 0
  const port = match[3] === undefined ? 1 : Number(match[3])
  return port >= 1 && port <= 65535 && (match[1] === undefined ? isIPv4(match[2]!) : isIP(match[1]) === 6)
}
/** A file or directory: NUL ends a path in the system call (fs throws on it), and no path is longer than PATH_MAX. */
const FilePath = Schema.String.pipe(
  Schema.check(Schema.makeFilter((text: string) => (text.length >= 1 && text.length <= 4096 && !text.includes("\u0000") ? undefined : `Expected a path (at most 4096 characters, no NUL), got ${JSON.stringify(text.slice(0, 80))}`)))
)
/** A DNS name (an SRV record's, `_mesh._tcp.shop.prod.svc.cluster.local`). */
const DnsName = Schema.String.pipe(
  Schema.check(Schema.makeFilter((text: string) => (/^[A-Za-z0-9_.-]{1,253}$/.test(text) ? undefined : `Expected a DNS name (at most 253 of A-Z a-z 0-9 _ . -), got ${JSON.stringify(text.slice(0, 80))}`)))
)
/** Per service (names checked on the whole record: a Record with a checked key type would drop a bad name silently instead of reporting it). */
const PerService = <S extends Schema.Top>(value: S) =>
  Schema.Record(Schema.String, value).pipe(
    Schema.check(
      Schema.makeFilter((record: Readonly<Record<string, unknown>>) => {
        const bad = Object.keys(record).filter((name) => !servicePattern.test(name))
        return bad.length === 0 ? undefined : `Expected service names that are DNS labels (a-z, 0-9, -), got ${bad.map((b) => JSON.stringify(b.slice(0, 80))).join(", ")}`
      })
    )
  )
const PositiveMs = Schema.Int.pipe(Schema.check(Schema.isBetween({ minimum: 1, maximum: 3_600_000 })))
const Count = Schema.Int.pipe(Schema.check(Schema.isBetween({ minimum: 1, maximum: 10_000_000 })))
/** A byte count, 1 KiB .. 64 GiB. */
const Bytes = Schema.Int.pipe(Schema.check(Schema.isBetween({ minimum: 1024, maximum: 64 * 1024 ** 3 })))
const Percent = Schema.Number.pipe(Schema.check(Schema.isBetween({ minimum: 0, maximum: 100 })))
/** Where consistent hashing and MethodURIParam find their key: a header, a query parameter, or the client's address. */
const HashKey = Schema.String.pipe(
  Schema.check(
    Schema.makeFilter((text: string) =>
      /^(?:header:[!#$%&'*+.^_`|~0-9A-Za-z-]+|query:.+|client)$/.test(text) ? undefined : `Expected header:NAME, query:NAME or client, got ${JSON.stringify(text)}`
    )
  )
)

const SpiffeIdText = Schema.String.pipe(
  Schema.check(Schema.makeFilter((text: string) => (parseSpiffeId(text) === undefined ? `Expected a SPIFFE ID (spiffe://TRUST-DOMAIN/PATH), got ${JSON.stringify(text.slice(0, 200))}` : undefined)))
)

/** A version label (the subset routes split over, src/sidecar/routes.ts). */
export const VersionLabel = Schema.String.pipe(
  Schema.check(Schema.makeFilter((text: string) => (isSubsetLabel(text) ? undefined : `Expected a version label (1-63 of A-Z a-z 0-9 . _ -), got ${JSON.stringify(text.slice(0, 80))}`)))
)

/** How an endpoint is reached (src/sidecar/meshTls.ts): mutual TLS, the Go reference's TLS mode, or plain TCP. */
export const endpointSecurities = ["mtls", "tls", "plain"] as const

const EndpointSpec = Schema.Struct({
  address: Address,
  weight: Schema.Int.pipe(Schema.check(Schema.isBetween({ minimum: 1, maximum: 1000 }))),
  /** The SPIFFE ID the endpoint must present over mTLS. */
  identity: Schema.optionalKey(SpiffeIdText),
  /** Unset: as `mtls` says (src/sidecar/meshTls.ts). */
  security: Schema.optionalKey(Schema.Literals(endpointSecurities)),
  /** For security "tls": a PEM file of the CA the server's certificate must chain to; unset, it is not verified (as the reference). */
  ca: Schema.optionalKey(FilePath),
  /** Its version label: the subset routes send traffic to. */
  version: Schema.optionalKey(VersionLabel)
})

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
  weight: Schema.Int.pipe(Schema.check(Schema.isBetween({ minimum: 1, maximum: 1000 }))),
  requestTimeoutMs: PositiveMs,
  drainTimeoutMs: PositiveMs,
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
  /** Channels a peer may open on one inbound connection, and on all of them together. */
  maxChannelsPerConnection: Count,
  maxChannels: Count,
  /** Upgraded connections (WebSockets) open through the inbound side at once; past it new upgrades are refused `overloaded`. */
  maxTunnels: Count,
  /** Most body bytes of a mesh message sent whole (in one packet); a larger one must stream. */
  maxWholeBodyBytes: Bytes,
  /** An inbound connection must complete its first packet (its hello) within this; null for no limit. */
  firstPacketTimeoutMs: Schema.NullOr(PositiveMs),
  /** A packet, once started, must be complete within this; null for no limit. */
  packetTimeoutMs: Schema.NullOr(PositiveMs),
  /** An inbound connection with nothing in flight and no traffic for this long is closed; null for never. */
  idleTimeoutMs: Schema.NullOr(PositiveMs),
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
  /** Free read slabs (64 KiB each) the process keeps to read plain TCP IIP connections into again (src/mux/readSlabs.ts); 0: none kept. */
  readSlabPoolBytes: Schema.Int.pipe(Schema.check(Schema.isBetween({ minimum: 0, maximum: 1024 ** 3 }))),
  /** Routes (path templates, gRPC methods) per served service with golden metrics of their own; later ones share `_other`. */
  goldenRoutes: Schema.Int.pipe(Schema.check(Schema.isBetween({ minimum: 1, maximum: 1_000 }))),
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
  /** How the inbound side speaks to its app: HTTP/1.1, or cleartext HTTP/2 (gRPC apps). */
  appProtocol: Schema.Literals(["http1", "h2c", "auto"]),
  /** Streams one HTTP/2 connection from the app may have open at once (its SETTINGS_MAX_CONCURRENT_STREAMS). */
  h2MaxStreams: Schema.Int.pipe(Schema.check(Schema.isBetween({ minimum: 1, maximum: 100_000 })))
})

export type SidecarConfig = typeof SidecarConfigSchema.Type

export class ConfigInvalid extends Data.TaggedError("ConfigInvalid")<{ readonly message: string; readonly problems: ReadonlyArray<string> }> {}

/** Where each setting comes from, in README order. */
export const settings = [
  { key: "service", env: "IIP_MESH_SERVICE", flag: "--service", help: "the service this sidecar fronts" },
  { key: "node", env: "IIP_MESH_NODE", flag: "--node", help: "this sidecar's name (default: host-pid)" },
  { key: "app", env: "IIP_MESH_APP", flag: "--app", help: "the local app, HOST:PORT, or none" },
  { key: "outbound", env: "IIP_MESH_OUTBOUND", flag: "--outbound", help: "HTTP listener for the app's calls (default 127.0.0.1:4140)" },
  { key: "inbound", env: "IIP_MESH_INBOUND", flag: "--inbound", help: "IIP listener for other sidecars (default 127.0.0.1:4143)" },
  { key: "admin", env: "IIP_MESH_ADMIN", flag: "--admin", help: "read-only admin listener: /health, /ready, /metrics (default 127.0.0.1:9990)" },
  { key: "endpoints", env: "IIP_MESH_ENDPOINTS", flag: "--endpoint", help: "SERVICE=HOST:PORT[#WEIGHT][;identity=ID][;security=mtls|tls|plain][;ca=FILE][;version=V], comma-separated or repeated" },
  { key: "endpointsFile", env: "IIP_MESH_ENDPOINTS_FILE", flag: "--endpoints-file", help: "a JSON file of endpoints, re-read when it changes" },
  { key: "dnsSrv", env: "IIP_MESH_DNS_SRV", flag: "--dns-srv", help: "SERVICE=SRV-NAME (full name), comma-separated or repeated" },
  { key: "kubernetes", env: "IIP_MESH_KUBERNETES", flag: "--kubernetes", help: "SERVICE=NAMESPACE/NAME[+NAME...], Kubernetes Services whose EndpointSlices to watch (in-cluster), comma-separated or repeated" },
  { key: "dnsServers", env: "IIP_MESH_DNS_SERVERS", flag: "--dns-server", help: "DNS servers for SRV lookups, IP[:PORT] (default: the system's)" },
  { key: "localDiscovery", env: "IIP_MESH_LOCAL_DISCOVERY", flag: "--local-discovery", help: "a directory where sidecars on this machine find each other" },
  { key: "mdns", env: "IIP_MESH_MDNS", flag: "--mdns", help: "announce and discover by mDNS on the LAN (default off)" },
  { key: "meshName", env: "IIP_MESH_MESH_NAME", flag: "--mesh-name", help: "mesh name for mDNS (default: default)" },
  { key: "mdnsInterface", env: "IIP_MESH_MDNS_INTERFACE", flag: "--mdns-interface", help: "IPv4 address of the interface for mDNS (default: all)" },
  { key: "weight", env: "IIP_MESH_WEIGHT", flag: "--weight", help: "this instance's weight, as announced (default 1)" },
  { key: "requestTimeoutMs", env: "IIP_MESH_REQUEST_TIMEOUT", flag: "--request-timeout", help: "deadline of a proxied request (default 15s)" },
  { key: "drainTimeoutMs", env: "IIP_MESH_DRAIN_TIMEOUT", flag: "--drain-timeout", help: "how long a stop lets requests finish (default 10s)" },
  { key: "accessLog", env: "IIP_MESH_ACCESS_LOG", flag: "--access-log", help: "one JSON line per request on stdout (default off)" },
  { key: "tracing", env: "IIP_MESH_TRACING", flag: "--tracing", help: "trace every request (default on; OTEL_* variables configure export)" },
  { key: "compress", env: "IIP_MESH_COMPRESS", flag: "--compress", help: "compress bodies sent to other sidecars when it pays (default off: for slow links)" },
  { key: "loadBalancer", env: "IIP_MESH_LOAD_BALANCER", flag: "--load-balancer", help: `${pickerNames.join(", ")} (default p2c)` },
  { key: "hashKey", env: "IIP_MESH_HASH_KEY", flag: "--hash-key", help: "key of consistent-hash and MethodURIParam: header:NAME, query:NAME or client" },
  { key: "maxPendingPerEndpoint", env: "IIP_MESH_MAX_PENDING_PER_ENDPOINT", flag: "--max-pending-per-endpoint", help: "requests in flight per endpoint before it is skipped; all full sheds with 503 (default 1000)" },
  { key: "retryBudgetRatio", env: "IIP_MESH_RETRY_BUDGET_RATIO", flag: "--retry-budget-ratio", help: "retries allowed per request sent, over 10 s (default 0.2)" },
  { key: "retryBudgetMinPerSecond", env: "IIP_MESH_RETRY_BUDGET_MIN_PER_SECOND", flag: "--retry-budget-min-per-second", help: "retries per second allowed on top (default 10)" },
  { key: "perTryTimeoutMs", env: "IIP_MESH_PER_TRY_TIMEOUT", flag: "--per-try-timeout", help: "each try's timeout inside the deadline (default none)" },
  { key: "ejectConsecutiveFailures", env: "IIP_MESH_EJECT_CONSECUTIVE_FAILURES", flag: "--eject-consecutive-failures", help: "failures in a row that eject an endpoint, 0 for never (default 5)" },
  { key: "ejectErrorRatePercent", env: "IIP_MESH_EJECT_ERROR_RATE", flag: "--eject-error-rate", help: "error rate in percent that ejects an endpoint, 0 for never (default 50)" },
  { key: "ejectionBaseMs", env: "IIP_MESH_EJECTION_BASE", flag: "--ejection-base", help: "first ejection's length, doubling after (default 5s)" },
  { key: "ejectionMaxMs", env: "IIP_MESH_EJECTION_MAX", flag: "--ejection-max", help: "longest ejection (default 5m)" },
  { key: "maxEjectedPercent", env: "IIP_MESH_MAX_EJECTED_PERCENT", flag: "--max-ejected-percent", help: "most of a service's endpoints ejected at once, percent (default 50)" },
  { key: "healthCheckIntervalMs", env: "IIP_MESH_HEALTH_CHECK_INTERVAL", flag: "--health-check-interval", help: "active health checks this often (default off)" },
  { key: "maxQueuedRequestsPerConnection", env: "IIP_MESH_MAX_QUEUED_REQUESTS_PER_CONNECTION", flag: "--max-queued-requests-per-connection", help: "inbound requests read and not answered per connection before its reading pauses (default 1024)" },
  { key: "maxQueuedBytesPerConnection", env: "IIP_MESH_MAX_QUEUED_BYTES_PER_CONNECTION", flag: "--max-queued-bytes-per-connection", help: "inbound bytes held per connection before its reading pauses (default 64MiB)" },
  { key: "maxQueuedRequests", env: "IIP_MESH_MAX_QUEUED_REQUESTS", flag: "--max-queued-requests", help: "inbound requests held in all; past it new ones are refused overloaded (default 16384)" },
  { key: "maxQueuedBytes", env: "IIP_MESH_MAX_QUEUED_BYTES", flag: "--max-queued-bytes", help: "inbound bytes held in all; past it new requests are refused overloaded; also the outbound upgraded connections' bytes their callers have not read, past which new upgrades are refused (default 512MiB)" },
  { key: "maxChannelsPerConnection", env: "IIP_MESH_MAX_CHANNELS_PER_CONNECTION", flag: "--max-channels-per-connection", help: "channels a peer may open on one inbound connection (default 1024)" },
  { key: "maxChannels", env: "IIP_MESH_MAX_CHANNELS", flag: "--max-channels", help: "inbound channels open in all (default 65536)" },
  { key: "maxTunnels", env: "IIP_MESH_MAX_TUNNELS", flag: "--max-tunnels", help: "upgraded connections (WebSockets) open at once, to the app (inbound) and from the calling apps (outbound), each side counted on its own; past it new upgrades are refused overloaded (default 4096)" },
  { key: "maxWholeBodyBytes", env: "IIP_MESH_MAX_WHOLE_BODY_BYTES", flag: "--max-whole-body-bytes", help: "largest body a peer may send in one packet; larger ones must stream (default 1MiB)" },
  { key: "firstPacketTimeoutMs", env: "IIP_MESH_FIRST_PACKET_TIMEOUT", flag: "--first-packet-timeout", help: "an inbound connection must send its first packet within this (default 10s)" },
  { key: "packetTimeoutMs", env: "IIP_MESH_PACKET_TIMEOUT", flag: "--packet-timeout", help: "a started packet must be complete within this (default 30s)" },
  { key: "idleTimeoutMs", env: "IIP_MESH_IDLE_TIMEOUT", flag: "--idle-timeout", help: "an inbound connection idle this long is closed (default 5m)" },
  { key: "appPoolSize", env: "IIP_MESH_APP_POOL_SIZE", flag: "--app-pool-size", help: "sockets the inbound side keeps to its app at most (default 256)" },
  { key: "bodyIdleTimeoutMs", env: "IIP_MESH_BODY_IDLE_TIMEOUT", flag: "--body-idle-timeout", help: "a streamed request body silent this long is given up (default 10s)" },
  { key: "answerIdleTimeoutMs", env: "IIP_MESH_ANSWER_IDLE_TIMEOUT", flag: "--answer-idle-timeout", help: "an app's streamed answer the mesh takes nothing of for this long is given up: a caller that stopped reading, or reads under 512 KiB per this; on the outbound side, an app's HTTP/2 stream that takes none of its answer for this long is reset (default 60s)" },
  { key: "inboundDefaultTimeoutMs", env: "IIP_MESH_INBOUND_DEFAULT_TIMEOUT", flag: "--inbound-default-timeout", help: "deadline of an inbound request that carries none, and of pushes (default 30s)" },
  { key: "restartWindowMs", env: "IIP_MESH_RESTART_WINDOW", flag: "--restart-window", help: "after a go-away, refusals this long mean a restart, not a failure (default 30s)" },
  { key: "busyPingAfterMs", env: "IIP_MESH_BUSY_PING_AFTER", flag: "--busy-ping-after", help: "silence with requests waiting before an endpoint is pinged (default 1s)" },
  { key: "busyPingTimeoutMs", env: "IIP_MESH_BUSY_PING_TIMEOUT", flag: "--busy-ping-timeout", help: "unanswered that long, the connection is lost and the endpoint held out (default 2s)" },
  { key: "slowTryFloorMs", env: "IIP_MESH_SLOW_TRY", flag: "--slow-try", help: "an idempotent try unanswered this long (or 10x its endpoint's latency) goes elsewhere if it can (default 2s; off)" },
  { key: "idleGcMs", env: "IIP_MESH_IDLE_GC", flag: "--idle-gc", help: "no request this long after a burst grew its memory, one full GC gives the memory back (default 2s; off)" },
  { key: "authzPolicy", env: "IIP_MESH_AUTHZ_POLICY", flag: "--authz-policy", help: "authorization policy file, JSON or YAML, re-read on change (default none: allow all)" },
  { key: "authzPolicyPollMs", env: "IIP_MESH_AUTHZ_POLICY_POLL", flag: "--authz-policy-poll", help: "the policy file is checked this often besides its watch (default 5s)" },
  { key: "adminControl", env: "IIP_MESH_ADMIN_CONTROL", flag: "--admin-control", help: "admin control listener: dashboard, /mesh, /traces, /config, weights (default 127.0.0.1:9991)" },
  { key: "adminToken", env: "IIP_MESH_ADMIN_TOKEN", flag: "--admin-token", help: "bearer token the control listener requires (16+ chars; a flag shows in ps: prefer the env or a file)", secret: true },
  { key: "adminTokenFile", env: "IIP_MESH_ADMIN_TOKEN_FILE", flag: "--admin-token-file", help: "a file holding that token, read at start" },
  { key: "identityIssuer", env: "IIP_MESH_IDENTITY_ISSUER", flag: "--identity-issuer", help: "the identity issuer, https://HOST:PORT (default none)" },
  { key: "identityTokenFile", env: "IIP_MESH_IDENTITY_TOKEN_FILE", flag: "--identity-token-file", help: "projected ServiceAccount token for the issuer (Kubernetes)" },
  { key: "identityJoinTokenFile", env: "IIP_MESH_IDENTITY_JOIN_TOKEN_FILE", flag: "--identity-join-token-file", help: "file with a join token the issuer knows (outside Kubernetes)" },
  { key: "trustBundleFile", env: "IIP_MESH_TRUST_BUNDLE", flag: "--trust-bundle", help: "the mesh's root certificates, PEM (the issuer is verified against it)" },
  { key: "trustDomain", env: "IIP_MESH_TRUST_DOMAIN", flag: "--trust-domain", help: "the mesh's SPIFFE trust domain (default iip-mesh.local)" },
  { key: "identityDevCaDir", env: "IIP_MESH_IDENTITY_DEV_CA_DIR", flag: "--identity-dev-ca-dir", help: "DEVELOPMENT ONLY: sign this sidecar's own certificate with the CA in this directory" },
  { key: "identityRequestTimeoutMs", env: "IIP_MESH_IDENTITY_REQUEST_TIMEOUT", flag: "--identity-request-timeout", help: "a request to the issuer must be answered within this (default 10s)" },
  { key: "mtls", env: "IIP_MESH_MTLS", flag: "--mtls", help: "mutual TLS between sidecars: on, permissive or off (default: on with credentials, off without)" },
  { key: "tlsCredentialsDir", env: "IIP_MESH_TLS_CREDENTIALS_DIR", flag: "--tls-credentials-dir", help: "tests and benches: fixed credentials from key.pem, chain.pem, bundle.pem here" },
  { key: "tlsHandshakeTimeoutMs", env: "IIP_MESH_TLS_HANDSHAKE_TIMEOUT", flag: "--tls-handshake-timeout", help: "a TLS handshake must finish within this (default 10s)" },
  { key: "traceStoreRate", env: "IIP_MESH_TRACE_STORE_RATE", flag: "--trace-store-rate", help: "new traces the admin's trace store keeps per second (default 100; off: all)" },
  { key: "goldenRoutes", env: "IIP_MESH_GOLDEN_ROUTES", flag: "--golden-routes", help: "routes per served service with golden metrics of their own (default 50; then _other)" },
  { key: "tapListeners", env: "IIP_MESH_TAP_LISTENERS", flag: "--tap-listeners", help: "live tap streams at once (default 16)" },
  { key: "tapRate", env: "IIP_MESH_TAP_RATE", flag: "--tap-rate", help: "records a second each tap stream takes; the rest sampled out (default 100)" },
  { key: "tapQueue", env: "IIP_MESH_TAP_QUEUE", flag: "--tap-queue", help: "records queued for a slow tap reader; the rest dropped, counted (default 1000)" },
  { key: "federationTimeoutMs", env: "IIP_MESH_FEDERATION_TIMEOUT", flag: "--federation-timeout", help: "a peer admin's answer must come whole within this (default 1s)" },
  { key: "federationMaxBytes", env: "IIP_MESH_FEDERATION_MAX_BYTES", flag: "--federation-max-bytes", help: "largest answer taken from a peer admin (default 8MiB)" },
  { key: "federationStaleMs", env: "IIP_MESH_FEDERATION_STALE", flag: "--federation-stale", help: "a peer admin unheard this long (or failing) is shown stale (default 3s)" },
  { key: "federationMaxPeers", env: "IIP_MESH_FEDERATION_MAX_PEERS", flag: "--federation-max-peers", help: "peer admins followed at most (default 64)" },
  { key: "upgradeIdleTimeoutMs", env: "IIP_MESH_UPGRADE_IDLE_TIMEOUT", flag: "--upgrade-idle-timeout", help: "an upgraded connection (WebSocket) silent both ways this long is closed (default 5m)" },
  { key: "appVersion", env: "IIP_MESH_APP_VERSION", flag: "--app-version", help: "this instance's version, announced as its subset label (default none)" },
  { key: "routes", env: "IIP_MESH_ROUTES", flag: "--routes", help: "routes file (subset splits per target service, rate limits), JSON or YAML, re-read on change (default none)" },
  { key: "routesPollMs", env: "IIP_MESH_ROUTES_POLL", flag: "--routes-poll", help: "the routes file is checked this often besides its watch (default 5s)" },
  { key: "appProtocol", env: "IIP_MESH_APP_PROTOCOL", flag: "--app-protocol", help: "how the inbound side speaks to the app: http1, h2c (cleartext HTTP/2, for gRPC apps) or auto (gRPC calls over h2c, the rest over HTTP/1.1; default http1)" },
  { key: "h2MaxStreams", env: "IIP_MESH_H2_MAX_STREAMS", flag: "--h2-max-streams", help: "streams open at once on one HTTP/2 connection from the app (default 256)" },
  { key: "kubernetesRoutes", env: "IIP_MESH_KUBERNETES_ROUTES", flag: "--kubernetes-routes", help: "namespaces whose HTTPRoutes (attached to Services) apply as routes, in-cluster, comma-separated or repeated (default none)" },
  { key: "rateLimitKeys", env: "IIP_MESH_RATE_LIMIT_KEYS", flag: "--rate-limit-keys", help: "buckets one keyed rate limit keeps (per caller or header value) at most; later values share one (default 1024)" },
  { key: "traceStoreBytes", env: "IIP_MESH_TRACE_STORE_BYTES", flag: "--trace-store-bytes", help: "bytes the admin's trace store keeps spans in, outside the JS heap; the oldest trace goes first (default 2MiB)" },
  { key: "readSlabPoolBytes", env: "IIP_MESH_READ_SLAB_POOL_BYTES", flag: "--read-slab-pool-bytes", help: "free 64 KiB read slabs the process keeps to read plain TCP IIP connections into again (default 8MiB; 0: none)" }
] as const

/** Settings whose value is a secret: /config never shows them (src/admin/views.ts). */
export const secretSettings: ReadonlySet<string> = new Set(settings.filter((s) => "secret" in s && s.secret).map((s) => s.key))

type Key = (typeof settings)[number]["key"]

/** Every setting but `service` at its default: what the loader starts from, and what code that builds a configuration spreads. */
export const configDefaults = (): Omit<SidecarConfig, "service"> => ({
  node: `${hostname()}-${process.pid}`,
  app: null,
  outbound: "127.0.0.1:4140",
  inbound: "127.0.0.1:4143",
  admin: "127.0.0.1:9990",
  endpoints: {},
  endpointsFile: null,
  dnsSrv: {},
  kubernetes: {},
  dnsServers: [],
  localDiscovery: null,
  mdns: false,
  meshName: "default",
  mdnsInterface: null,
  weight: 1,
  requestTimeoutMs: 15_000,
  drainTimeoutMs: 10_000,
  accessLog: false,
  tracing: true,
  compress: false,
  loadBalancer: "p2c",
  hashKey: null,
  maxPendingPerEndpoint: 1000,
  retryBudgetRatio: 0.2,
  retryBudgetMinPerSecond: 10,
  perTryTimeoutMs: null,
  ejectConsecutiveFailures: 5,
  ejectErrorRatePercent: 50,
  ejectionBaseMs: 5_000,
  ejectionMaxMs: 300_000,
  maxEjectedPercent: 50,
  healthCheckIntervalMs: null,
  maxQueuedRequestsPerConnection: 1024,
  maxQueuedBytesPerConnection: 64 * 1024 * 1024,
  maxQueuedRequests: 16_384,
  maxQueuedBytes: 512 * 1024 * 1024,
  maxChannelsPerConnection: 1024,
  maxChannels: 65_536,
  maxTunnels: 4096,
  maxWholeBodyBytes: 1024 * 1024,
  firstPacketTimeoutMs: 10_000,
  packetTimeoutMs: 30_000,
  idleTimeoutMs: 300_000,
  appPoolSize: 256,
  bodyIdleTimeoutMs: 10_000,
  answerIdleTimeoutMs: 60_000,
  inboundDefaultTimeoutMs: 30_000,
  restartWindowMs: 30_000,
  busyPingAfterMs: 1_000,
  busyPingTimeoutMs: 2_000,
  slowTryFloorMs: 2_000,
  idleGcMs: 2_000,
  authzPolicy: null,
  authzPolicyPollMs: 5_000,
  adminControl: "127.0.0.1:9991",
  adminToken: null,
  adminTokenFile: null,
  identityIssuer: null,
  identityTokenFile: null,
  identityJoinTokenFile: null,
  trustBundleFile: null,
  trustDomain: "iip-mesh.local",
  identityDevCaDir: null,
  identityRequestTimeoutMs: 10_000,
  mtls: null,
  tlsCredentialsDir: null,
  tlsHandshakeTimeoutMs: 10_000,
  traceStoreRate: 100,
  goldenRoutes: 50,
  tapListeners: 16,
  tapRate: 100,
  tapQueue: 1000,
  federationTimeoutMs: 1000,
  federationMaxBytes: 8 * 1024 * 1024,
  federationStaleMs: 3000,
  federationMaxPeers: 64,
  upgradeIdleTimeoutMs: 300_000,
  appVersion: null,
  routes: null,
  routesPollMs: 5_000,
  appProtocol: "http1",
  h2MaxStreams: 256,
  kubernetesRoutes: [],
  rateLimitKeys: 1024,
  traceStoreBytes: 2 * 1024 * 1024,
  readSlabPoolBytes: 8 * 1024 * 1024
})

/**
 * "SERVICE=HOST:PORT[#WEIGHT][;identity=SPIFFE-ID][;security=mtls|tls|plain][;ca=FILE][;version=V]" entries into
 * the endpoints shape; malformed entries (and unknown keys) are kept for the schema to reject.
 */
export const parseEndpointList = (entries: ReadonlyArray<string>): Record<string, Array<Record<string, unknown>>> => {
  // A Map: a service named __proto__ or constructor is kept as a name for the schema to refuse, not looked up on Object.prototype.
  const out = new Map<string, Array<Record<string, unknown>>>()
  for (const entry of entries.flatMap((e) => e.split(",")).map((e) => e.trim()).filter((e) => e !== "")) {
    const [head = "", ...options] = entry.split(";")
    const eq = head.indexOf("=")
    const service = eq === -1 ? head : head.slice(0, eq)
    const rest = eq === -1 ? "" : head.slice(eq + 1)
    const hash = rest.lastIndexOf("#")
    const address = hash === -1 ? rest : rest.slice(0, hash)
    const weight = hash === -1 ? 1 : /^\d+$/.test(rest.slice(hash + 1)) ? Number(rest.slice(hash + 1)) : rest.slice(hash + 1)
    const spec: Record<string, unknown> = { address, weight }
    for (const option of options) {
      const split = option.indexOf("=")
      if (split > 0) spec[option.slice(0, split).trim()] = option.slice(split + 1).trim()
    }
    const list = out.get(service)
    if (list === undefined) out.set(service, [spec])
    else list.push(spec)
  }
  return Object.fromEntries(out)
}

/** "64MiB", "512KiB", "1GiB" or a bare number of bytes; anything else is kept for the schema to reject. */
const parseBytes = (text: string): unknown => {
  const match = /^(\d+)(KiB|MiB|GiB)?$/.exec(text.trim())
  if (match === null) return text
  return Number(match[1]) * (match[2] === "GiB" ? 1024 ** 3 : match[2] === "MiB" ? 1024 ** 2 : match[2] === "KiB" ? 1024 : 1)
}

/** "15s", "500ms", "2m" or a bare number of milliseconds; anything else is kept for the schema to reject. */
const parseDurationMs = (text: string): unknown => {
  const match = /^(\d+(?:\.\d+)?)(ms|s|m)?$/.exec(text.trim())
  if (match === null) return text
  const value = Number(match[1])
  return Math.round(match[2] === "s" ? value * 1000 : match[2] === "m" ? value * 60_000 : value)
}

const fromText = (key: Key, values: ReadonlyArray<string>): unknown => {
  const last = values[values.length - 1]!
  switch (key) {
    case "endpoints":
      return parseEndpointList(values)
    case "dnsSrv":
    case "kubernetes":
      return Object.fromEntries(
        values.flatMap((v) => v.split(",")).map((e) => e.trim()).filter((e) => e !== "").map((e) => [e.slice(0, Math.max(0, e.indexOf("="))), e.slice(e.indexOf("=") + 1)])
      )
    case "dnsServers":
    case "kubernetesRoutes":
      return values.flatMap((v) => v.split(",")).map((e) => e.trim()).filter((e) => e !== "")
    case "requestTimeoutMs":
    case "drainTimeoutMs":
    case "ejectionBaseMs":
    case "ejectionMaxMs":
    case "bodyIdleTimeoutMs":
    case "answerIdleTimeoutMs":
    case "inboundDefaultTimeoutMs":
    case "restartWindowMs":
    case "busyPingAfterMs":
    case "busyPingTimeoutMs":
    case "tlsHandshakeTimeoutMs":
    case "authzPolicyPollMs":
    case "routesPollMs":
    case "identityRequestTimeoutMs":
    case "federationTimeoutMs":
    case "federationStaleMs":
    case "upgradeIdleTimeoutMs":
      return parseDurationMs(last)
    case "perTryTimeoutMs":
    case "healthCheckIntervalMs":
    case "firstPacketTimeoutMs":
    case "packetTimeoutMs":
    case "idleTimeoutMs":
    case "slowTryFloorMs":
    case "idleGcMs":
      return last === "" || last === "none" || last === "off" ? null : parseDurationMs(last)
    case "maxQueuedBytesPerConnection":
    case "maxQueuedBytes":
    case "maxWholeBodyBytes":
    case "federationMaxBytes":
    case "traceStoreBytes":
    case "readSlabPoolBytes":
      return parseBytes(last)
    case "maxQueuedRequestsPerConnection":
    case "maxQueuedRequests":
    case "maxChannelsPerConnection":
    case "maxChannels":
    case "maxTunnels":
      return /^\d+$/.test(last) ? Number(last) : last
    case "hashKey":
      return last === "" || last === "none" ? null : last
    case "weight":
    case "maxPendingPerEndpoint":
    case "retryBudgetRatio":
    case "retryBudgetMinPerSecond":
    case "ejectConsecutiveFailures":
    case "ejectErrorRatePercent":
    case "maxEjectedPercent":
    case "appPoolSize":
    case "h2MaxStreams":
    case "rateLimitKeys":
    case "goldenRoutes":
    case "tapListeners":
    case "tapRate":
    case "tapQueue":
    case "federationMaxPeers":
      return /^-?\d+(?:\.\d+)?$/.test(last) ? Number(last) : last
    case "traceStoreRate":
      return last === "" || last === "off" || last === "none" ? null : /^\d+$/.test(last) ? Number(last) : last
    case "mdnsInterface":
      return last === "" || last === "all" ? null : last
    case "mtls":
      return last === "" || last === "auto" ? null : last
    case "tlsCredentialsDir":
      return last === "" || last === "none" ? null : last
    case "mdns":
    case "accessLog":
    case "tracing":
    case "compress":
      return last === "" || last === "true" || last === "1" ? true : last === "false" || last === "0" ? false : last
    case "app":
      return last === "none" ? null : last
    case "authzPolicy":
    case "routes":
    case "appVersion":
    case "adminToken":
    case "adminTokenFile":
    case "identityIssuer":
    case "identityTokenFile":
    case "identityJoinTokenFile":
    case "trustBundleFile":
    case "identityDevCaDir":
      return last === "" || last === "none" ? null : last
    default:
      return last
  }
}

export interface ConfigSources {
  /** Flags as given: name (with --) to values, in order. */
  readonly flags: ReadonlyMap<string, ReadonlyArray<string>>
  readonly env: Record<string, string | undefined>
  /** A JSON config file; `--config` or IIP_MESH_CONFIG name it. */
  readonly file?: string | undefined
}

/**
 * Where a stray argument is, for its problem: up to its "=" (`-admin-token=...`), or a word by its
 * place and the flag before it (`argument 2 (after "-admin-token")`), never its text: it may be the
 * value of a flag written wrong, a secret.
 */
const strayName = (argv: ReadonlyArray<string>, at: number): string => {
  const nameOf = (arg: string): string => (arg.includes("=") ? `${arg.slice(0, arg.indexOf("="))}=...` : arg).slice(0, 80)
  if (argv[at]!.startsWith("-")) return nameOf(argv[at]!)
  const flag = argv.slice(0, at).findLast((arg) => arg.startsWith("-"))
  return `argument ${at + 1}${flag === undefined ? "" : ` (after ${JSON.stringify(nameOf(flag).replace(/=\.\.\.$/, ""))})`}`
}

/**
 * Splits argv into flags; `--name value`, `--name=value`, and bare boolean `--access-log`. An
 * argument that is none of these (`-service`, a stray word) is kept under its strayName, for the
 * loader to report.
 */
export const parseFlags = (argv: ReadonlyArray<string>): Map<string, Array<string>> => {
  const flags = new Map<string, Array<string>>()
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!
    if (!arg.startsWith("--")) {
      flags.set(strayName(argv, i), [])
      continue
    }
    const eq = arg.indexOf("=")
    const name = eq === -1 ? arg : arg.slice(0, eq)
    const next = argv[i + 1]
    const value = eq !== -1 ? arg.slice(eq + 1) : next !== undefined && !next.startsWith("--") ? (i++, next) : ""
    flags.set(name, [...(flags.get(name) ?? []), value])
  }
  return flags
}

/** An address only this machine (this pod) can reach: 127.0.0.0/8, ::1, localhost. */
export const isLoopbackAddress = (address: string): boolean => {
  const host = address.slice(0, address.lastIndexOf(":")).replace(/^\[(.*)\]$/, "$1").toLowerCase()
  return host === "localhost" || host === "::1" || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(host) || /^::ffff:127\./.test(host)
}

/** Settings that are each valid but do not fit together. */
const crossChecks = (config: SidecarConfig): Array<string> => {
  const problems: Array<string> = []
  if (config.loadBalancer === "consistent-hash" && config.hashKey === null) {
    problems.push("hashKey: consistent-hash needs a key (header:NAME, query:NAME or client); without one every request would go to the same endpoint")
  }
  if (config.loadBalancer === "MethodURIParam" && !(config.hashKey?.startsWith("query:") ?? false)) {
    problems.push("hashKey: MethodURIParam hashes a query parameter: set query:NAME")
  }
  if (config.adminToken !== null && config.adminTokenFile !== null) {
    problems.push("adminToken: set the token or a file that holds it, not both")
  }
  if (!isLoopbackAddress(config.adminControl) && config.adminToken === null && config.adminTokenFile === null) {
    problems.push(`adminControl: ${config.adminControl} is not a loopback address: the control listener changes weights and shows the mesh, so off loopback it needs a token (adminToken or adminTokenFile)`)
  }
  const proofs = [config.identityTokenFile, config.identityJoinTokenFile].filter((file) => file !== null).length
  if (config.identityIssuer !== null) {
    if (config.identityDevCaDir !== null) problems.push("identityDevCaDir: a sidecar gets its certificate from the issuer or (development) signs it itself, not both")
    if (config.trustBundleFile === null) problems.push("trustBundleFile: required with identityIssuer (the issuer is verified against it)")
    if (proofs !== 1) problems.push("identityIssuer: set exactly one of identityTokenFile (Kubernetes) and identityJoinTokenFile")
  } else if (proofs > 0) {
    problems.push("identityIssuer: required with identityTokenFile or identityJoinTokenFile")
  }
  if (config.ejectionMaxMs < config.ejectionBaseMs) {
    problems.push(`ejectionMaxMs: ${config.ejectionMaxMs} ms is shorter than ejectionBaseMs (${config.ejectionBaseMs} ms)`)
  }
  return problems
}

/** A wrong value as a problem shows it: at most 200 characters of its JSON, never thrown (a value nested too deeply for JSON.stringify). */
const echo = (value: unknown): string => {
  try {
    const text = JSON.stringify(typeof value === "string" ? value.slice(0, 200) : value) ?? String(value)
    return text.length > 200 ? `${text.slice(0, 200)}...` : text
  } catch {
    return Array.isArray(value) ? "an array nested too deeply" : "an object nested too deeply"
  }
}

/** A problem line (the schema's message may quote a long value) at most 400 characters. */
const bounded = (line: string): string => (line.length > 400 ? `${line.slice(0, 400)}...` : line)

/**
 * JSON.parse's problem with `text` without the text it quotes: V8 says `Unexpected token 'x',
 * ..."inToken": s3cretTOKE"... is not valid JSON`, and the config file may hold adminToken. The
 * line is kept (the quote starts 10 characters before the token when it starts with "...").
 */
const jsonProblem = (message: string, text: string): string => {
  const quoted = /^Unexpected token '.*', (\.\.\.)?"(.*)"(?:\.\.\.)? is not valid JSON$/s.exec(message)
  if (quoted === null) return message
  const at = quoted[1] === undefined ? -1 : text.indexOf(quoted[2]!)
  const line = at === -1 ? "" : ` on line ${text.slice(0, at + 10).split("\n").length}`
  return `Unexpected token${line} (not valid JSON; the text around it is not shown: the file may hold a secret)`
}

/** Merges the sources and validates the result; every problem is reported at once. */
export const loadSidecarConfig = (sources: ConfigSources): Result.Result<SidecarConfig, ConfigInvalid> => {
  const raw: Record<string, unknown> = { service: undefined, ...configDefaults() }
  const origin = new Map<string, string>(Object.keys(raw).map((k) => [k, "default"]))
  const problems: Array<string> = []
  const known = new Set<string>([...settings.map((s) => s.flag), "--config"])
  for (const name of sources.flags.keys()) {
    if (name.startsWith("--")) {
      if (!known.has(name)) problems.push(`${JSON.stringify(name.slice(0, 80)).slice(1, -1)}: unknown flag`)
    } else if (name.startsWith("-")) problems.push(`${JSON.stringify(name)}: not a flag (flags are --name VALUE or --name=VALUE)`)
    else problems.push(`${name}: a word that is not a flag, not shown (it may be a value, a secret; flags are --name VALUE or --name=VALUE)`)
  }
  const file = sources.flags.get("--config")?.at(-1) ?? sources.env.IIP_MESH_CONFIG ?? sources.file
  if (file !== undefined) {
    try {
      // Opened without blocking and checked on the descriptor: a FIFO, a device or a huge file is refused unread.
      const read = readSmallFile(file, MAX_CONFIG_FILE_BYTES, { followSymlink: true })
      if ("problem" in read) throw new Error(read.problem)
      let parsed: unknown
      try {
        parsed = parseJsonStrict(read.text)
      } catch (error) {
        throw error instanceof SyntaxError ? new Error(jsonProblem(error.message, read.text)) : error
      }
      if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) throw new Error("expected a JSON object")
      for (const [key, value] of Object.entries(parsed)) {
        // Own keys only: "toString" or "__proto__" is in every object.
        if (!Object.hasOwn(raw, key)) {
          problems.push(`${JSON.stringify(key.slice(0, 80)).slice(1, -1)} (from ${file}): unknown setting`)
          continue
        }
        raw[key] = value
        origin.set(key, file)
      }
    } catch (error) {
      problems.push(`config file ${file}: ${error instanceof Error ? error.message : String(error)}`)
    }
  }
  for (const setting of settings) {
    const fromEnv = sources.env[setting.env]
    if (fromEnv !== undefined) {
      raw[setting.key] = fromText(setting.key, [fromEnv])
      origin.set(setting.key, setting.env)
    }
    const fromFlag = sources.flags.get(setting.flag)
    if (fromFlag !== undefined) {
      raw[setting.key] = fromText(setting.key, fromFlag)
      origin.set(setting.key, setting.flag)
    }
  }
  if (raw.service === undefined) problems.push(`service: required (set --service or IIP_MESH_SERVICE)`)
  const result = Schema.decodeUnknownResult(SidecarConfigSchema)(raw, { errors: "all" })
  if (Result.isFailure(result)) {
    for (const issue of SchemaIssue.makeFormatterStandardSchemaV1()(result.failure.issue).issues) {
      const path = (issue.path ?? []).map((p) => String(typeof p === "object" && p !== null && "key" in p ? p.key : p))
      if (path[0] === "service" && raw.service === undefined) continue
      const value = path.reduce<unknown>((at, key) => (typeof at === "object" && at !== null ? (at as Record<string, unknown>)[key] : undefined), raw)
      const expected = path[0]!.endsWith("Ms") && typeof value === "string" ? "Expected a duration like 15s or 500ms" : issue.message
      // A secret is never echoed, not even a wrong one.
      const got = secretSettings.has(path[0] ?? "") ? "" : expected.includes(", got ") ? "" : `, got ${echo(value)}`
      problems.push(bounded(`${path.join(".")} (from ${origin.get(path[0] ?? "") ?? "default"}): ${expected}${got}`))
    }
  }
  if (Result.isSuccess(result)) problems.push(...crossChecks(result.success))
  if (problems.length > 0) {
    return Result.fail(new ConfigInvalid({ message: `invalid configuration:\n  ${problems.join("\n  ")}`, problems }))
  }
  return Result.succeed((result as Result.Success<SidecarConfig, never>).success)
}
