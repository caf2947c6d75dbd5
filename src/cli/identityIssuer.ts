// `iip-mesh identity --ca-dir D [flags]`: runs the issuer (src/identity/issuer.ts) with the
// intermediate and bundle from D (the `ca init` directory, or a Kubernetes Secret mounted there).
// In a cluster it checks ServiceAccount tokens with TokenReview (its own in-cluster credentials);
// join tokens come from a file (each ends: its expires=, else --join-token-ttl after the file was written),
// re-read when it changes (joinTokensFile.ts), so adding or revoking a token needs no restart. The
// CA directory is re-read periodically, so a rotation step (a Secret update) needs no restart
// either. Runs until SIGTERM.
import * as Console from "effect/Console"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import { Command, Flag } from "effect/cli"
import { messageOf, stderrLog } from "../iip/log.ts"
import { IPV6_SOURCE_PREFIX } from "../iip/sourceKey.ts"
import { caDirectoryVersion, checkTrustDomain, loadIssuingCa } from "../identity/caDirectory.ts"
import * as Issuer from "../identity/issuer.ts"
import { type JoinTokensWatch, watchJoinTokensFile } from "../identity/joinTokensFile.ts"
import { inClusterTokenReview } from "../identity/proofs.ts"
import { defaultTrustDomain } from "../identity/spiffe.ts"
import { ArgumentError, parseDuration, parseHostPort, parseSize, parseWith } from "./args.ts"

export const defaultIssuerAudience = "iip-mesh-identity"

/** The join-token file is stat'ed this often besides its watch (as the sidecar's policy and routes files). */
const joinTokensPollMs = 5_000

const flags = {
  caDir: Flag.String("ca-dir").pipe(Flag.withDescription("directory with intermediate.pem, intermediate.key.pem and bundle.pem (ca init, or the mounted Secret)")),
  listen: Flag.String("listen").pipe(Flag.withDescription("HOST:PORT of the HTTPS listener (default 127.0.0.1:8443)"), Flag.withDefault("127.0.0.1:8443")),
  trustDomain: Flag.String("trust-domain").pipe(Flag.withDescription("the mesh's trust domain (default: the one the intermediate names, else iip-mesh.local)"), Flag.optional),
  leafLifetime: Flag.String("leaf-lifetime").pipe(Flag.withDescription("lifetime of the certificates signed, e.g. 24h or 90m (default 24h)"), Flag.withDefault("24h")),
  audience: Flag.String("audience").pipe(Flag.withDescription(`the audience sidecars' ServiceAccount tokens must be minted for (default ${defaultIssuerAudience})`), Flag.withDefault(defaultIssuerAudience)),
  joinTokens: Flag.String("join-tokens").pipe(
    Flag.withDescription("file of join tokens: TOKEN SERVICE[,SERVICE...] [expires=RFC3339-TIME] per line (TOKEN may be sha256:<hex>); re-read when it changes (an invalid version keeps the last good tokens)"),
    Flag.optional
  ),
  joinTokenTtl: Flag.String("join-token-ttl").pipe(
    Flag.withDescription("a join token without expires= ends this long after its file was last written (any write starts it again for every such token), e.g. 24h or 90m (default 24h); a sidecar that joined renews with its certificate"),
    Flag.withDefault("24h")
  ),
  kubernetes: Flag.Literals("kubernetes", ["auto", "on", "off"]).pipe(
    Flag.withDescription("check ServiceAccount tokens with the TokenReview API (default auto: when running in a cluster)"),
    Flag.withDefault("auto")
  ),
  tokenReviewTimeout: Flag.String("token-review-timeout").pipe(Flag.withDescription("a TokenReview call must be answered within this (default 5s)"), Flag.withDefault("5s")),
  maxRequestSize: Flag.String("max-request-size").pipe(Flag.withDescription("largest request body (default 16KiB)"), Flag.withDefault("16KiB")),
  requestTimeout: Flag.String("request-timeout").pipe(Flag.withDescription("a request must be received and answered within this (default 10s)"), Flag.withDefault("10s")),
  caReloadInterval: Flag.String("ca-reload-interval").pipe(
    Flag.withDescription("how often --ca-dir is re-read; a changed, valid CA replaces the current one (a rotation step) (default 30s)"),
    Flag.withDefault("30s")
  ),
  maxConnections: Flag.Int("max-connections").pipe(Flag.withDescription("connections open at once; past it new ones are dropped (default 1024)"), Flag.withDefault(1024)),
  maxConnectionsPerSource: Flag.Int("max-connections-per-source").pipe(
    Flag.withDescription("of those, open from one source at once (an IPv4 address, an IPv6 --ipv6-source-prefix; TLS handshakes included); past it its new ones are closed (default 64)"),
    Flag.withDefault(64)
  ),
  handshakeRatePerSource: Flag.Int("handshake-rate-per-source").pipe(
    Flag.withDescription("TLS handshakes one source (an IPv4 address, an IPv6 --ipv6-source-prefix) may start a second, sustained; past it (and its burst) its new connections are closed at accept, before any TLS (default 20)"),
    Flag.withDefault(Issuer.issuerDefaults.handshakeRatePerSource)
  ),
  handshakeBurstPerSource: Flag.Int("handshake-burst-per-source").pipe(
    Flag.withDescription("and at once, from a full bucket: sidecars behind one source (a NAT, an IPv6 --ipv6-source-prefix) starting together (default 40)"),
    Flag.withDefault(Issuer.issuerDefaults.handshakeBurstPerSource)
  ),
  ipv6SourcePrefix: Flag.Int("ipv6-source-prefix").pipe(
    Flag.withDescription("the per-source limits count an IPv6 peer by this prefix of its address: 64, a LAN host's block; 80 where nodes share a /64, a /80 each (EKS); 128 where a peer can send from its own address only (default 64)"),
    Flag.withDefault(Issuer.issuerDefaults.ipv6SourcePrefix)
  ),
  maxInFlight: Flag.Int("max-in-flight").pipe(Flag.withDescription("signings in progress at once; past it requests are refused overloaded (default 64)"), Flag.withDefault(64)),
  maxInFlightPerSource: Flag.Int("max-in-flight-per-source").pipe(
    Flag.withDescription("of those, for one source at once (an IPv4 address, an IPv6 --ipv6-source-prefix; 4 at most per connection); past it its requests are refused too-many-requests (default 16)"),
    Flag.withDefault(16)
  )
}

