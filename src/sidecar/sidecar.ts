// One sidecar: the inbound IIP server in front of the local app (behind the authorization policy),
// the outbound HTTP listener for the app's calls, and the endpoint registry between them; with
// credentials, every connection between sidecars runs inside mutual TLS (meshTls.ts). Its lifetime is a Scope: closing it
// (SIGTERM) turns it not ready, drains the IIP connections, lets in-flight requests finish
// within the drain timeout, then closes everything.
import type { KubeConfig } from "@kubernetes/client-node"
import * as Effect from "effect/Effect"
import * as Result from "effect/Result"
import type * as Scope from "effect/Scope"
import * as net from "node:net"
import * as Server from "../iip/server.ts"
import { jsonLine, type Log, LogThrottle, stderrLog } from "../iip/log.ts"
import { loggable, redactUrl } from "../iip/redact.ts"
import { droppedLines as droppedOutputLines, stdoutLines } from "../iip/outputLines.ts"
import { OwnListeners } from "../iip/ownListeners.ts"
import { Supervisor } from "../iip/supervisor.ts"
import { monotonicMillis } from "../mux/clock.ts"
import type { MeshSession } from "../mux/meshSession.ts"
import { MeshDefaults } from "../protocol/mesh.ts"
import { setReadSlabPoolBytes } from "../mux/readSlabs.ts"
import type { SidecarConfig } from "../config/sidecarConfig.ts"
import type { CredentialSource } from "../identity/credentials.ts"
import { Discovery } from "../discovery/discovery.ts"
import { dnsSrvSource } from "../discovery/dnsSrvSource.ts"
import { directorySource } from "../discovery/directorySource.ts"
import { MdnsSource } from "../discovery/mdnsSource.ts"
import { configSource, fileSource } from "../discovery/staticSource.ts"
import { makeMetrics, type MeshMetrics, NO_TUNNEL_REFUSALS } from "../telemetry/metrics.ts"
import type { Env } from "../telemetry/otelEnv.ts"
import { TraceStore } from "../telemetry/traceStore.ts"
import { makeTracing } from "../telemetry/tracing.ts"
import { allowAllPolicy } from "../identity/policy.ts"
import { type PolicyFileInvalid, watchPolicyFile } from "../identity/policyFile.ts"
import { serviceSpiffeId } from "../identity/spiffe.ts"
import { InboundAuthorization } from "./authorization.ts"
import { feedRegistry } from "./discoveryFeed.ts"
import { type BalancingOptions, EndpointRegistry } from "./endpoints.ts"
import { makeInboundHandler } from "./inbound.ts"
import { MeshTls, MtlsUnavailable, readCredentialsDir } from "./meshTls.ts"
import type { SidecarTelemetry } from "./observe.ts"
import { makeOutboundHandler } from "./outbound.ts"
import { bodyDeadlines } from "./outboundBody.ts"
import { ANSWER_FIRST_WINDOW } from "./outboundOptions.ts"
import type { AccessRecord } from "./outboundAccess.ts"
import { Http1Listener } from "./http1Listener.ts"
import { BodyCredit } from "./h2BodyCredit.ts"
import type { H2Listener } from "./outboundH2.ts"
import { makeUpgradeHandler } from "./outboundUpgrade.ts"
import { makeInboundLimiter } from "./rateLimits.ts"
import { type CompiledRoutes, routesInForce } from "./routes.ts"
import { type RoutesFileInvalid, watchRoutesFile } from "./routesFile.ts"
import { TunnelSeats } from "./tunnelSeats.ts"
import { TunnelStalls } from "./tunnelStalls.ts"
import { nodeHttp } from "../toolkit/nodeHttp.ts"

export interface HostPort {
  readonly host: string
  readonly port: number
}

export const splitAddress = (address: string): HostPort => {
  const colon = address.lastIndexOf(":")
  const host = address.slice(0, colon)
  return { host: host.startsWith("[") ? host.slice(1, -1) : host, port: Number(address.slice(colon + 1)) }
}

