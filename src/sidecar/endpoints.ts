// Where each service can be reached, and which endpoint takes the next request: per service a
// ServiceBalancer (src/balancer) over the endpoints discovery gives (the peers' sidecars, or plain
// IIP servers), each endpoint with its own pooled IipClient (one per security it is listed with).
// Discovery (or static configuration) replaces a service's set, keeping the stats and health of
// endpoints that stay; the outbound side picks from it for every request (within the version subset
// a route chose, src/sidecar/routing.ts); the admin API reads and overrides weights here.
//
// Each client tells its endpoint's balancers when the peer says go-away or stops answering pings,
// and a try tells them when its connection could not be made; an endpoint the balancer then holds
// out (restarting, refused, unresponsive: src/balancer/holdOuts.ts) is redialled here in the
// background with a capped, jittered exponential backoff, and back in as soon as a connection
// succeeds (each failed redial holds it out a while longer), for one hold window at most: one still
// down after it is tried again by the next request that picks it.
import * as Effect from "effect/Effect"
import type { HoldReason } from "../balancer/holdOuts.ts"
import { type Lease, type PickerName, type PickResult, ServiceBalancer, type EndpointView } from "../balancer/serviceBalancer.ts"
import { leftOut, MaxSubsetsPerService, subsetExclusions } from "../balancer/subsets.ts"
import { connectFailedThrottle, IipClient } from "../iip/client.ts"
import { backoffDelay } from "../iip/clientDial.ts"
import { defaultKeepAlive } from "../iip/keepAlive.ts"
import type { DialRefusal } from "../iip/dialGuard.ts"
import { type Log, LogThrottle } from "../iip/log.ts"
import type { OwnListeners, SelfDialCheck } from "../iip/ownListeners.ts"
import type { Supervisor } from "../iip/supervisor.ts"
import type { ClientTlsOptions } from "../iip/tls.ts"
import type { EndpointSecurity } from "./meshTls.ts"

export interface Endpoint {
  readonly service: string
  readonly host: string
  readonly port: number
  readonly weight: number
  /** Where it came from ("static", "mdns", ...), for the admin view. */
  readonly source: string
  /** The SPIFFE ID it must present over mutual TLS (from discovery). */
  readonly identity?: string | undefined
  /** mtls, tls (the Go reference's TLS mode) or plain; unset: as the sidecar's mtls mode says (meshTls.ts). */
  readonly security?: EndpointSecurity | undefined
  /** For "tls": the CA file its certificate must chain to. */
  readonly ca?: string | undefined
  /** Its version label: the subset a route may send traffic to (src/balancer/subsets.ts). */
  readonly version?: string | undefined
  /**
   * Learned from another host (mDNS, DNS SRV, Kubernetes): dialled only at a peer's address, never
   * at this host's loopback and the like (src/iip/dialGuard.ts), whatever its name resolves to.
   */
  readonly offHost?: boolean | undefined
}

/**
 * Channels per connection to an endpoint for ordinary requests. A request never waits behind
 * another on a channel (a slow answer would hold up an unrelated caller); past 2 connections x 64
 * channels A holds further requests to that endpoint until a channel frees. The far side takes
 * 1,024 per connection by default.
 */
export const REQUEST_CHANNELS_PER_CONNECTION = 64

/** Channels per connection to an endpoint for streams beyond the requests' (the client caps a connection's channels at half what the far side takes: 448 for streams by default, ConnectionPool.streamPlaces). */
const STREAM_CHANNELS_PER_CONNECTION = 512

/**
 * What the connections to an endpoint depend on besides its address: a change makes a new client.
 * `own`: an endpoint of the registry's own service, which may reach this sidecar's own inbound.
 */
const securityOf = (endpoint: Endpoint, own: boolean): string => `${endpoint.security ?? ""} ${endpoint.identity ?? ""} ${endpoint.ca ?? ""}${endpoint.offHost === true ? " off-host" : ""}${own ? " own" : ""}`

const keys = new WeakMap<object, string>()
const clientKeys = new WeakMap<Endpoint, string>()
/** The keys asked for by the registry of the endpoint's own service: one process may hold several registries seeing one endpoint object. */
const ownClientKeys = new WeakMap<Endpoint, string>()

/**
 * The key of an endpoint's client: its address and the security its connections need, computed once
 * per endpoint object (asked for per request). Two services listing one address with different
 * securities each get a client of their own: one's mTLS endpoint is never dialled over the other's plain client.
 */
