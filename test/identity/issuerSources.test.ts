// The issuer's per-source limits count an IPv6 peer by its /64 (src/iip/sourceKey.ts): any
// IPv6 host can usually send from every address of its /64, so per full address they bound
// nothing. Real connections from real addresses: a network namespace of the test's own
// (`unshare -rn`) whose loopback holds two addresses of one /64 and one of another, all under a
// ULA prefix the test claims in the root namespace with a blackhole route (testing.md: a process
// started outside the namespace by mistake fails locally); the issuer and its TLS clients run
// inside it (test/support/issuerNetnsAgent.ts), the issuer on a TestClock nobody moves, so no
// handshake token refills while the test looks.
import { resolve } from "node:path"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { CHILD_START_MS, holdsStarts } from "../support/childStart.ts"
import { claimPrefix, probeIpv6Namespace, releasePrefix } from "../support/ipv6Prefix.ts"
import { assertCapability, gate, JsonLineProcess } from "../support/netnsProcess.ts"

const agentScript = resolve(import.meta.dirname, "../support/issuerNetnsAgent.ts")

const capability = probeIpv6Namespace()
const suite = gate("issuer: IPv6 sources counted per /64, in a network namespace", capability)

let prefix = ""
let agent: JsonLineProcess | undefined
let nextId = 1
/** Two addresses of one /64 (and of one /80 in it), one of another /80 of that /64, and one of another /64. */
const addresses = () => ({ a: `${prefix}1::a`, b: `${prefix}1::b`, d: `${prefix}1:1::d`, c: `${prefix}2::c` })

/** Removes the blackhole route (idempotent; also on process exit, should the test not get to afterAll). */
const release = () => {
  releasePrefix(prefix)
  prefix = ""
}

beforeAll(async () => {
  if (suite.skip) return
  assertCapability(capability, "unshare -rn and root")
  prefix = claimPrefix()
  process.once("exit", release)
  const { a, b, c, d } = addresses()
  const setup = ["ip link set lo up", ...[`${a}/64`, `${b}/64`, `${d}/64`, `${c}/64`].map((address) => `ip -6 addr add ${address} dev lo`)].join(" && ")
  agent = new JsonLineProcess("issuer-agent", "unshare", ["-rn", "sh", "-c", `${setup} && exec "$0" "$@"`, process.execPath, agentScript, prefix])
  const ready = await agent.log.waitFor((data) => data.type === "ready" || data.type === "fatal" || data.type === "exit", CHILD_START_MS, "the agent")
  if (ready.data.type !== "ready") throw new Error(`agent failed: ${JSON.stringify(ready.data)} ${agent.stderr}`)
}, holdsStarts(1, 10_000))

afterAll(async () => {
  await agent?.close()
  release()
  process.removeListener("exit", release)
})

/** Sends a command to the agent and waits for its answer (or its error). */
const ask = async (command: Record<string, unknown>): Promise<Record<string, unknown>> => {
  const id = nextId++
  agent!.send(JSON.stringify({ ...command, id }))
  const line = await agent!.log.waitFor((data) => data.id === id || data.type === "exit", 15_000, `the answer to ${JSON.stringify(command)}`)
  if (line.data.type === "error" || line.data.type === "exit") throw new Error(`agent: ${JSON.stringify(line.data)} ${agent!.stderr}`)
  return line.data
}

const startIssuer = async (options: Record<string, unknown>): Promise<number> => Number((await ask({ op: "start", options })).id)
const connectFrom = async (issuer: number, from: string): Promise<unknown> => (await ask({ op: "connect", issuer, from })).outcome
const requestFrom = async (issuer: number, from: string, method: string, path: string, body = "") => {
  const answer = await ask({ op: "request", issuer, from, method, path, body })
  return { status: Number(answer.status), body: String(answer.body) }
}
/** /metrics, from 127.0.0.1 (a source of its own). */
const metricsOf = async (issuer: number): Promise<string> => (await requestFrom(issuer, "127.0.0.1", "GET", "/metrics")).body
const eventsOf = async (issuer: number) => (await ask({ op: "events", issuer })).events as Array<{ event: string; fields: Record<string, unknown> }>
const counter = (text: string, name: string): number => Number(text.match(new RegExp(`^${name.replace(/[{}]/g, "\\$&")} (\\d+)$`, "m"))?.[1] ?? NaN)

