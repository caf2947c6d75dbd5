// IPv6 test addresses for a network namespace of the test's own (`unshare -rn`): a ULA /48,
// fd00:77:X::/48, claimed in the root namespace with a blackhole route (testing.md: a process
// started outside the namespace by mistake fails locally instead of sending packets out) and
// released on teardown. Used where a limit per IPv6 source must be shown with real connections
// from several addresses of one /64 (test/identity/issuerSources.test.ts, test/sidecar/rate-limit-ipv6.test.ts).
import { execFileSync, spawnSync } from "node:child_process"
import type { Capability } from "./netnsProcess.ts"

/** Whether the test can run here: root (for the blackhole route) and `unshare -rn` with an IPv6 address on its lo. */
export const probeIpv6Namespace = (): Capability => {
  if (process.getuid?.() !== 0) return { ok: false, reason: "not root (the blackhole route in the root namespace needs root)" }
  const result = spawnSync("unshare", ["-rn", "ip", "-6", "addr", "add", "fd00:77:ffff:1::1/64", "dev", "lo"], { encoding: "utf8", timeout: 10_000 })
  if (result.error !== undefined) return { ok: false, reason: `unshare: ${result.error.message}` }
  if (result.status !== 0) return { ok: false, reason: `unshare -rn with an IPv6 address on lo failed (${result.status}): ${result.stderr.trim()}` }
  return { ok: true }
}

/**
 * Claims a ULA /48, fd00:77:X::/48, in no root-namespace address or route (the machine's own may be
 * under fd00::), by adding its blackhole route; `ip route add` fails if another run claimed it
 * first, and the next candidate is tried. Returns "fd00:77:X:".
 */
export const claimPrefix = (): string => {
  const used = `${execFileSync("ip", ["-br", "addr"], { encoding: "utf8" })}\n${execFileSync("ip", ["-6", "route", "show", "table", "all"], { encoding: "utf8" })}`
  for (let attempt = 0; attempt < 64; attempt++) {
    const x = (1 + Math.floor(Math.random() * 0xfffe)).toString(16)
    if (used.includes(`fd00:77:${x}:`)) continue
    if (spawnSync("ip", ["-6", "route", "add", "blackhole", `fd00:77:${x}::/48`], { stdio: "ignore" }).status === 0) return `fd00:77:${x}:`
  }
  throw new Error("no free fd00:77:X::/48")
}

/** Removes a claimed prefix's blackhole route (idempotent). */
export const releasePrefix = (prefix: string): void => {
  if (prefix !== "") spawnSync("ip", ["-6", "route", "del", "blackhole", `${prefix}:/48`], { stdio: "ignore" })
}