const clientKeyOf = (endpoint: Endpoint, ownService: string | undefined): string => {
  const own = endpoint.service === ownService
  const cache = own ? ownClientKeys : clientKeys
  let key = cache.get(endpoint)
  if (key === undefined) {
    key = `${endpointKey(endpoint)} ${securityOf(endpoint, own)}`
    cache.set(endpoint, key)
  }
  return key
}

/** "host:port" ("[v6]:port"), computed once per endpoint object: pickers ask for it per request. */
export const endpointKey = (endpoint: { readonly host: string; readonly port: number }): string => {
  let key = keys.get(endpoint)
  if (key === undefined) {
    key = endpoint.host.includes(":") ? `[${endpoint.host}]:${endpoint.port}` : `${endpoint.host}:${endpoint.port}`
    keys.set(endpoint, key)
  }
  return key
}

export interface BalancingOptions {
  readonly picker: PickerName
  readonly paramKey?: string
  readonly maxPendingPerEndpoint: number
  readonly retryBudgetRatio: number
  readonly retryBudgetMinPerSecond: number
  readonly ejectConsecutiveFailures: number
  readonly ejectErrorRatePercent: number
  readonly ejectionBaseMs: number
  readonly ejectionMaxMs: number
  readonly maxEjectedPercent: number
  /** After a go-away (or being dropped by discovery), how long a refused connection means a restart; the longest hold (a refused endpoint's, renewed by each failed redial). */
  readonly restartWindowMs: number
  /** Silence on a connection with requests waiting before it is pinged. */
  readonly busyPingAfterMs: number
  /** An unanswered ping closes that connection after this long; its endpoint is held out. */
  readonly busyPingTimeoutMs: number
}

export interface EndpointRegistryOptions {
  readonly node: string
  readonly requestTimeoutMs: number
  /** Compress request bodies to endpoints that agree on a codec. */
  readonly compress: boolean
  /** Largest metadata block the endpoints' clients accept (the sidecar's, not the library's default). */
  readonly maxMetaBytes: number
  /** The stream window the endpoints' clients state in their hellos (default the library's, 1 MiB). */
  readonly streamWindow?: number
  readonly balancing: BalancingOptions
  readonly log: Log
  readonly supervisor: Supervisor
  /** The TLS options of an endpoint's connections (meshTls.ts); undefined or absent: plain TCP. */
  readonly clientTls?: (endpoint: Endpoint) => ClientTlsOptions | undefined
  /** A try to an endpoint of `service` from another host was not dialled: its address is on this host (counted in a metric). */
  readonly onDialRefused?: (service: string, endpoint: string) => void
  /** A try to an endpoint of `service` found no connection to make (or was turned away unsent by a stopping endpoint): held out, not ejected (counted in a metric). */
  readonly onRefused?: (service: string, endpoint: string) => void
  /** Dial endpoints from another host even at addresses on this host (the sidecar's dialLocalEndpoints): no dial guard. */
  readonly dialLocalEndpoints?: boolean
  /**
   * This sidecar's listeners, never dialled whatever an endpoint's source (dialLocalEndpoints
   * included): its inbound one only for its own `service` (the app calling its own service).
   */
  readonly ownListeners?: OwnListeners
  /** This sidecar's own service. */
  readonly service?: string
}

/** Lines logged for dials refused at an address on this host (refusedDial), at most per window: a hostile host can list many. */
const REFUSED_DIAL_LINES = 10
const REFUSED_DIAL_WINDOW_MS = 60_000

/** An endpoint as the balancer sees it: identity and weight, with the endpoint itself. */
interface Member {
  readonly id: string
  readonly weight: number
  readonly endpoint: Endpoint
}

export interface ServiceView {
  readonly service: string
  readonly endpoints: ReadonlyArray<EndpointView & { readonly source: string }>
  readonly retryBudgetAvailable: number
}

export type EndpointPick = PickResult<Member>
export type EndpointLease = Lease<Member>

/** Balancer time: monotonic ms. */
const now = (): number => performance.now()

/** Redials of an endpoint restarting: soon after its go-away, then at most every second (it is back within seconds). */
const REDIAL = { baseMs: 100, maxMs: 1000 }
/**
 * Redials of an endpoint that refused a connection, or stopped answering: it may stay down for long,
 * so at most every 5 s (as an IipClient's own reconnects), each a connect (and a TLS handshake) at
 * most; and at most half the hold window apart, so a failed redial renews the hold before it lapses.
 */
