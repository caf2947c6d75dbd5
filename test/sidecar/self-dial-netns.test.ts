// A sidecar never dials its own listeners through one of this host's non-loopback addresses
// (src/iip/ownListeners.ts), and still dials another sidecar on that same address. One host
// namespace (as root; test/support/netnsHosts.ts: its /24 blackholed in the root namespace, so
// nothing leaves the machine) runs test/support/selfDialChild.ts: DNS SRV for "catalog" names the
// second sidecar P and sidecar S's own admin, admin control, outbound and inbound ports at the
// host's address, all listening on wildcards or that address. Before the fix S connected to each of
// them and answered catalog requests with its own app (outbound -> own inbound -> app: a loop for
// an app that calls on).
import { resolve } from "node:path"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { NetnsHosts, probeRootNetns } from "../support/netnsHosts.ts"
import { assertCapability, gate, type JsonLineProcess } from "../support/netnsProcess.ts"

const child = resolve(import.meta.dirname, "../support/selfDialChild.ts")

const capability = probeRootNetns()
const suite = gate("a sidecar's dials to its own listeners at this host's non-loopback address (a network namespace)", capability)

interface Result {
  readonly own: Record<"admin" | "adminControl" | "outbound" | "inbound", number>
  readonly peerInbound: number
  readonly catalogAnswers: ReadonlyArray<string>
  readonly storeAnswers: ReadonlyArray<string>
  readonly accepted: Record<string, number>
  readonly storeAppPaths: ReadonlyArray<string>
  readonly refused: Record<string, number>
  readonly refusedStore: number
  readonly events: ReadonlyArray<Record<string, unknown>>
}

describe.skipIf(suite.skip)(suite.title, () => {
  let net: NetnsHosts | undefined
  let proc: JsonLineProcess | undefined
  let result: Result
  let address = ""

  beforeAll(async () => {
    assertCapability(capability, "root with iproute2 (network namespaces)")
    net = await NetnsHosts.create(1)
    address = net.host(1).address
    proc = net.exec(net.host(1), [child, address], "self-dial")
    const line = await proc.log.waitFor((d) => d.type === "result" || d.type === "fatal" || d.type === "exit", 60_000, "the child's result")
    if (line.data.type !== "result") throw new Error(`the child failed: ${JSON.stringify(line.data)} ${proc.stderr}`)
    result = line.data as unknown as Result
  }, 90_000)

  afterAll(async () => {
    await proc?.close()
    net?.destroy()
  })

  it("every catalog request is answered by the other sidecar on the same address, none by its own app", () => {
    expect(result.catalogAnswers).toEqual(Array.from({ length: 30 }, () => "200 catalog"))
    expect(result.accepted[String(result.peerInbound)] ?? 0).toBeGreaterThan(0)
    expect(result.storeAppPaths.filter((path) => path === "/c")).toEqual([])
  })

  it("its own admin, admin control and outbound listeners accept nothing at the host's address", () => {
    expect({ admin: result.accepted[String(result.own.admin)] ?? 0, adminControl: result.accepted[String(result.own.adminControl)] ?? 0, outbound: result.accepted[String(result.own.outbound)] ?? 0 }).toEqual({ admin: 0, adminControl: 0, outbound: 0 })
  })

  it("each refusal is counted under its endpoint and logged as own-listener", () => {
    for (const [name, port] of Object.entries(result.own)) {
      expect(result.refused[name], name).toBeGreaterThan(0)
      expect(result.events.some((e) => e.endpoint === `${address}:${port}` && e.reason === "own-listener" && e.service === "catalog"), name).toBe(true)
    }
  })

  it("the app calling its own service still reaches itself through its own inbound (no refusal)", () => {
    expect(result.storeAnswers).toEqual(["200 store", "200 store", "200 store"])
    expect(result.storeAppPaths).toEqual(["/s", "/s", "/s"])
    expect(result.refusedStore).toBe(0)
  })
})
