// An inbound rate limit keyed by caller (src/sidecar/rateLimits.ts) counts a caller without an
// identity by its address, and an IPv6 one by its prefix (src/iip/sourceKey.ts sourceKeyOf, a /64
// unless --ipv6-source-prefix says otherwise), as the identity issuer does: any IPv6 host can
// usually send from every address of its /64, so per full address a limit bounds nothing there.
// Measured before: with a limit of one request per caller, a second request from one address was
// refused 429, but one from another address of the same /64 (and of the same /80) was answered 200.
// Real connections from real addresses: a network namespace of the test's own (`unshare -rn`)
// whose loopback holds two addresses of one /64 (one /80), one of another /80 of that /64 and one
// of another /64, under a ULA prefix claimed in the root namespace with a blackhole route
// (test/support/ipv6Prefix.ts); app, sidecars and callers run inside it (test/support/rateLimitNetnsChild.ts).
import { execFile } from "node:child_process"
import { resolve } from "node:path"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { claimPrefix, probeIpv6Namespace, releasePrefix } from "../support/ipv6Prefix.ts"
import { assertCapability, gate } from "../support/netnsProcess.ts"

const childScript = resolve(import.meta.dirname, "../support/rateLimitNetnsChild.ts")
const capability = probeIpv6Namespace()
const suite = gate("inbound rate limit by caller: IPv6 callers counted per prefix, in a network namespace", capability)

let prefix = ""
const addresses = () => ({ a: `${prefix}1::a`, b: `${prefix}1::b`, d: `${prefix}1:1::d`, c: `${prefix}2::c` })
const release = () => {
  releasePrefix(prefix)
  prefix = ""
}

beforeAll(() => {
  if (suite.skip) return
  assertCapability(capability, "unshare -rn and root")
  prefix = claimPrefix()
  process.once("exit", release)
})

afterAll(() => {
  release()
  process.removeListener("exit", release)
})

interface Run {
  readonly sources: Array<string>
  readonly answers: Array<[number, string | null]>
}

/** One request from each of `from`, in order, through its own sidecar A to B (`bits`: B's ipv6SourcePrefix, or its default). */
const run = (bits: number | "default", from: ReadonlyArray<string>): Promise<Run> => {
  const { a, b, c, d } = addresses()
  const setup = ["ip link set lo up", ...[a, b, d, c].map((address) => `ip -6 addr add ${address}/64 dev lo nodad`)].join(" && ")
  return new Promise((done, fail) => {
    execFile("unshare", ["-rn", "sh", "-c", `${setup} && exec "$0" "$@"`, process.execPath, childScript, prefix, String(bits), ...from], { timeout: 60_000, killSignal: "SIGKILL" }, (error, stdout, stderr) => {
      const line = stdout.trim().split("\n").pop() ?? ""
      const parsed = (() => {
        try {
          return JSON.parse(line) as Run & { fatal?: string }
        } catch {
          return undefined
        }
      })()
      if (parsed === undefined || parsed.fatal !== undefined) return fail(new Error(`child failed (${error?.message ?? "no error"}): ${line} ${stderr.slice(-2000)}`))
      done(parsed)
    })
  })
}

describe.skipIf(suite.skip)(suite.title, () => {
  it("two addresses of one /64 share one bucket; an address of another /64 has its own", async () => {
    const { a, b, c, d } = addresses()
    const { sources, answers } = await run("default", [a, a, b, d, c])
    // Each A's connections came from its own address: B saw five callers' sources, four distinct.
    expect(sources).toEqual([a, a, b, d, c])
    // Before: [200, 429, 200, 200, 200], b and d each a fresh bucket.
    expect(answers).toEqual([[200, null], [429, "inbound; reason=rate_limited"], [429, "inbound; reason=rate_limited"], [429, "inbound; reason=rate_limited"], [200, null]])
  }, 70_000)

  it("with --ipv6-source-prefix 80 an address of another /80 of the /64 has its own bucket", async () => {
    const { a, b, d } = addresses()
    const { answers } = await run(80, [a, b, d])
    expect(answers.map(([status]) => status)).toEqual([200, 429, 200])
  }, 70_000)
})