export const REFUSED_REDIAL = { baseMs: 100, maxMs: 5000 }

export class EndpointRegistry {
  private readonly services = new Map<string, ServiceBalancer<Member>>()
  /** Per service that has versioned endpoints: per subset, the endpoints outside it. */
  private readonly subsets = new Map<string, ReadonlyMap<string, ReadonlySet<string>>>()
  /**
   * The endpoints' versions of a service with more than MaxSubsetsPerService of them: a subset past
   * the cap has no exclusion set, so it is worked out per request from these (the cost of a service
   * whose hosts announce versions at will), not left without endpoints.
   */
  private readonly uncappedSubsets = new Map<string, ReadonlyArray<{ readonly id: string; readonly subset: string | undefined }>>()
  /** Per client key (clientKeyOf: address and security), its pooled client. */
  private readonly clients = new Map<string, IipClient>()
  /** Endpoints redialled in the background while held out. */
  private readonly watched = new Set<string>()
  /**
   * Per client key (address and security), the services that list it: an update closes the clients
   * of the keys it was the last to list, not what a scan of every service's members finds unlisted.
   */
  private readonly users = new Map<string, Set<string>>()
  /** Per service, the client keys of its endpoints: `users` the other way round. */
  private readonly usesOf = new Map<string, ReadonlySet<string>>()
  /** Clients made since the last update for a key no service lists: closed at the next. */
  private readonly unlisted = new Set<string>()
  private closed = false
  private readonly options: EndpointRegistryOptions
  private readonly refusedDialLines = new LogThrottle(REFUSED_DIAL_LINES, REFUSED_DIAL_WINDOW_MS)
  /** connect-failed lines of all its clients together: endpoints failing for hours are redialled per request. */
  private readonly connectFailedLines = connectFailedThrottle(true)
  /** REFUSED_REDIAL within half the hold window. */
  private readonly refusedRedial: { readonly baseMs: number; readonly maxMs: number }

  constructor(options: EndpointRegistryOptions) {
    this.options = options
    this.refusedRedial = { baseMs: REFUSED_REDIAL.baseMs, maxMs: Math.max(1, Math.min(REFUSED_REDIAL.maxMs, options.balancing.restartWindowMs / 2)) }
  }

  /** Replaces the endpoints of `service`; clients of endpoints no longer used by any service close. */
  set(service: string, endpoints: ReadonlyArray<Endpoint>): void {
    const members = endpoints.map((endpoint) => ({ id: endpointKey(endpoint), subset: endpoint.version }))
    const exclusions = subsetExclusions(members)
    if (exclusions.size === 0) this.subsets.delete(service)
    else this.subsets.set(service, exclusions)
    const over = exclusions.size === MaxSubsetsPerService && members.some((member) => member.subset !== undefined && !exclusions.has(member.subset))
    if (over && !this.uncappedSubsets.has(service)) this.options.log("endpoints.subsets-capped", { service, limit: MaxSubsetsPerService })
    if (over) this.uncappedSubsets.set(service, members)
    else this.uncappedSubsets.delete(service)
    if (endpoints.length === 0) this.services.delete(service)
    else {
      let balancer = this.services.get(service)
      if (balancer === undefined) {
        balancer = this.makeBalancer()
        this.services.set(service, balancer)
      }
      balancer.update(endpoints.map((endpoint) => ({ id: endpointKey(endpoint), weight: endpoint.weight, endpoint })), now())
    }
    this.closeUnused(service, endpoints)
  }

  endpointsOf(service: string): ReadonlyArray<Endpoint> {
    return this.services.get(service)?.endpoints.map((m) => m.endpoint) ?? []
  }

  /** Whether some endpoint of `service` has the version `subset`. */
  hasSubset(service: string, subset: string): boolean {
    return this.subsets.get(service)?.has(subset) === true || this.uncappedSubsets.get(service)?.some((member) => member.subset === subset) === true
  }

  /**
   * An endpoint for a request to `service` (within `subset` when given), leaving out those it
   * already `tried`. The key feeds consistent hashing; the client's address MethodIpHash; the URI
   * MethodURIParam. `at`: now (performance.now()), if the caller has read it.
   */
  pick(
    service: string,
    request: { readonly key?: string; readonly clientIp?: string; readonly uri?: string },
    tried?: ReadonlySet<string>,
    subset?: string,
    at: number = now()
  ): EndpointPick {
    const balancer = this.services.get(service)
    if (balancer === undefined) return { _tag: "NoEndpoint" }
    // The fields named, not spread: a spread copies through a runtime call on every request.
    const context = { now: at, key: request.key, clientIp: request.clientIp, uri: request.uri }
    if (subset === undefined) return balancer.pick(at, context, tried)
    const outside = this.outside(service, subset)
    if (outside === undefined) return { _tag: "NoEndpoint" }
    return balancer.pick(at, context, leftOut(outside, tried))
  }

