// The inbound limiter's key for a caller without an identity (src/sidecar/rateLimits.ts): its
// source, an IPv6 one's prefix (sourceKeyOf), with the last peer's key kept. Requests of different
// peers interleave (many peer sidecars, each over a few connections): the kept key must be the
// one of the very address asked about, never a neighbour's. The limiter itself, no sockets: the
// real-address path is rate-limit-ipv6.test.ts.
import { expect, it } from "vitest"
import { compileRateLimits, makeInboundLimiter } from "../../src/sidecar/rateLimits.ts"
import { makeMetrics } from "../../src/telemetry/metrics.ts"

/** Addresses as the mesh connection gives them (src/mux/connection.ts): `${address}:${port}`, no brackets. */
const limiter = (bits: number) => {
  // One request per caller, no refill while the test looks.
  const limits = compileRateLimits([{ name: "per-caller", service: "catalog", direction: "inbound", perSecond: 0.001, burst: 1, key: "caller" }], 1024)
  const check = makeInboundLimiter(() => limits, makeMetrics(), "catalog", bits)
  return (remote: string) => (check(undefined, remote, []) === undefined ? "ok" : "limited")
}

it("interleaved peers: each address counts by its own prefix, whatever the peer before it", () => {
  const take = limiter(64)
  // a1, a2: one /64; b: another /64 that shares a1's first 48 bits; v4 peers between them.
  const outcomes = ["2001:db8:0:1::a:5000", "2001:db8:0:2::b:5001", "10.0.0.1:6000", "2001:db8:0:1::c:5002", "10.0.0.2:6001", "2001:db8:0:2::d:5003", "10.0.0.1:6002", "::ffff:10.0.0.2:6003"].map(take)
  expect(outcomes).toEqual(["ok", "ok", "ok", "limited", "ok", "limited", "limited", "limited"])
})

it("--ipv6-source-prefix 128: every IPv6 address its own bucket, ports of one address one", () => {
  const take = limiter(128)
  expect(["2001:db8::1:1", "2001:db8::2:1", "2001:db8::1:2", "2001:db8::2:2"].map(take)).toEqual(["ok", "ok", "limited", "limited"])
})
