// Discovery feeding the endpoint registry (src/sidecar/discoveryFeed.ts): a burst of updates
// (an mDNS packet of many instances) replaces each service's set in the registry once, not once per
// endpoint, and after every burst the registry holds what discovery holds, as the feed that replaced
// the set on every update left it.
import { afterEach, describe, expect, it, vi } from "vitest"
import { Discovery } from "../../src/discovery/discovery.ts"
import type { DiscoveredEndpoint, EndpointUpdate } from "../../src/discovery/types.ts"
import { endpointsOf, feedRegistry } from "../../src/sidecar/discoveryFeed.ts"
import { prng } from "../helpers/prng.ts"
import { bareRegistry } from "../support/bareRegistry.ts"


const closers: Array<() => void> = []
afterEach(() => {
  for (const close of closers.splice(0)) close()
})

/** A discovery with `sources` sources whose emit functions the test calls, feeding a registry. */
const setUp = (sources: number) => {
  const discovery = new Discovery({ log: () => {} })
  const registry = bareRegistry()
  const emits: Array<(update: EndpointUpdate) => void> = []
  for (let i = 0; i < sources; i++) discovery.register({ start: (emit) => (emits.push(emit), () => {}) })
  const stop = feedRegistry(discovery, registry, () => {})
  closers.push(() => (stop(), discovery.close(), registry.close()))
  return { discovery, registry, emits, stop }
}

/** The rest of this turn's microtasks (the feed applies a burst in one). */
const burstApplied = (): Promise<void> => new Promise((resolve) => setImmediate(resolve))

const endpoint = (service: string, i: number, extra: Partial<DiscoveredEndpoint> = {}): DiscoveredEndpoint => ({
  service,
  host: `10.0.${i >> 8}.${i & 255}`,
  port: 7000,
  weight: 1,
  features: [],
  source: "mdns",
  ...extra
})

describe("feedRegistry", () => {
  it("a burst of 1,000 Adds to one service replaces its set in the registry once", async () => {
    const { registry, emits } = setUp(1)
    const sets = vi.spyOn(registry, "set")
    for (let i = 0; i < 1000; i++) emits[0]!({ _tag: "Add", endpoint: endpoint("flood", i) })
    expect(sets).not.toHaveBeenCalled()
    await burstApplied()
    // Set per update, that was 1,000 sets of 1 to 1,000 endpoints: 500,500 members.
    expect(sets).toHaveBeenCalledTimes(1)
    expect(registry.endpointsOf("flood")).toHaveLength(1000)
  })

  it("after each burst the registry holds what discovery holds (randomized)", async () => {
    // A failure reproduces from its seed.
    const seed = 0xfeed
    const { next: random, pick } = prng(seed)
    const services = ["a", "b", "c"]
    const extras: ReadonlyArray<Partial<DiscoveredEndpoint>> = [{}, { weight: 5 }, { version: "v1" }, { security: "mtls", identity: "spiffe://t/x" }, { source: "static" }]
    const { discovery, registry, emits } = setUp(2)
    for (let burst = 0; burst < 200; burst++) {
      const updates = Math.floor(random() * 12)
      for (let u = 0; u < updates; u++) {
        const service = pick(services)
        const r = random()
        const emit = pick(emits)
        if (r < 0.45) emit({ _tag: "Add", endpoint: endpoint(service, Math.floor(random() * 8), pick(extras)) })
        else if (r < 0.7) emit({ _tag: "Change", endpoint: endpoint(service, Math.floor(random() * 8), pick(extras)) })
        else if (r < 0.92) emit({ _tag: "Remove", service, key: `10.0.0.${Math.floor(random() * 8)}:7000` })
        else emit({ _tag: "Reset", service, endpoints: Array.from({ length: Math.floor(random() * 4) }, () => endpoint(service, Math.floor(random() * 8), pick(extras))) })
      }
      await burstApplied()
      for (const service of services) {
        // What a whole recomputation from discovery's view would set: the coalesced updates must agree.
        expect(registry.endpointsOf(service), `seed ${seed} burst ${burst} service ${service}`).toEqual(endpointsOf(discovery, service))
      }
    }
  })

  it("stopped, it applies nothing more, not even a burst it had not applied yet", async () => {
    const { registry, emits, stop } = setUp(1)
    emits[0]!({ _tag: "Add", endpoint: endpoint("a", 1) })
    await burstApplied()
    emits[0]!({ _tag: "Add", endpoint: endpoint("a", 2) })
    stop()
    await burstApplied()
    expect(registry.endpointsOf("a").map((e) => e.host)).toEqual(["10.0.0.1"])
  })
})

describe("feedRegistry, a failing update", () => {
  it("is logged for its service; the rest of the burst and the next burst are applied", async () => {
    const discovery = new Discovery({ log: () => {} })
    const registry = bareRegistry()
    const emits: Array<(update: EndpointUpdate) => void> = []
    discovery.register({ start: (emit) => (emits.push(emit), () => {}) })
    const logged: Array<{ readonly event: string; readonly fields: unknown }> = []
    const stop = feedRegistry(discovery, registry, (event, fields) => logged.push({ event, fields }))
    closers.push(() => (stop(), discovery.close(), registry.close()))
    const set = registry.set.bind(registry)
    // The microtask has no caller: a throw out of it would be an uncaught exception (vitest fails the run on one).
    vi.spyOn(registry, "set").mockImplementation((service, endpoints) => {
      if (service === "a" && endpoints.length === 1) throw new Error("refused")
      set(service, endpoints)
    })
    emits[0]!({ _tag: "Add", endpoint: endpoint("a", 1) })
    emits[0]!({ _tag: "Add", endpoint: endpoint("b", 1) })
    await burstApplied()
    expect(logged).toEqual([{ event: "discovery.listener-failed", fields: { service: "a", message: "refused" } }])
    expect(registry.endpointsOf("a")).toEqual([])
    expect(registry.endpointsOf("b").map((e) => e.host)).toEqual(["10.0.0.1"])
    emits[0]!({ _tag: "Add", endpoint: endpoint("a", 2) })
    await burstApplied()
    expect(registry.endpointsOf("a").map((e) => e.host)).toEqual(["10.0.0.1", "10.0.0.2"])
  })

  it("whose log throws too (an embedder's logger) does not stop the feed: the next burst is applied", async () => {
    const discovery = new Discovery({ log: () => {} })
    const registry = bareRegistry()
    const emits: Array<(update: EndpointUpdate) => void> = []
    discovery.register({ start: (emit) => (emits.push(emit), () => {}) })
    const stop = feedRegistry(discovery, registry, () => {
      throw new Error("logger down")
    })
    closers.push(() => (stop(), discovery.close(), registry.close()))
    const set = registry.set.bind(registry)
    let refuse = true
    vi.spyOn(registry, "set").mockImplementation((service, endpoints) => {
      if (refuse) throw new Error("refused")
      set(service, endpoints)
    })
    const uncaught: Array<unknown> = []
    const onUncaught = (error: unknown) => uncaught.push(error)
    process.on("uncaughtException", onUncaught)
    closers.push(() => process.off("uncaughtException", onUncaught))
    emits[0]!({ _tag: "Add", endpoint: endpoint("a", 1) })
    await burstApplied()
    await new Promise((resolve) => setImmediate(resolve))
    expect(uncaught.map((e) => (e as Error).message)).toEqual(["logger down"])
    refuse = false
    emits[0]!({ _tag: "Add", endpoint: endpoint("a", 2) })
    await burstApplied()
    expect(registry.endpointsOf("a").map((e) => e.host)).toEqual(["10.0.0.1", "10.0.0.2"])
  })
})
