// A service balancer's numeric options (src/balancer/serviceBalancer.ts, checked by
// src/iip/optionLimits.ts when it is constructed): NaN switched a bound off, as everywhere a limit
// is checked as `x > limit` (maxPendingPerEndpoint NaN: an endpoint never full; an outlier rule of
// NaN never ejects). Each is refused with OptionInvalid naming the option and the value; the
// load-balance client's `balancer` options are refused when it is constructed.
import * as Effect from "effect/Effect"
import { describe, expect, it } from "vitest"
import { ServiceBalancer, type ServiceBalancerOptions } from "../../src/balancer/serviceBalancer.ts"
import { LoadBalanceClient, make as makeLoadBalancer } from "../../src/toolkit/loadBalanceClient.ts"
import { defectOf, refusal } from "../support/optionRefusal.ts"

describe("service balancer options", () => {
  it("refuses each bound, window, share and rate out of range, naming it", () => {
    const cases: ReadonlyArray<[ServiceBalancerOptions, string]> = [
      [{ maxPendingPerEndpoint: NaN }, "ServiceBalancer maxPendingPerEndpoint"],
      [{ maxPendingPerEndpoint: 0 }, "ServiceBalancer maxPendingPerEndpoint"],
      [{ outlier: { consecutiveFailures: NaN } }, "ServiceBalancer outlier consecutiveFailures"],
      [{ outlier: { errorRatePercent: 101 } }, "ServiceBalancer outlier errorRatePercent"],
      [{ outlier: { minRequests: 1.5 } }, "ServiceBalancer outlier minRequests"],
      [{ outlier: { windowMs: Infinity } }, "ServiceBalancer outlier windowMs"],
      [{ outlier: { baseEjectionMs: -1 } }, "ServiceBalancer outlier baseEjectionMs"],
      [{ outlier: { maxEjectedPercent: NaN } }, "ServiceBalancer outlier maxEjectedPercent"],
      [{ holdOut: { windowMs: NaN } }, "ServiceBalancer holdOut windowMs"],
      [{ retryBudget: { ratio: NaN } }, "ServiceBalancer retryBudget ratio"],
      [{ retryBudget: { minPerSecond: -1 } }, "ServiceBalancer retryBudget minPerSecond"],
      [{ retryBudget: { windowMs: 0 } }, "ServiceBalancer retryBudget windowMs"],
      [{ stats: { tauMs: 0 } }, "ServiceBalancer stats tauMs"],
      [{ stats: { minSampleWeight: 2 } }, "ServiceBalancer stats minSampleWeight"],
      [{ stats: { defaultLatencyMs: NaN } }, "ServiceBalancer stats defaultLatencyMs"],
      [{ stats: { sampleCapFactor: 0.5 } }, "ServiceBalancer stats sampleCapFactor"],
      [{ stats: { penaltyTauMs: NaN } }, "ServiceBalancer stats penaltyTauMs"]
    ]
    for (const [options, option] of cases) expect(refusal(() => new ServiceBalancer(options)).option).toBe(option)
    expect(refusal(() => new LoadBalanceClient({ backends: "127.0.0.1:9#1", balancer: { maxPendingPerEndpoint: NaN } })).option).toBe("ServiceBalancer maxPendingPerEndpoint")
  })

  it("the load-balance client's Effect constructor dies with it: it is no InvalidBackendList", async () => {
    const defect = await defectOf(Effect.scoped(makeLoadBalancer({ backends: "127.0.0.1:9#1", balancer: { outlier: { windowMs: NaN } } })))
    expect(defect.option).toBe("ServiceBalancer outlier windowMs")
  })

  it("takes the documented edge values: rules off at 0, fractions where they are shares", () => {
    expect(() =>
      new ServiceBalancer({
        maxPendingPerEndpoint: 1,
        outlier: { consecutiveFailures: 0, errorRatePercent: 0, maxEjectedPercent: 0 },
        holdOut: { windowMs: 0 },
        retryBudget: { ratio: 0.2, minPerSecond: 0 },
        stats: { minSampleWeight: 0, sampleCapFactor: 1.5, staleAfterMs: 0 }
      })
    ).not.toThrow()
  })
})