  /** The endpoints of `service` outside `subset`, or undefined when no endpoint has that version. */
  private outside(service: string, subset: string): ReadonlySet<string> | undefined {
    const outside = this.subsets.get(service)?.get(subset)
    if (outside !== undefined) return outside
    const members = this.uncappedSubsets.get(service)
    if (members === undefined || !members.some((member) => member.subset === subset)) return undefined
    return new Set(members.flatMap((member) => (member.subset === subset ? [] : [member.id])))
  }

  /** A first try of a request to `service` goes out: it adds to the retry budget. `at`: now (performance.now()), if the caller has read it. */
  countRequest(service: string, at: number = now()): void {
    this.services.get(service)?.retryBudget.deposit(at)
  }

  /** Whether another endpoint of `service` (within `subset` when given) than those `tried` could take a retry now. */
  hasUntried(service: string, tried: ReadonlySet<string>, subset?: string): boolean {
    if (subset === undefined) return this.services.get(service)?.hasUntried(now(), tried) ?? false
    const outside = this.outside(service, subset)
    return outside !== undefined && (this.services.get(service)?.hasUntried(now(), leftOut(outside, tried)) ?? false)
  }

  /** Whether the retry budget of `service` allows one more retry now (and counts it if so). */
  allowRetry(service: string): boolean {
    return this.services.get(service)?.retryBudget.tryWithdraw(now()) ?? false
  }

  /**
   * Ends a lease now: `ok` false for a failure of the endpoint, `unreachable` when no connection
   * could be made (held out, redialled here), `slow` when given up for taking too long. Returns an
   * ejection it caused. `at`: now (performance.now()), if the caller has read it.
   */
  endLease(lease: EndpointLease, startedAt: number, ok: boolean, unreachable = false, slow = false, at: number = now()): string | undefined {
    const result = lease.end(at, at - startedAt, ok, unreachable, slow)
    if (result !== "restarting" && result !== "refused") return result
    this.options.onRefused?.(lease.endpoint.endpoint.service, lease.endpoint.id)
    this.watch(lease.endpoint.id, clientKeyOf(lease.endpoint.endpoint, this.options.service))
    return undefined
  }

  /**
   * A try on `lease` was not dialled (ConnectFailed `notPeer`): its endpoint came from another host
   * and its address is on this host (`not-peer`), or it is this sidecar's own listener (`own-listener`). Counted and logged (throttled); the caller ends the lease as
   * unreachable, so the balancer holds the endpoint out as it does one refusing connections.
   */
  refusedDial(service: string, lease: EndpointLease, reason: DialRefusal): void {
    this.options.onDialRefused?.(service, lease.endpoint.id)
    const admitted = this.refusedDialLines.admit()
    if (admitted !== undefined) this.options.log("endpoints.dial-refused", { service, endpoint: lease.endpoint.id, source: lease.endpoint.endpoint.source, reason, ...admitted })
  }

  /** The admin API's weight override; undefined returns to discovery's. False if there is no such endpoint. */
  overrideWeight(service: string, address: string, weight: number | undefined): boolean {
    return this.services.get(service)?.overrideWeight(address, weight) ?? false
  }

  /** Active health checks: a connect and a ping to every endpoint, each result fed to its balancer. */
  async probeAll(timeoutMs: number): Promise<void> {
    const checks: Array<Promise<void>> = []
    for (const balancer of this.services.values()) {
      for (const member of balancer.endpoints) {
        checks.push(
          this.clientOf(member.endpoint).probe(timeoutMs).then(
            () => balancer.probed(member.id, now(), true),
            () => balancer.probed(member.id, now(), false)
          )
        )
      }
    }
    await Promise.all(checks)
  }

  /** For the admin JSON: per service, each endpoint's weight, latency estimate, pending count and health. */
  view(): ReadonlyArray<ServiceView> {
    const at = now()
    return [...this.services.entries()].map(([service, balancer]) => {
      const sources = new Map(balancer.endpoints.map((m) => [m.id, m.endpoint.source]))
      return {
        service,
        endpoints: balancer.view(at).map((v) => ({ ...v, source: sources.get(v.address) ?? "" })),
        retryBudgetAvailable: balancer.retryBudget.available(at)
      }
    })
  }