export interface Sidecar {
  readonly config: SidecarConfig
  readonly registry: EndpointRegistry
  readonly discovery: Discovery
  readonly outbound: HostPort
  readonly inbound: HostPort
  /** False from the moment a stop begins. */
  readonly ready: () => boolean
  /** Marks the sidecar not ready: the first step of a stop, before anything closes. */
  readonly beginStop: () => void
  readonly inFlight: () => number
  readonly telemetry: SidecarTelemetry
  /** The routes in force (file and HTTPRoutes), or undefined when none are configured. */
  readonly routes: () => CompiledRoutes | undefined
  /** Where this process listens (the sidecar's listeners and options.ownListeners): never dialled for a discovered peer. */
  readonly ownListeners: OwnListeners
  /** Closes the idle keep-alive sockets to the app but the most recently used one (the memory release's, once quiet); how many it closed, 0 without an app. */
  readonly closeIdleAppSockets: () => number
}

export interface SidecarOptions {
  /** Where finished spans are kept; sidecars in one process may share one (the demo does). */
  readonly traces?: TraceStore
  /** The OTEL_* variables (default process.env). */
  readonly env?: Env
  /**
   * Told of each mesh connection the inbound side accepts, before its requests are served: where
   * a test sets the connection's peerIdentity as a TLS acceptor does once it verified the peer.
   */
  readonly onInboundMeshConnection?: (session: MeshSession) => void
  /** This workload's mTLS credentials, renewed as they change (the identity client); else `tlsCredentialsDir`'s, if set. */
  readonly credentials?: CredentialSource
  /** The port of this sidecar's admin control listener, announced to discovery beside the inbound address (admin federation). */
  readonly adminPort?: number
  /** The process's other listeners (the admin's, as bound): never dialled for an endpoint, as the sidecar's own are not (src/iip/ownListeners.ts). */
  readonly ownListeners?: ReadonlyArray<HostPort>
  /** Where the Kubernetes API server is, for the EndpointSlice and HTTPRoute watches (tests); in-cluster by default. */
  readonly kubeConfig?: KubeConfig
  /** The inbound listener's connection cap (default src/iip/server.ts's; fewer under a low open-file limit: fileLimit.ts). */
  readonly inboundMaxConnections?: number
}

/** Metadata blocks up to this size, on both ends (PROTOCOL.md §17.1): HTTP heads can be larger than the library's 8 KiB default. */
const SIDECAR_META_BYTES = 60 * 1024

/**
 * The outbound listener's timeouts, node:http's as the sidecar had them: the head of a request
 * within 60 s of its first byte, the whole request within 5 min, an idle keep-alive connection
 * (HTTP/1.1, or an HTTP/2 session) closed after 60 s.
 */
const OUTBOUND_HEADERS_TIMEOUT_MS = 60_000
const OUTBOUND_REQUEST_TIMEOUT_MS = 300_000
const OUTBOUND_KEEP_ALIVE_MS = 60_000

const listen = (server: net.Server, address: HostPort) =>
  Effect.callback<HostPort, Server.ListenFailed>((resume) => {
    const onError = (error: NodeJS.ErrnoException) =>
      resume(Effect.fail(new Server.ListenFailed({ message: `cannot listen on ${address.host}:${address.port}: ${error.code ?? error.message}` })))
    server.once("error", onError)
    server.listen(address.port, address.host, () => {
      server.off("error", onError)
      const bound = server.address() as net.AddressInfo
      resume(Effect.succeed({ host: bound.address, port: bound.port }))
    })
  })

/**
 * The discovery sources the configuration asks for: static list, endpoints file, DNS SRV names,
 * Kubernetes Services (their endpoints' identities in `trustDomain`). The Kubernetes client is loaded only when a Service is to be watched: it
 * costs about 85 MB of memory and 0.8 s at start, which a sidecar off Kubernetes should not pay.
 */
const startDiscovery = (config: SidecarConfig, log: Log, trustDomain: string | undefined, kubeConfig: KubeConfig | undefined, metrics: MeshMetrics) =>
  Effect.gen(function*() {
    const discovery = new Discovery({ log })
    metrics.watchDiscoveryLeftOut(() => discovery.leftOut())
    metrics.watchLiveEndpoints((endpoint) => discovery.lists(endpoint))
    discovery.register(configSource(config.endpoints))
    if (config.endpointsFile !== null) discovery.register(fileSource({ path: config.endpointsFile, log }))
    for (const [service, name] of Object.entries(config.dnsSrv)) {
      discovery.register(dnsSrvSource({ service, name, servers: config.dnsServers, log }))
    }
    const watched = Object.entries(config.kubernetes ?? {})
    if (watched.length > 0) {
      const { kubernetesSource } = yield* Effect.promise(() => import("../discovery/kubernetesSource.ts"))
      for (const [service, namespaced] of watched) {
        const [namespace = "", names = ""] = namespaced.split("/")
        // Several (version) Services make one mesh service: one source each, merged by discovery.
        for (const kubernetesService of names.split("+")) {
          discovery.register(kubernetesSource({ service, namespace, kubernetesService, log, ...(trustDomain === undefined ? {} : { trustDomain }), ...(kubeConfig === undefined ? {} : { kubeConfig }) }))
        }
      }
    }
    return discovery
  })

