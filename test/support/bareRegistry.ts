// An EndpointRegistry (src/sidecar/endpoints.ts) with no sidecar around it, for the tests of its
// updates: fixed balancing settings, no logging; the caller closes it.
import { Supervisor } from "../../src/iip/supervisor.ts"
import { type BalancingOptions, EndpointRegistry } from "../../src/sidecar/endpoints.ts"

export const balancing: BalancingOptions = {
  picker: "p2c",
  maxPendingPerEndpoint: 1000,
  retryBudgetRatio: 0.2,
  retryBudgetMinPerSecond: 10,
  ejectConsecutiveFailures: 5,
  ejectErrorRatePercent: 50,
  ejectionBaseMs: 1000,
  ejectionMaxMs: 30_000,
  maxEjectedPercent: 50,
  restartWindowMs: 5000,
  busyPingAfterMs: 1000,
  busyPingTimeoutMs: 1000
}

export const bareRegistry = (): EndpointRegistry =>
  new EndpointRegistry({ node: "test", requestTimeoutMs: 1000, compress: false, maxMetaBytes: 65_535, balancing, log: () => {}, supervisor: new Supervisor() })
