// The sidecar's workload identity, as its settings ask: from the issuer (a ServiceAccount token or
// a join token as proof) or, in development, signed by the sidecar itself with a CA directory's
// key. Loaded by `iip-mesh sidecar` only when one of them is configured: the X.509 library costs
// memory a sidecar without identities should not pay.
import * as Data from "effect/Data"
import * as Effect from "effect/Effect"
import type * as Scope from "effect/Scope"
import type { SidecarConfig } from "../config/sidecarConfig.ts"
import { type Log, messageOf } from "../iip/log.ts"
import * as IdentityClient from "../identity/identityClient.ts"
import { defaultLeafLifetimeMs } from "../identity/certificates.ts"
import { developmentSigner, developmentTrustBundle, issuerSigner, issuerTrustBundle, readSecretFile, readTrustBundleFile } from "../identity/signers.ts"

export class IdentityConfigInvalid extends Data.TaggedError("IdentityConfigInvalid")<{ readonly message: string }> {}

/**
 * The identity client the settings describe: its first credentials obtained (retrying while the
 * issuer is unreachable), renewed for the scope's life, its trust bundle fetched again between
 * renewals (the issuer's GET /v1/bundle, or the development CA directory's bundle.pem). The issuer
 * is verified against the --trust-bundle file and, once there is one, the bundle held.
 */
export const sidecarIdentity = (config: SidecarConfig, log: Log): Effect.Effect<IdentityClient.IdentityClient, IdentityConfigInvalid, Scope.Scope> =>
  Effect.gen(function*() {
    const serviceId = yield* Effect.try({
      try: () => IdentityClient.requestedServiceId(config.trustDomain, config.service),
      catch: (error) => new IdentityConfigInvalid({ message: messageOf(error) })
    })
    if (config.identityDevCaDir !== null) {
      const caDir = config.identityDevCaDir
      const signer = yield* Effect.try({
        try: () => developmentSigner({ caDir, leafLifetimeMs: defaultLeafLifetimeMs, log }),
        catch: (error) => new IdentityConfigInvalid({ message: `identityDevCaDir: ${messageOf(error)}` })
      })
      return yield* IdentityClient.make({
        signer,
        fetchTrustBundle: developmentTrustBundle(caDir),
        bundleRefreshMs: config.identityBundleRefreshMs,
        trustDomain: config.trustDomain,
        requestedId: serviceId,
        log
      })
    }
    const { identityIssuer, identityTokenFile, identityJoinTokenFile, trustBundleFile } = config
    if (identityIssuer === null || trustBundleFile === null) return yield* new IdentityConfigInvalid({ message: "identityIssuer and trustBundleFile are required" })
    let client: IdentityClient.IdentityClient | undefined
    const issuer = {
      issuerUrl: identityIssuer,
      trustDomain: config.trustDomain,
      // The roots configured, and those of the bundle held: it came from the issuer over a
      // connection verified the same way, so it is as trusted as the file. After a rotation's
      // switch the issuer's own leaf chains to the new root, which the file may not hold yet (a
      // ConfigMap that lags): a running sidecar must still reach its issuer (a starting one has
      // only the file to verify it with).
      // Read off the event loop and bounded: a FIFO or a huge file fails the call (naming the file),
      // and the identity client keeps the credentials and the bundle it holds.
      trustBundle: async () => {
        const configured = await readTrustBundleFile(trustBundleFile)
        return client === undefined ? configured : `${configured}\n${client.current().trustBundlePem}`
      },
      timeoutMs: config.identityRequestTimeoutMs
    }
    const signer = issuerSigner({
      ...issuer,
      // Once held, the credentials renew themselves: past the join token's end they are the proof.
      credentials: () => client?.current(),
      proof: () =>
        identityTokenFile !== null
          ? { kind: "kubernetes", token: readSecretFile(identityTokenFile) }
          : { kind: "join", token: readSecretFile(identityJoinTokenFile ?? "") }
    })
    // With a ServiceAccount token the issuer decides the identity (the sidecar does not know its
    // account's name); with a join token the sidecar asks for its service's.
    client = yield* IdentityClient.make({
      signer,
      fetchTrustBundle: issuerTrustBundle(issuer),
      bundleRefreshMs: config.identityBundleRefreshMs,
      trustDomain: config.trustDomain,
      requestedId: identityTokenFile !== null ? undefined : serviceId,
      log
    })
    return client
  })
