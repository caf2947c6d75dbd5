// A renewal in flight when the sidecar's identity client stops (its scope closes: the sidecar is
// stopping) is abandoned with it: the sign call's connection to an issuer that never answers
// closes at once, not at the call's timeout (10 s here), whose timer held a stopping process.
import { describe, expect, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Scope from "effect/Scope"
import { TestClock } from "effect/testing"
import { issueLeaf } from "../../src/identity/certificates.ts"
import { readCertificateRequest } from "../../src/identity/certificateRequest.ts"
import * as IdentityClient from "../../src/identity/identityClient.ts"
import { issuerSigner } from "../../src/identity/signers.ts"
import { eventually, makeIssuingCa, silentServer, trustDomain } from "../support/identityTest.ts"

const hour = 3_600_000

describe("a renewal in flight", () => {
  it.effect("is abandoned when the client's scope closes: its connection to an issuer that never answers closes at once, not at the call's timeout", () =>
    Effect.gen(function*() {
      yield* TestClock.setTime(Date.now())
      const ca = yield* Effect.promise(() => makeIssuingCa())
      const { port, state } = yield* silentServer
      const toIssuer = issuerSigner({ issuerUrl: `https://127.0.0.1:${port}`, trustDomain, trustBundle: () => ca.trustBundlePem, proof: () => ({ kind: "join", token: "j".repeat(40) }), timeoutMs: 10_000 })
      // The first credentials in-process; the renewal goes to the silent issuer.
      let calls = 0
      const signer: IdentityClient.Signer = async (csr, signal) => {
        if (calls++ > 0) return toIssuer(csr, signal)
        const request = await readCertificateRequest(csr)
        const leaf = await issueLeaf(ca.intermediate, { spiffeId: request.requestedId!, publicKey: request.publicKey, lifetimeMs: 10 * hour })
        return { spiffeId: request.requestedId!, certificateChainPem: leaf + ca.intermediate.certificatePem, trustBundlePem: ca.trustBundlePem, notAfter: "" }
      }
      const scope = yield* Scope.make()
      yield* IdentityClient.make({ signer, trustDomain, requestedId: `spiffe://${trustDomain}/svc/catalog`, log: () => {} }).pipe(Scope.provide(scope))
      // Past the renewal (70 % +- 5 % of 10 h).
      yield* TestClock.adjust(8 * hour)
      yield* eventually(() => state.held.size === 1)
      yield* Scope.close(scope, Exit.void)
      yield* eventually(() => state.closed === 1, 2_000)
      expect(calls).toBe(2)
    }).pipe(Effect.scoped))
})