const bounded = (name: string, value: number, min: number, max: number): number => {
  if (!(value >= min && value <= max)) throw new ArgumentError({ message: `--${name}: expected ${min}..${max}, got ${value}` })
  return value
}

/**
 * Re-reads the CA directory every `intervalMs`: a changed CA that loads and verifies replaces the
 * issuer's (the steps of a root rotation, or a new intermediate, without a restart); one that does
 * not is logged once and the current CA stays.
 */
const watchCaDirectory = (dir: string, trustDomain: string, intervalMs: number, issuer: Issuer.Issuer) =>
  Effect.gen(function*() {
    let seen = caDirectoryVersion(dir)
    for (;;) {
      yield* Effect.sleep(intervalMs)
      const now = caDirectoryVersion(dir)
      if (now === seen) continue
      seen = now
      const loaded = yield* Effect.result(Effect.try({ try: () => loadIssuingCa(dir), catch: (error) => error }))
      if (loaded._tag === "Failure") {
        stderrLog("identity-ca-reload-failed", { dir, error: messageOf(loaded.failure), keeping: "the current CA" })
        continue
      }
      if (loaded.success.trustDomain !== undefined && loaded.success.trustDomain !== trustDomain) {
        stderrLog("identity-ca-reload-failed", { dir, error: `the new intermediate names trust domain ${loaded.success.trustDomain}, not ${trustDomain}`, keeping: "the current CA" })
        continue
      }
      const replaced = yield* Effect.result(Effect.tryPromise({ try: () => issuer.replaceCa(loaded.success), catch: (error) => error }))
      if (replaced._tag === "Failure") stderrLog("identity-ca-reload-failed", { dir, error: messageOf(replaced.failure), keeping: "the current CA" })
    }
  })