const appAddressOf = (address: string) => {
  const { host, port } = splitAddress(address)
  return { appHost: host, appPort: port }
}

/** The balancing settings as the registry takes them. */
const balancingOf = (config: SidecarConfig): BalancingOptions => ({
  picker: config.loadBalancer,
  ...(config.hashKey?.startsWith("query:") === true ? { paramKey: config.hashKey.slice(6) } : {}),
  maxPendingPerEndpoint: config.maxPendingPerEndpoint,
  retryBudgetRatio: config.retryBudgetRatio,
  retryBudgetMinPerSecond: config.retryBudgetMinPerSecond,
  ejectConsecutiveFailures: config.ejectConsecutiveFailures,
  ejectErrorRatePercent: config.ejectErrorRatePercent,
  ejectionBaseMs: config.ejectionBaseMs,
  ejectionMaxMs: config.ejectionMaxMs,
  maxEjectedPercent: config.maxEjectedPercent,
  restartWindowMs: config.restartWindowMs,
  busyPingAfterMs: config.busyPingAfterMs,
  busyPingTimeoutMs: config.busyPingTimeoutMs
})

/** `trace-export-failed` lines at most, per window (as the last line of defence's: 20 a minute). */
const EXPORT_FAILED_LINES = 20
const EXPORT_FAILED_WINDOW_MS = 60_000

/** Tracing (its exporters flushed on close, within the drain timeout) and metrics. */
const makeTelemetry = (config: SidecarConfig, options: SidecarOptions, log: Log) =>
  Effect.gen(function*() {
    const exportFailures = new LogThrottle(EXPORT_FAILED_LINES, EXPORT_FAILED_WINDOW_MS)
    const traces = options.traces ?? new TraceStore(config.traceStoreRate === null ? { maxBytes: config.traceStoreBytes } : { maxNewTracesPerSecond: config.traceStoreRate, maxBytes: config.traceStoreBytes })
    const tracing = makeTracing({
      service: config.service,
      store: traces,
      enabled: config.tracing,
      instanceId: config.node,
      ...(options.env === undefined ? {} : { env: options.env }),
      // The collector's answer may echo anything, the URL with its credentials included. A
      // collector down fails every batch, several a second under load: the lines are throttled.
      onExportError: (error) => {
        const admitted = exportFailures.admit()
        if (admitted !== undefined) log("trace-export-failed", { message: loggable(redactUrl(error.message)), ...admitted })
      }
    })
    for (const warning of tracing.warnings) log("otel-setting-ignored", { ...warning })
    yield* Effect.addFinalizer(() =>
      Effect.promise(() => tracing.shutdown()).pipe(Effect.timeoutOption(config.drainTimeoutMs), Effect.asVoid)
    )
    const metrics = makeMetrics({
      log,
      golden: { self: config.service, maxRoutes: config.goldenRoutes },
      seriesIdleMs: config.metricSeriesIdleMs,
      tap: { maxListeners: config.tapListeners, ratePerSecond: config.tapRate, maxQueued: config.tapQueue }
    })
    metrics.watchDroppedSpans(() => tracing.droppedSpans)
    return { tracing, metrics, traces }
  })

const tlsOption = (meshTls: MeshTls): { readonly tls?: NonNullable<Server.ServerOptions["tls"]> } => {
  const tls = meshTls.serverOptions()
  return tls === undefined ? {} : { tls }
}