  /** Connections and channels this sidecar has dialed, over every endpoint's client. */
  connectionCounts(): { readonly connections: number; readonly channels: number } {
    let connections = 0
    let channels = 0
    for (const client of this.clients.values()) {
      const stats = client.stats
      connections += stats.connections
      channels += stats.channels
    }
    return { connections, channels }
  }

  /** The pooled client of an endpoint, made on first use. */
  clientOf(endpoint: Endpoint): IipClient {
    const id = clientKeyOf(endpoint, this.options.service)
    let client = this.clients.get(id)
    if (client === undefined) {
      const key = endpointKey(endpoint)
      client = new IipClient({
        host: endpoint.host,
        port: endpoint.port,
        node: this.options.node,
        requestTimeoutMs: this.options.requestTimeoutMs,
        maxMetaBytes: this.options.maxMetaBytes,
        ...(this.options.streamWindow === undefined ? {} : { streamWindow: this.options.streamWindow }),
        ...(this.options.compress ? { compression: {} } : {}),
        keepAlive: { ...defaultKeepAlive, busyIntervalMs: this.options.balancing.busyPingAfterMs, busyTimeoutMs: this.options.balancing.busyPingTimeoutMs },
        onPeerState: (state) => this.peerState(key, id, state),
        ...this.tlsOf(endpoint),
        // Another endpoint takes a request this one cannot: never wait here for a reconnect.
        waitForReconnect: false,
        // WebSockets and long streamed answers each hold a channel for their life: they get channels
        // of their own (a connection's up to half what the far side takes), never the requests';
        // an upgrade finding none left is refused at once (outboundUpgrade.ts).
        maxChannelsPerConnection: REQUEST_CHANNELS_PER_CONNECTION,
        // Unrelated callers share these channels: past them a request waits at A, never behind another's.
        pipelineAtLimit: false,
        // Requests per endpoint are bounded by each service's balancer (maxPendingPerEndpoint, up to
        // 1,000,000), WebSockets by maxTunnels: the client adds no bound of its own below those.
        maxPending: Number.POSITIVE_INFINITY,
        streamChannelsPerConnection: STREAM_CHANNELS_PER_CONNECTION,
        log: this.options.log,
        connectFailedLines: this.connectFailedLines,
        supervisor: this.options.supervisor,
        ...(endpoint.offHost === true && this.options.dialLocalEndpoints !== true ? { peersOnly: true } : {}),
        ...this.notSelfOf(endpoint)
      })
      this.clients.set(id, client)
      if (!this.users.has(id)) this.unlisted.add(id)
    }
    return client
  }

  /** The own listeners an endpoint's client must never reach: all of them, but the inbound one for the sidecar's own service. */
  private notSelfOf(endpoint: Endpoint): { readonly notSelf?: SelfDialCheck } {
    const listeners = this.options.ownListeners
    if (listeners === undefined) return {}
    return { notSelf: endpoint.service === this.options.service ? listeners.exceptServing : listeners.all }
  }

  private tlsOf(endpoint: Endpoint): { readonly tls?: ClientTlsOptions } {
    const tls = this.options.clientTls?.(endpoint)
    return tls === undefined ? {} : { tls }
  }

  close(): void {
    this.closed = true
    for (const client of this.clients.values()) client.close()
    this.clients.clear()
    this.services.clear()
    this.subsets.clear()
    this.uncappedSubsets.clear()
    this.users.clear()
    this.usesOf.clear()
    this.unlisted.clear()
  }

  /**
   * Updates the index of what `service` lists to `endpoints`, and closes the clients of the keys no
   * service lists any more, and of those made unlisted since the last update.
   */
  private closeUnused(service: string, endpoints: ReadonlyArray<Endpoint>): void {
    const before = this.usesOf.get(service)
    const after = new Set<string>()
    for (const endpoint of endpoints) after.add(clientKeyOf(endpoint, this.options.service))
    if (after.size === 0) this.usesOf.delete(service)
    else this.usesOf.set(service, after)
    for (const id of after) {
      if (before?.has(id) === true) continue
      let services = this.users.get(id)
      if (services === undefined) {
        services = new Set()
        this.users.set(id, services)
      }
      services.add(service)
    }
    if (before !== undefined) {
      for (const id of before) {
        if (after.has(id)) continue
        const services = this.users.get(id)!
        services.delete(service)
        if (services.size === 0) {
          this.users.delete(id)
          this.closeClient(id)
        }
      }
    }
    for (const id of this.unlisted) if (!this.users.has(id)) this.closeClient(id)
    this.unlisted.clear()
  }