export const identityIssuer = Command.make("identity", flags, (input) =>
  Effect.gen(function*() {
    const { host, port } = yield* parseWith(() => parseHostPort(input.listen))
    const leafLifetimeMs = yield* parseWith(() => bounded("leaf-lifetime", parseDuration(input.leafLifetime, 366 * 86_400_000), 60_000, 366 * 86_400_000))
    const tokenReviewTimeoutMs = yield* parseWith(() => bounded("token-review-timeout", parseDuration(input.tokenReviewTimeout), 100, 60_000))
    const maxRequestBytes = yield* parseWith(() => bounded("max-request-size", parseSize(input.maxRequestSize), 4096, 1024 * 1024))
    const requestTimeoutMs = yield* parseWith(() => bounded("request-timeout", parseDuration(input.requestTimeout), 100, 300_000))
    const maxInFlight = yield* parseWith(() => bounded("max-in-flight", input.maxInFlight, 1, 100_000))
    const maxConnections = yield* parseWith(() => bounded("max-connections", input.maxConnections, 1, 1_000_000))
    const maxInFlightPerSource = yield* parseWith(() => bounded("max-in-flight-per-source", input.maxInFlightPerSource, 1, 100_000))
    const maxConnectionsPerSource = yield* parseWith(() => bounded("max-connections-per-source", input.maxConnectionsPerSource, 1, 1_000_000))
    const handshakeRatePerSource = yield* parseWith(() => bounded("handshake-rate-per-source", input.handshakeRatePerSource, 1, 1_000_000))
    const handshakeBurstPerSource = yield* parseWith(() => bounded("handshake-burst-per-source", input.handshakeBurstPerSource, 1, 1_000_000))
    const ipv6SourcePrefix = yield* parseWith(() => bounded("ipv6-source-prefix", input.ipv6SourcePrefix, IPV6_SOURCE_PREFIX.min, IPV6_SOURCE_PREFIX.max))
    const caReloadMs = yield* parseWith(() => bounded("ca-reload-interval", parseDuration(input.caReloadInterval), 100, 3_600_000))
    const joinTokenTtlMs = yield* parseWith(() => bounded("join-token-ttl", parseDuration(input.joinTokenTtl, 366 * 86_400_000), 60_000, 366 * 86_400_000))
    const ca = yield* Effect.try({ try: () => loadIssuingCa(input.caDir), catch: (error) => error })
    const trustDomain = yield* Effect.try({
      try: () => {
        const named = Option.getOrUndefined(input.trustDomain)
        if (named !== undefined && ca.trustDomain !== undefined && named !== ca.trustDomain) {
          throw new ArgumentError({ message: `--trust-domain ${named}: the intermediate names trust domain ${ca.trustDomain}` })
        }
        return checkTrustDomain(named ?? ca.trustDomain ?? defaultTrustDomain)
      },
      catch: (error) => error
    })
    const joinTokensFile = Option.getOrUndefined(input.joinTokens)
    // Closed with the scope, so the watch and its poll end with the issuer.
    const joinTokensWatch: JoinTokensWatch | undefined = joinTokensFile === undefined ? undefined : yield* Effect.acquireRelease(
      Effect.promise(() => watchJoinTokensFile({ path: joinTokensFile, defaultTtlMs: joinTokenTtlMs, pollMs: joinTokensPollMs, log: stderrLog })).pipe(
        Effect.flatMap((loaded) => loaded._tag === "Success" ? Effect.succeed(loaded.success) : Effect.fail(new ArgumentError({ message: `--join-tokens: ${loaded.failure.message}` })))
      ),
      (watch) => Effect.sync(() => watch.close())
    )
    const joinTokens = joinTokensWatch?.current ?? (() => [])
    const inCluster = input.kubernetes === "off" ? undefined : yield* Effect.try({
      try: () => inClusterTokenReview(process.env, input.audience, tokenReviewTimeoutMs),
      catch: (error) => new ArgumentError({ message: `cannot read the in-cluster ServiceAccount credentials: ${messageOf(error)}` })
    })
    if (input.kubernetes === "on" && inCluster === undefined) {
      return yield* new ArgumentError({ message: "--kubernetes on: not running in a cluster (KUBERNETES_SERVICE_HOST is not set)" })
    }
    if (inCluster === undefined && joinTokens().length === 0) {
      return yield* new ArgumentError({ message: "no proof is accepted: run in a cluster (TokenReview) or give --join-tokens" })
    }
    const issuer = yield* Issuer.make({
      ca,
      trustDomain,
      host,
      port,
      leafLifetimeMs,
      tokenReview: inCluster,
      joinTokens,
      ...(joinTokensWatch === undefined ? {} : { joinTokenReloads: joinTokensWatch.reloads }),
      maxRequestBytes,
      requestTimeoutMs,
      maxInFlight,
      maxInFlightPerSource,
      maxConnections,
      maxConnectionsPerSource,
      handshakeRatePerSource,
      handshakeBurstPerSource,
      ipv6SourcePrefix,
      log: stderrLog
    })
    yield* Effect.forkScoped(watchCaDirectory(input.caDir, trustDomain, caReloadMs, issuer))
    yield* Console.log(JSON.stringify({ event: "identity-ready", listen: `${issuer.host}:${issuer.port}`, trustDomain, kubernetes: inCluster !== undefined, joinTokens: joinTokens().length }))
    return yield* Effect.never
  }).pipe(
    Effect.scoped,
    Effect.catch((error) =>
      Effect.sync(() => {
        process.stderr.write(`iip-mesh identity: ${messageOf(error)}\n`)
        process.exitCode = 1
      })
    )
  )
).pipe(Command.withDescription("Run the identity issuer: signs sidecars' certificate requests (ServiceAccount tokens via TokenReview, join tokens)"))