/** The inbound listener's budgets, limits and timeouts from the configuration (README, PROTOCOL.md §15). */
const inboundLimitsOf = (config: SidecarConfig): Partial<Server.ServerOptions> => ({
  maxQueuedRequestsPerConnection: config.maxQueuedRequestsPerConnection,
  maxQueuedBytesPerConnection: config.maxQueuedBytesPerConnection,
  maxQueuedRequests: config.maxQueuedRequests,
  maxQueuedBytes: config.maxQueuedBytes,
  maxQueuedWriteBytes: config.maxQueuedWriteBytes,
  maxChannelsPerConnection: config.maxChannelsPerConnection,
  maxChannels: config.maxChannels,
  connectionLimits: { maxWholeBodyBytes: config.maxWholeBodyBytes },
  firstPacketTimeoutMs: config.firstPacketTimeoutMs ?? 0,
  packetTimeoutMs: config.packetTimeoutMs ?? 0,
  idleTimeoutMs: config.idleTimeoutMs ?? 0,
  writeTimeoutMs: config.writeTimeoutMs ?? 0
})

/**
 * mTLS as configured: the mode (`mtls`, or on with credentials and off without) and the
 * credentials (the caller's, or the fixed ones of `tlsCredentialsDir`). Says in the log which.
 */
const makeMeshTls = (config: SidecarConfig, options: SidecarOptions, telemetry: SidecarTelemetry, log: Log) =>
  Effect.gen(function*() {
    const credentials = options.credentials ?? (config.tlsCredentialsDir === null ? undefined : yield* readCredentialsDir(config.tlsCredentialsDir))
    const mode = config.mtls ?? (credentials === undefined ? "off" : "on")
    const meshTls = MeshTls.make({ mode, credentials, handshakeTimeoutMs: config.tlsHandshakeTimeoutMs, metrics: telemetry.metrics, log })
    if (meshTls instanceof MtlsUnavailable) return yield* meshTls
    yield* Effect.addFinalizer(() => Effect.sync(() => meshTls.close()))
    if (mode === "off") {
      log("mtls-off", { message: "mutual TLS is OFF: connections between sidecars are plain text and unauthenticated", credentials: credentials !== undefined })
    } else {
      log("mtls", { mode, identity: meshTls.identity, ...(mode === "permissive" ? { message: "plain IIP peers are accepted (counted in iip_mesh_plain_connections_total)" } : {}) })
    }
    return meshTls
  })

/** The policy file, loaded (the start fails when it is not a policy) and watched until the Scope closes. */
const watchPolicy = (config: SidecarConfig, telemetry: SidecarTelemetry, log: Log) =>
  Effect.acquireRelease(
    Effect.promise(() =>
      watchPolicyFile({
        path: config.authzPolicy!,
        service: config.service,
        trustDomain: config.trustDomain,
        pollMs: config.authzPolicyPollMs,
        log,
        onLoad: (result) => telemetry.metrics.authzPolicyReloaded(result)
      })
    ).pipe(Effect.flatMap((loaded) => (Result.isSuccess(loaded) ? Effect.succeed(loaded.success) : Effect.fail(loaded.failure)))),
    (watch) => Effect.sync(() => watch.close())
  )

/** The routes file, loaded (the start fails when it holds no valid routes) and watched until the Scope closes. */
const watchRoutes = (config: SidecarConfig, log: Log) =>
  Effect.acquireRelease(
    Effect.promise(() => watchRoutesFile({ path: config.routes!, pollMs: config.routesPollMs, log, compile: { rateLimitKeys: config.rateLimitKeys } })).pipe(
      Effect.flatMap((loaded) => (Result.isSuccess(loaded) ? Effect.succeed(loaded.success) : Effect.fail(loaded.failure)))
    ),
    (watch) => Effect.sync(() => watch.close())
  )

/**
 * The HTTPRoutes of --kubernetes-routes' namespaces, watched until the Scope closes; the Kubernetes
 * client is loaded only then. A parent Service that --kubernetes maps to a mesh service is that service.
 */