  /** Closes the client of `id` (if any): its connections are not what discovery says. */
  private closeClient(id: string): void {
    const client = this.clients.get(id)
    if (client === undefined) return
    client.close()
    this.clients.delete(id)
  }

  /** A client's news of its peer, for every service the endpoint serves. */
  private peerState(key: string, id: string, state: "go-away" | "unresponsive"): void {
    const at = now()
    for (const balancer of this.services.values()) {
      if (state === "go-away") balancer.wentAway(key, at)
      else balancer.unresponsive(key, at)
    }
    if (state === "unresponsive") this.watch(key, id)
  }

  /** Why some service holds the endpoint at `key` out ("restarting" first: it redials soonest), or undefined. */
  private heldFor(key: string, at: number): HoldReason | undefined {
    let reason: HoldReason | undefined
    for (const balancer of this.services.values()) {
      const held = balancer.heldFor(key, at)
      if (held === "restarting") return held
      reason ??= held
    }
    return reason
  }

  /**
   * Redials a held-out endpoint (address `key`, through the client `id`) until a connection succeeds
   * (back in) or the hold ends; a failed redial holds it out a while longer where it is held.
   */
  private watch(key: string, id: string): void {
    if (this.closed || this.watched.has(key)) return
    this.watched.add(key)
    const registry = this
    this.options.supervisor.fork(
      Effect.gen(function*() {
        let failures = 0
        // The backoff's delays slept so far: past one hold window the redials stop (below).
        let waitedMs = 0
        // Held as refused, a dial failed just now: one at once would meet the same refusal (a TLS
        // handshake, or the connect timeout again), so the first redial waits the backoff's first step.
        if (registry.heldFor(key, now()) === "refused") {
          const delay = backoffDelay(failures++, registry.refusedRedial, Math.random())
          waitedMs += delay
          yield* Effect.sleep(delay)
        }
        for (; !registry.closed; failures++) {
          const reason = registry.heldFor(key, now())
          const client = registry.clients.get(id)
          if (reason === undefined || client === undefined) return
          const dialedAt = now()
          const connected = yield* Effect.promise(() => client.mode().then(() => true, () => false))
          if (registry.closed) return
          if (connected) {
            for (const balancer of registry.services.values()) balancer.connected(key)
            return
          }
          const at = now()
          for (const balancer of registry.services.values()) balancer.redialFailed(key, at, dialedAt)
          const delay = backoffDelay(failures, reason === "restarting" ? REDIAL : registry.refusedRedial, Math.random())
          // Still down after a hold window of redials: no more. Its hold lapses (the failed redial
          // just now renewed it once more), and the next try that meets a refusal holds it and starts
          // the redials again: an endpoint down for hours costs dials only while requests want it (a
          // thousand such endpoints, each redialled every 5 s forever, were 200-400 connects, or TLS
          // handshakes, a second with no request at all).
          waitedMs += delay
          if (waitedMs > registry.options.balancing.restartWindowMs) return
          yield* Effect.sleep(delay)
        }
      }).pipe(Effect.ensuring(Effect.sync(() => registry.watched.delete(key))))
    )
  }

  private makeBalancer(): ServiceBalancer<Member> {
    const b = this.options.balancing
    return new ServiceBalancer<Member>({
      picker: b.picker,
      ...(b.paramKey === undefined ? {} : { paramKey: b.paramKey }),
      maxPendingPerEndpoint: b.maxPendingPerEndpoint,
      retryBudget: { ratio: b.retryBudgetRatio, minPerSecond: b.retryBudgetMinPerSecond },
      outlier: {
        consecutiveFailures: b.ejectConsecutiveFailures,
        errorRatePercent: b.ejectErrorRatePercent,
        baseEjectionMs: b.ejectionBaseMs,
        maxEjectionMs: b.ejectionMaxMs,
        maxEjectedPercent: b.maxEjectedPercent
      },
      // This registry redials held endpoints (watch): one whose connection fails is held out too.
      holdOut: { windowMs: b.restartWindowMs, holdRefused: true }
    })
  }
}
