// The issuer's numeric options, as a library caller passes them to Issuer.make: a NaN, an
// Infinity, a negative or a fraction is refused at construction (OptionInvalid naming the option,
// the Effect dying as src/iip/optionLimits.ts says of Effect constructors), before it listens;
// every limit is checked as `x > limit`, so such a value would have switched the bound off.
import * as Cause from "effect/Cause"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import { beforeAll, describe, expect, it } from "vitest"
import type { IssuingCa } from "../../src/identity/caDirectory.ts"
import * as Issuer from "../../src/identity/issuer.ts"
import { OptionInvalid } from "../../src/iip/optionLimits.ts"
import { makeIssuingCa, trustDomain } from "../support/identityTest.ts"

let ca: IssuingCa
beforeAll(async () => {
  ca = await makeIssuingCa()
})

const makeWith = (overrides: Partial<Issuer.IssuerOptions>) =>
  Effect.runPromiseExit(
    Effect.scoped(
      Issuer.make({ ca, trustDomain, host: "127.0.0.1", port: 0, ...Issuer.issuerDefaults, tokenReview: undefined, joinTokens: () => [], log: () => {}, ...overrides })
    )
  )

describe("Issuer.make refuses numeric options out of range", () => {
  it.each([
    ["maxInFlight", Number.NaN],
    ["maxInFlightPerSource", Infinity],
    ["maxConnectionsPerSource", -1],
    ["handshakeRatePerSource", 0.5],
    ["handshakeBurstPerSource", Number.NaN],
    ["requestTimeoutMs", 2 ** 31],
    ["maxRequestBytes", 100],
    ["ipv6SourcePrefix", 200],
    ["leafLifetimeMs", Number.NaN]
  ] as const)("%s: %s", async (option, value) => {
    const exit = await makeWith({ [option]: value })
    expect(Exit.isFailure(exit)).toBe(true)
    if (Exit.isSuccess(exit)) return
    const defect = Cause.squash(exit.cause)
    expect(defect).toBeInstanceOf(OptionInvalid)
    expect((defect as OptionInvalid).option).toBe(`Issuer ${option}`)
  })

  it("the defaults, and each limit at its edge, start an issuer", async () => {
    const exit = await makeWith({ maxInFlight: 1, handshakeRatePerSource: 1_000_000, ipv6SourcePrefix: 128, leafLifetimeMs: 4_000 })
    expect(Exit.isSuccess(exit)).toBe(true)
  })
})