const watchHttpRoutes = (config: SidecarConfig, options: SidecarOptions, log: Log) =>
  Effect.acquireRelease(
    Effect.promise(async () => {
      const { watchKubernetesRoutes } = await import("./kubernetesRoutes.ts")
      // Each Service --kubernetes names (NS/NAME, or NS/NAME+NAME: versions) is that mesh service.
      const meshNames = new Map(Object.entries(config.kubernetes ?? {}).flatMap(([mesh, namespaced]) => {
        const [namespace = "", names = ""] = namespaced.split("/")
        return names.split("+").map((name) => [`${namespace}/${name}`, mesh] as const)
      }))
      return watchKubernetesRoutes({
        namespaces: config.kubernetesRoutes ?? [],
        meshNameOf: (namespace, name) => meshNames.get(`${namespace}/${name}`) ?? name,
        log,
        compile: { rateLimitKeys: config.rateLimitKeys },
        ...(options.kubeConfig === undefined ? {} : { kubeConfig: options.kubeConfig })
      })
    }),
    (watch) => Effect.sync(() => watch.close())
  )

export const make = (
  config: SidecarConfig,
  log: Log = stderrLog,
  options: SidecarOptions = {}
): Effect.Effect<Sidecar, Server.ListenFailed | PolicyFileInvalid | RoutesFileInvalid | MtlsUnavailable, Scope.Scope> =>
  Effect.gen(function*() {
    const supervisor = yield* Supervisor.current
    // Process-wide: the free read slabs all TCP and TLS IIP connections share (readSlabs.ts).
    setReadSlabPoolBytes(config.readSlabPoolBytes)
    const telemetry = yield* makeTelemetry(config, options, log)
    const meshTls = yield* makeMeshTls(config, options, telemetry, log)
    /** The identity this sidecar announces to discovery: what peers must find in its certificate. */
    const announcedIdentity = meshTls.mode === "off" ? {} : { identity: meshTls.identity }
    const announcedAdmin = options.adminPort === undefined ? {} : { adminPort: options.adminPort }
    const announcedVersion = config.appVersion === null ? {} : { version: config.appVersion }
    let ready = false
    const inFlight = { value: 0 }
    // Where this sidecar listens: no endpoint, whatever its source, makes it dial itself (the
    // inbound and outbound listeners join as they are bound, before any request).
    const ownListeners = new OwnListeners()
    for (const listener of options.ownListeners ?? []) ownListeners.add(listener)
    const registry = new EndpointRegistry({
      node: config.node,
      requestTimeoutMs: config.requestTimeoutMs,
      compress: config.compress,
      maxMetaBytes: SIDECAR_META_BYTES,
      streamWindow: ANSWER_FIRST_WINDOW,
      balancing: balancingOf(config),
      log,
      supervisor,
      clientTls: (endpoint) => meshTls.clientOptions(endpoint),
      onDialRefused: (service, endpoint) => telemetry.metrics.dialRefused(service, endpoint),
      onRefused: (service, endpoint) => telemetry.metrics.endpointRefused(service, endpoint),
      dialLocalEndpoints: config.dialLocalEndpoints,
      ownListeners,
      service: config.service
    })
    yield* Effect.addFinalizer(() => Effect.sync(() => registry.close()))
    // Discovery feeds the registry: every change to a service replaces its endpoint set.
    const discovery = yield* startDiscovery(config, log, meshTls.mode === "off" ? undefined : meshTls.trustDomain, options.kubeConfig, telemetry.metrics)
    yield* Effect.addFinalizer(() => Effect.sync(() => discovery.close()))
    const stopFeed = feedRegistry(discovery, registry, log)
    yield* Effect.addFinalizer(() => Effect.sync(stopFeed))

    // Authorization: the policy file's, kept current; none: every caller is allowed.
    const policy = config.authzPolicy === null ? undefined : yield* watchPolicy(config, telemetry, log)
    const authorization = new InboundAuthorization({
      service: config.service,
      // The identity its certificate names; without credentials, the one its service name gives.
      localIdentity: meshTls.ownIdentity ?? serviceSpiffeId(config.trustDomain, config.service),
      policy: policy === undefined ? () => allowAllPolicy : policy.current,
      metrics: telemetry.metrics,
      log
    })

    // Routes and rate limits (routes.ts): the file's and the HTTPRoutes', kept current; none: only a sticky baggage member picks a subset.
    const fileRoutes = config.routes === null ? undefined : yield* watchRoutes(config, log)
    const kubernetesRoutes = (config.kubernetesRoutes ?? []).length === 0 ? undefined : yield* watchHttpRoutes(config, options, log)
    const routes = routesInForce(fileRoutes?.current, kubernetesRoutes?.current)

    // The app leg: its pool closes after the inbound server has drained (finalizers run in reverse).
    const appLeg = config.app === null ? undefined : makeInboundHandler({
      service: config.service,
      ...appAddressOf(config.app),
      telemetry,
      appPoolSize: config.appPoolSize,
      maxAnswerBytes: config.maxQueuedBytes,
      bodyIdleTimeoutMs: config.bodyIdleTimeoutMs,
      answerIdleTimeoutMs: config.answerIdleTimeoutMs,
      defaultTimeoutMs: config.inboundDefaultTimeoutMs,
      upgradeIdleTimeoutMs: config.upgradeIdleTimeoutMs,
      upgradeStallTimeoutMs: config.upgradeStallTimeoutMs,
      maxTunnels: config.maxTunnels,
      maxTunnelsPerPeer: config.maxTunnelsPerPeer,
      appH2MaxStreams: config.appH2MaxStreams,
      appH2MaxHeldBytes: config.appH2MaxHeldBytes,
      appPoolMaxHeldBytes: config.appPoolMaxHeldBytes,
      log,
      appProtocol: config.appProtocol,
      onInvalidHeaders: (count) => telemetry.metrics.invalidHeaders("inbound", count),
      authorization,
      ...(routes === undefined ? {} : { rateLimit: makeInboundLimiter(() => routes().limits, telemetry.metrics, config.service, config.ipv6SourcePrefix) })
    })
    if (appLeg !== undefined) {
      yield* Effect.addFinalizer(() => Effect.promise(() => appLeg.close()))
      telemetry.metrics.watchAnswerBytes(appLeg.answerBytes)
      telemetry.metrics.watchAppStreams(appLeg.appStreams)
    }

    // Inbound: other sidecars -> this app. Its Scope drains it on close.
    const inboundAddress = splitAddress(config.inbound)
    const inbound = yield* Server.make({
      ...inboundAddress,
      node: config.node,
      maxMetaBytes: SIDECAR_META_BYTES,
      drainTimeoutMs: config.drainTimeoutMs,
      ...inboundLimitsOf(config),
      ...(config.compress ? { compression: {} } : {}),
      ...tlsOption(meshTls),
      ipv6SourcePrefix: config.ipv6SourcePrefix,
      ...(options.inboundMaxConnections === undefined ? {} : { maxConnections: options.inboundMaxConnections }),
      onAtLimit: (result) => telemetry.metrics.inboundAtLimit(result),
      supervisor,
      log
    })
    meshTls.attach(inbound)
    ownListeners.add(inbound.address, true)
    telemetry.metrics.watchInboundPeerEvents(() => inbound.peerEvents())
    telemetry.metrics.watchConnections(() => {
      let channels = 0
      for (const session of inbound.sessions) channels += session.channelCount
      for (const session of inbound.meshSessions) channels += session.peerChannelCount
      // Evicted busy connections are open until drained (PROTOCOL.md §11): counted, and told apart.
      const evicted = inbound.evictedDraining
      return { outbound: registry.connectionCounts(), inbound: { connections: inbound.connectionCount + evicted.connections, channels: channels + evicted.channels, evictedDraining: evicted.connections } }
    })
    if (appLeg !== undefined) inbound.handlePrefix("/", appLeg.handle)
    if (options.onInboundMeshConnection !== undefined) inbound.onMeshConnection(options.onInboundMeshConnection)
    const announced = config.app === null
      ? undefined
      : { service: config.service, host: inbound.address.host, port: inbound.address.port, weight: config.weight, node: config.node, ...announcedIdentity, ...announcedAdmin, ...announcedVersion }
    if (config.localDiscovery !== null) {
      discovery.register(directorySource({ directory: config.localDiscovery, mesh: config.meshName, ...(announced === undefined ? {} : { announce: announced }), log }))
    }
    if (config.mdns) {
      // Announce the address the inbound listener really has; a sidecar with no app only browses.
      const mdns = new MdnsSource({
        mesh: config.meshName,
        node: config.node,
        announce: config.app === null ? [] : [{ service: config.service, port: inbound.address.port, address: inbound.address.host, weight: config.weight, ...announcedIdentity, ...announcedAdmin, ...announcedVersion }],
        ...(config.mdnsInterface === null ? {} : { interface: config.mdnsInterface }),
        log
      })
      discovery.register(mdns)
      // The goodbye must leave before the process does.
      yield* Effect.addFinalizer(() => Effect.promise(() => mdns.shutdown()))
    }

    // Outbound: this app -> other services.
    telemetry.metrics.watchDroppedLines(droppedOutputLines)
    const onAccess = config.accessLog
      ? (record: AccessRecord) => stdoutLines()(jsonLine({ time: new Date().toISOString(), ...record }))
      : undefined
    const eventStreamsRefused = { value: 0 }
    telemetry.metrics.watchOutboundEventStreamRefusals(() => eventStreamsRefused.value)
    const answerStreams = { bytes: 0, committed: 0, window: MeshDefaults.streamWindow, grantsHeldAbove: config.outboundMaxHeldAnswerBytes, now: () => performance.now() }
    const outboundOptions = {
      registry,
      ...(routes === undefined ? {} : { routes }),
      requestTimeoutMs: config.requestTimeoutMs,
      ...(config.perTryTimeoutMs === null ? {} : { perTryTimeoutMs: config.perTryTimeoutMs }),
      ...(config.slowTryFloorMs === null ? {} : { slowTryFloorMs: config.slowTryFloorMs }),
      ...(config.hashKey === null ? {} : { hashKey: config.hashKey }),
      telemetry,
      ...(onAccess === undefined ? {} : { onAccess }),
      inFlight,
      eventStreamsRefused,
      answerStreams,
      onInvalidHeaders: (count: number) => telemetry.metrics.invalidHeaders("outbound", count)
    }
    // The bodies outbound exchanges gather wait on one deadline heap; its timer goes with the sidecar.
    const gathers = bodyDeadlines()
    yield* Effect.addFinalizer(() => Effect.sync(() => gathers.clear()))
    const handler = makeOutboundHandler(outboundOptions, gathers)
    if (config.healthCheckIntervalMs !== null) {
      // Active checks: each round waits for the last; a check gets one interval, at least 1 s (a
      // shorter timeout would eject healthy endpoints of a busy machine).
      const interval = config.healthCheckIntervalMs
      const timeout = Math.max(1000, interval)
      yield* Effect.forkScoped(Effect.forever(Effect.sleep(interval).pipe(Effect.andThen(Effect.promise(() => registry.probeAll(timeout))))))
    }
    // h2c prior knowledge (gRPC) on the same port: each stream one request (outboundH2.ts, on src/h2):
    // it loads with the first HTTP/2 connection.
    let h2c: H2Listener | undefined
    // The stream windows its callers' request bodies may fill here, over all h2c connections (h2BodyCredit.ts); one line per refusal, throttled.
    const bodyCredit = new BodyCredit(config.outboundH2MaxHeldBodyBytes)
    const bodyRefusedLines = new LogThrottle(EXPORT_FAILED_LINES, EXPORT_FAILED_WINDOW_MS)
    let h2cLoading: Promise<H2Listener> | undefined
    const acceptH2c = (socket: net.Socket): void => {
      h2cLoading ??= import("./outboundH2.ts").then(({ ANSWER_STALLED, makeH2c }) =>
        (h2c = makeH2c(handler, {
          idleTimeoutMs: OUTBOUND_KEEP_ALIVE_MS,
          maxStreams: config.h2MaxStreams,
          answerIdleMs: config.answerIdleTimeoutMs,
          // One line per session and sweep, however many of its streams were reset.
          onStalled: (streams, session) => {
            telemetry.metrics.h2StreamsReset(ANSWER_STALLED, streams)
            log("h2-answers-stalled", { streams, remote: session.socket?.remoteAddress ?? "", idleMs: config.answerIdleTimeoutMs })
          },
          // One line per session ended: an abusive caller is ended once per connection it makes.
          onEnded: (reason, session) => {
            telemetry.metrics.h2SessionEnded(reason)
            log("h2-session-ended", { reason, remote: session.socket?.remoteAddress ?? "" })
          },
          // The HTTP/1.1 listener's budget of answers held for callers that do not read them: h2c streams count in it too.
          heldAnswers: outboundListener,
          bodyCredit,
          onBodyRefused: (own) => {
            const admitted = bodyRefusedLines.admit()
            if (admitted !== undefined) log("outbound-h2-body-refused", { granted: bodyCredit.granted, max: bodyCredit.max, connectionFirstWindows: own.granted - own.grown, connectionGrown: own.grown, connectionShare: bodyCredit.share, message: "a request with a body was refused (REFUSED_STREAM): the h2c request bodies' windows fill --outbound-h2-max-held-body-bytes, or its connection's first windows a quarter of it", ...admitted })
          }
        }))
      )
      h2cLoading.then((listener) => listener.accept(socket), () => socket.destroy())
    }
    const outboundTunnels = { seats: new TunnelSeats(config.maxTunnels), unread: { bytes: 0 }, maxUnreadBytes: config.maxQueuedBytes, stalls: new TunnelStalls(config.upgradeStallTimeoutMs, log) }
    telemetry.metrics.watchTunnelBytes(() => ({ outbound: outboundTunnels.unread.bytes, inbound: inbound.budget.tunnelBytes }))
    telemetry.metrics.watchTunnelRefusals(() => ({ outbound: outboundTunnels.seats.refused, inbound: appLeg?.tunnels.refused ?? NO_TUNNEL_REFUSALS }))
    const droppedLines = new LogThrottle(EXPORT_FAILED_LINES, EXPORT_FAILED_WINDOW_MS)
    const outboundListener = new Http1Listener({
      maxHeaderSize: nodeHttp.maxHeaderSize,
      headersTimeoutMs: OUTBOUND_HEADERS_TIMEOUT_MS,
      requestTimeoutMs: OUTBOUND_REQUEST_TIMEOUT_MS,
      keepAliveTimeoutMs: OUTBOUND_KEEP_ALIVE_MS,
      maxConnections: config.maxAppConnections,
      // Every connection past the cap would be a line: throttled as export failures are.
      onDropped: () => {
        const admitted = droppedLines.admit()
        if (admitted !== undefined) log("outbound-connections-full", { maxAppConnections: config.maxAppConnections, message: "a new app connection was closed: as many as maxAppConnections are open", ...admitted })
      },
      onRequest: handler,
      // WebSocket and other upgrades: one mesh stream each (outboundUpgrade.ts).
      onUpgrade: makeUpgradeHandler({ ...outboundOptions, upgradeIdleTimeoutMs: config.upgradeIdleTimeoutMs, tunnels: outboundTunnels }),
      onH2c: acceptH2c,
      onStray: () => telemetry.metrics.http1StrayBytes("outbound"),
      maxHeldAnswerBytes: config.maxQueuedBytes
    })
    telemetry.metrics.watchHeldAnswers(() => ({ bytes: outboundListener.heldAnswerBytes, refused: outboundListener.refusedForHeldAnswers, bodyWindowBytes: bodyCredit.granted, bodiesRefused: bodyCredit.refused, bodiesReset: bodyCredit.reset, answerStreamBytes: answerStreams.bytes, answerStreamWindowBytes: answerStreams.committed }))
    const outbound = yield* Effect.acquireRelease(listen(outboundListener.server, splitAddress(config.outbound)), () =>
      Effect.gen(function*() {
        // Stop taking new requests, let the running ones finish within the drain timeout, their
        // answers written out to the last byte (what is still cut then ends in a reset).
        ready = false
        outboundListener.close()
        h2c?.close(config.drainTimeoutMs)
        // By the clock, not by counting sleeps (on a busy machine each sleep takes longer than asked),
        // its monotonic time: a wall clock stepped back would hold the stop for the step's length.
        const deadline = (yield* monotonicMillis) + config.drainTimeoutMs
        while ((inFlight.value > 0 || outboundListener.openConnections > 0) && (yield* monotonicMillis) < deadline) yield* Effect.sleep(10)
        outboundListener.destroyAll()
        h2c?.destroyAll()
      })
    )
    ownListeners.add(outbound)
    ready = true
    // Registered last, so it runs first when the Scope closes.
    yield* Effect.addFinalizer(() => Effect.sync(() => (ready = false)))
    return {
      config,
      registry,
      discovery,
      outbound,
      inbound: inbound.address,
      ready: () => ready,
      beginStop: () => (ready = false),
      inFlight: () => inFlight.value,
      telemetry,
      routes: () => routes?.(),
      ownListeners,
      closeIdleAppSockets: () => appLeg?.closeIdleAppSockets() ?? 0
    }
  })