describe.skipIf(suite.skip)(suite.title, () => {
  it("two addresses of one /64 share one TLS handshake bucket; an address of another /64 has its own; the refusal's log line names the /64", async () => {
    const { a, b, c } = addresses()
    const issuer = await startIssuer({ handshakeRatePerSource: 1, handshakeBurstPerSource: 2 })
    try {
      // The burst of the /64, both from a; then b, of the same /64, finds the bucket empty.
      expect(await connectFrom(issuer, a)).toBe("secured")
      expect(await connectFrom(issuer, a)).toBe("secured")
      expect(await connectFrom(issuer, b)).toBe("closed")
      expect(await connectFrom(issuer, c)).toBe("secured")
      const text = await metricsOf(issuer)
      expect(counter(text, `iip_mesh_issuer_connections_refused_total{limit="handshake_rate"}`)).toBe(1)
      // The /64 of a and b, c's /64, and 127.0.0.1 (the metrics' own connection).
      expect(counter(text, "iip_mesh_issuer_handshake_rate_sources")).toBe(3)
      const refused = (await eventsOf(issuer)).filter((e) => e.event === "identity-connection-refused")
      expect(refused.map((e) => e.fields)).toMatchObject([{ limit: "handshake_rate", source: `${prefix}1::/64`, remote: b }])
    } finally {
      await ask({ op: "release" })
    }
  })

  it("two addresses of one /64 share one connection share; an address of another /64 has its own", async () => {
    const { a, b, c } = addresses()
    const issuer = await startIssuer({ maxConnectionsPerSource: 2 })
    try {
      // a and b hold the /64's two places; neither gets a third.
      expect(await connectFrom(issuer, a)).toBe("secured")
      expect(await connectFrom(issuer, b)).toBe("secured")
      expect(await connectFrom(issuer, a)).toBe("closed")
      expect(await connectFrom(issuer, b)).toBe("closed")
      expect(await connectFrom(issuer, c)).toBe("secured")
      expect(await connectFrom(issuer, c)).toBe("secured")
      const text = await metricsOf(issuer)
      expect(counter(text, `iip_mesh_issuer_connections_refused_total{limit="per_source"}`)).toBe(2)
      expect(counter(text, "iip_mesh_issuer_connections")).toBe(5)
      const refused = (await eventsOf(issuer)).filter((e) => e.event === "identity-connection-refused")
      expect(refused.map((e) => e.fields)).toMatchObject([{ limit: "per_source", source: `${prefix}1::/64`, remote: a }, { limit: "per_source", source: `${prefix}1::/64`, remote: b }])
    } finally {
      await ask({ op: "release" })
    }
  })

  it("with ipv6SourcePrefix 80 (nodes given a /80 each in one /64, as on EKS) an address of another /80 of the /64 has its own bucket", async () => {
    const { a, b, d } = addresses()
    const issuer = await startIssuer({ handshakeRatePerSource: 1, handshakeBurstPerSource: 1, ipv6SourcePrefix: 80 })
    try {
      expect(await connectFrom(issuer, a)).toBe("secured")
      // b is in a's /80: its bucket is empty.
      expect(await connectFrom(issuer, b)).toBe("closed")
      // d is in a's /64, not in its /80.
      expect(await connectFrom(issuer, d)).toBe("secured")
      const refused = (await eventsOf(issuer)).filter((e) => e.event === "identity-connection-refused")
      expect(refused.map((e) => e.fields)).toMatchObject([{ limit: "handshake_rate", source: `${prefix}1::/80`, remote: b }])
    } finally {
      await ask({ op: "release" })
    }
  })

  it("a request's refusal is logged with the /64 its signing share is counted under", async () => {
    const { a } = addresses()
    const issuer = await startIssuer({})
    const refused = await requestFrom(issuer, a, "POST", "/v1/sign", "not json")
    expect(refused.status).toBe(400)
    const lines = (await eventsOf(issuer)).filter((e) => e.event === "identity-refused")
    expect(lines.map((e) => e.fields)).toMatchObject([{ reason: "bad-request", remote: a, source: `${prefix}1::/64` }])
  })
})
