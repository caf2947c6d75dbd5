// Discovery feeding the endpoint registry (src/sidecar/discoveryFeed.ts): a burst of updates
// (an mDNS packet of many instances) replaces each service's set in the registry once, not once per
// endpoint; bursts that keep coming (a host flapping an instance) are applied once per interval, not
// once per packet; and after every application the registry holds what discovery holds, as the feed
// that replaced the set on every update left it. Time is a hand-moved clock (handTimer).
import { afterEach, describe, expect, it, vi } from "vitest"
import { Discovery } from "../../src/discovery/discovery.ts"
import { decodeService, instancesIn, MdnsEndpointTable } from "../../src/discovery/mdnsSource.ts"
import type { DiscoveredEndpoint, EndpointUpdate } from "../../src/discovery/types.ts"
import { FeedIntervalMs, type FeedTimer, feedRegistry, registryForm } from "../../src/sidecar/discoveryFeed.ts"
import type { Endpoint } from "../../src/sidecar/endpoints.ts"
import { prng } from "../helpers/prng.ts"
import { bareRegistry } from "../support/bareRegistry.ts"


const closers: Array<() => void> = []
afterEach(() => {
  for (const close of closers.splice(0)) close()
})

/** A service's endpoints as discovery holds them now, in the registry's form: what a whole recomputation would set. */
const endpointsOf = (discovery: Discovery, service: string): ReadonlyArray<Endpoint> => discovery.endpoints(service).map((e) => registryForm(service, e))

/** The feed's clock and timers, moved by hand: `advance` runs the timers that come due. */
const handTimer = () => {
  let now = 0
  const timers = new Set<{ readonly at: number; readonly run: () => void }>()
  const timer: FeedTimer = {
    now: () => now,
    after: (ms, run) => {
      const entry = { at: now + ms, run }
      timers.add(entry)
      return () => void timers.delete(entry)
    }
  }
  const advance = (ms: number): void => {
    now += ms
    for (const entry of [...timers]) {
      if (entry.at > now) continue
      timers.delete(entry)
      entry.run()
    }
  }
  /** Sets the clock back by `ms` (an injected clock that is not monotonic, a faked performance.now()): no timer runs. */
  const stepBack = (ms: number): void => {
    now -= ms
  }
  return { timer, advance, stepBack, timers }
}

/** A discovery with `sources` sources whose emit functions the test calls, feeding a registry on a hand-moved clock. */
const setUp = (sources: number, log: (event: string, fields: Record<string, unknown>) => void = () => {}) => {
  const discovery = new Discovery({ log: () => {} })
  const registry = bareRegistry()
  const emits: Array<(update: EndpointUpdate) => void> = []
  for (let i = 0; i < sources; i++) discovery.register({ start: (emit) => (emits.push(emit), () => {}) })
  const clock = handTimer()
  const stop = feedRegistry(discovery, registry, log, { timer: clock.timer })
  closers.push(() => (stop(), discovery.close(), registry.close()))
  return { discovery, registry, emits, stop, clock }
}

/** The rest of this turn's microtasks (the feed applies a burst after a quiet interval in one). */
const turnEnds = (): Promise<void> => new Promise((resolve) => setImmediate(resolve))

/** A quiet interval, then the rest of the turn: whatever the feed held is applied, and the next burst goes in at once. */
const burstApplied = async (clock: ReturnType<typeof handTimer>): Promise<void> => {
  clock.advance(FeedIntervalMs)
  await turnEnds()
}

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
    // The first burst after a quiet interval: applied in this turn, with no time passing.
    await turnEnds()
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
    const { discovery, registry, emits, clock } = setUp(2)
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
      await burstApplied(clock)
      for (const service of services) {
        // What a whole recomputation from discovery's view would set: the coalesced updates must agree.
        expect(registry.endpointsOf(service), `seed ${seed} burst ${burst} service ${service}`).toEqual(endpointsOf(discovery, service))
      }
    }
  })

  it("stopped, it applies nothing more, not even a burst it had not applied yet", async () => {
    const { registry, emits, stop, clock } = setUp(1)
    emits[0]!({ _tag: "Add", endpoint: endpoint("a", 1) })
    await turnEnds()
    emits[0]!({ _tag: "Add", endpoint: endpoint("a", 2) })
    stop()
    expect(clock.timers.size).toBe(0)
    await burstApplied(clock)
    expect(registry.endpointsOf("a").map((e) => e.host)).toEqual(["10.0.0.1"])
  })

  it("stopped in the turn of a change after a quiet interval (its application already queued), applies nothing", async () => {
    const { registry, emits, stop, clock } = setUp(1)
    const sets = vi.spyOn(registry, "set")
    emits[0]!({ _tag: "Add", endpoint: endpoint("a", 1) })
    stop()
    await burstApplied(clock)
    expect(sets).not.toHaveBeenCalled()
    expect(registry.endpointsOf("a")).toEqual([])
  })
})

/** A host on the LAN flapping one mDNS instance, packet by packet, as the source reads them (instancesIn, decodeService, its table). */
const mdnsHost = (emit: (update: EndpointUpdate) => void) => {
  const table = new MdnsEndpointTable(emit, 2500)
  const fqdn = (i: number) => `catalog n${i} 7000 m._iip-mesh._tcp.local`
  const receive = (i: number, goodbye: boolean): void => {
    const answers = [
      { name: "_iip-mesh._tcp.local", type: "PTR", ttl: goodbye ? 0 : 4500, data: fqdn(i) },
      { name: fqdn(i), type: "SRV", ttl: 120, data: { port: 7000, target: `n${i}.local` } },
      { name: fqdn(i), type: "TXT", ttl: 4500, data: ["mesh=m", "service=catalog", `addr=10.1.${i >> 8}.${i & 255}`].map((t) => Buffer.from(t)) }
    ]
    const { goodbyes, seen } = instancesIn({ answers }, { address: "10.1.255.254" })
    for (const name of goodbyes) table.gone(name, "10.1.255.254", 0)
    for (const service of seen) {
      const decoded = decodeService(service, "m", "self")
      if (decoded.ok) table.seen(service.fqdn, decoded.endpoint, 0, "10.1.255.254")
    }
  }
  return { receive }
}

describe("feedRegistry, a flood of changes", () => {
  it("an mDNS instance flapping packet after packet in a service of 1,000 is applied once per interval, not once per packet", async () => {
    const { discovery, registry, emits, clock } = setUp(1)
    const host = mdnsHost(emits[0]!)
    for (let i = 0; i < 1000; i++) host.receive(i, false)
    await turnEnds()
    expect(registry.endpointsOf("catalog")).toHaveLength(1000)
    const sets = vi.spyOn(registry, "set")
    // 101 packets, each in a turn of its own as from the socket: a goodbye, an announce, ... a goodbye.
    for (let packet = 0; packet <= 100; packet++) {
      host.receive(0, packet % 2 === 0)
      await turnEnds()
    }
    // Each packet replaced the set of 1,000 before: 101 sets, 101,000 members.
    expect(sets).not.toHaveBeenCalled()
    clock.advance(FeedIntervalMs)
    expect(sets).toHaveBeenCalledTimes(1)
    // The last packet was a goodbye: the endpoint is gone.
    expect(registry.endpointsOf("catalog")).toHaveLength(999)
    expect(registry.endpointsOf("catalog").some((e) => e.host === "10.1.0.0")).toBe(false)
    expect(registry.endpointsOf("catalog")).toEqual(endpointsOf(discovery, "catalog"))
  })

  it("applies a change after a quiet interval in the same turn, and one during a flood at most one interval late", async () => {
    const { registry, emits, clock } = setUp(1)
    const host = mdnsHost(emits[0]!)
    host.receive(1, false)
    await turnEnds()
    expect(registry.endpointsOf("catalog").map((e) => e.host)).toEqual(["10.1.0.1"])
    host.receive(1, true)
    await turnEnds()
    // Within the interval of the last application: held, with a timer for the interval's end.
    expect(registry.endpointsOf("catalog")).toHaveLength(1)
    clock.advance(FeedIntervalMs - 1)
    expect(registry.endpointsOf("catalog")).toHaveLength(1)
    clock.advance(1)
    expect(registry.endpointsOf("catalog")).toEqual([])
    // Quiet for an interval since: the next change goes in at once again.
    clock.advance(FeedIntervalMs)
    host.receive(2, false)
    await turnEnds()
    expect(registry.endpointsOf("catalog").map((e) => e.host)).toEqual(["10.1.0.2"])
    expect(clock.timers.size).toBe(0)
  })

  it("a clock stepped back holds a change at most one interval, not for the step", async () => {
    const { registry, emits, clock } = setUp(1)
    clock.advance(10_000)
    emits[0]!({ _tag: "Add", endpoint: endpoint("a", 1) })
    await turnEnds()
    expect(registry.endpointsOf("a").map((e) => e.host)).toEqual(["10.0.0.1"])
    // Back to 0 (vi.useFakeTimers() restarts performance.now() there): the last application looks 10 s ahead.
    clock.stepBack(10_000)
    emits[0]!({ _tag: "Add", endpoint: endpoint("a", 2) })
    await turnEnds()
    clock.advance(FeedIntervalMs)
    // Before, the wait was worked out as 10,050 ms: the change was held for the step.
    expect(registry.endpointsOf("a").map((e) => e.host)).toEqual(["10.0.0.1", "10.0.0.2"])
  })

  it("Resets turn after turn (DNS SRV answers, EndpointSlice watch events) are coalesced the same way", async () => {
    const { discovery, registry, emits, clock } = setUp(1)
    const all = Array.from({ length: 1000 }, (_, i) => endpoint("catalog", i, { source: "dns" }))
    emits[0]!({ _tag: "Reset", service: "catalog", endpoints: all })
    await turnEnds()
    const sets = vi.spyOn(registry, "set")
    for (let answer = 0; answer < 50; answer++) {
      emits[0]!({ _tag: "Reset", service: "catalog", endpoints: answer % 2 === 0 ? all.slice(1) : all })
      await turnEnds()
    }
    expect(sets).not.toHaveBeenCalled()
    clock.advance(FeedIntervalMs)
    expect(sets).toHaveBeenCalledTimes(1)
    expect(registry.endpointsOf("catalog")).toEqual(endpointsOf(discovery, "catalog"))
    expect(registry.endpointsOf("catalog")).toHaveLength(1000)
  })

  it("hands the registry the same object for an endpoint that did not change, so it keeps what it computed for it", async () => {
    const { registry, emits, clock } = setUp(1)
    for (let i = 0; i < 3; i++) emits[0]!({ _tag: "Add", endpoint: endpoint("a", i) })
    await turnEnds()
    const [first, second] = registry.endpointsOf("a")
    emits[0]!({ _tag: "Remove", service: "a", key: "10.0.0.2:7000" })
    await burstApplied(clock)
    expect(registry.endpointsOf("a")).toHaveLength(2)
    expect(registry.endpointsOf("a")[0]).toBe(first)
    expect(registry.endpointsOf("a")[1]).toBe(second)
  })
})

describe("feedRegistry, a failing update", () => {
  it("is logged for its service; the rest of the burst and the next burst are applied", async () => {
    const logged: Array<{ readonly event: string; readonly fields: unknown }> = []
    const { registry, emits, clock } = setUp(1, (event, fields) => logged.push({ event, fields }))
    const set = registry.set.bind(registry)
    // The microtask has no caller: a throw out of it would be an uncaught exception (vitest fails the run on one).
    vi.spyOn(registry, "set").mockImplementation((service, endpoints) => {
      if (service === "a" && endpoints.length === 1) throw new Error("refused")
      set(service, endpoints)
    })
    emits[0]!({ _tag: "Add", endpoint: endpoint("a", 1) })
    emits[0]!({ _tag: "Add", endpoint: endpoint("b", 1) })
    await burstApplied(clock)
    expect(logged).toEqual([{ event: "discovery.listener-failed", fields: { service: "a", message: "refused" } }])
    expect(registry.endpointsOf("a")).toEqual([])
    expect(registry.endpointsOf("b").map((e) => e.host)).toEqual(["10.0.0.1"])
    emits[0]!({ _tag: "Add", endpoint: endpoint("a", 2) })
    await burstApplied(clock)
    expect(registry.endpointsOf("a").map((e) => e.host)).toEqual(["10.0.0.1", "10.0.0.2"])
  })

  it("whose log throws too (an embedder's logger) drops nothing: the rest of the round is applied, the failure goes to stderr", async () => {
    const { registry, emits, clock } = setUp(1, () => {
      throw new Error("logger down")
    })
    const set = registry.set.bind(registry)
    let refuse = true
    vi.spyOn(registry, "set").mockImplementation((service, endpoints) => {
      if (refuse && service === "a") throw new Error("refused")
      set(service, endpoints)
    })
    const uncaught: Array<unknown> = []
    const onUncaught = (error: unknown) => uncaught.push(error)
    process.on("uncaughtException", onUncaught)
    closers.push(() => process.off("uncaughtException", onUncaught))
    const stderr: Array<string> = []
    const write = vi.spyOn(process.stderr, "write").mockImplementation((chunk) => (stderr.push(String(chunk)), true))
    closers.push(() => write.mockRestore())
    // One round: "a" refused (and its log line throws), then "b", which must not wait for a change of its own.
    emits[0]!({ _tag: "Add", endpoint: endpoint("a", 1) })
    emits[0]!({ _tag: "Add", endpoint: endpoint("b", 1) })
    await burstApplied(clock)
    await new Promise((resolve) => setImmediate(resolve))
    write.mockRestore()
    expect(uncaught).toEqual([])
    expect(registry.endpointsOf("b").map((e) => e.host)).toEqual(["10.0.0.1"])
    const lines = stderr.map((line) => JSON.parse(line) as Record<string, unknown>)
    expect(lines).toMatchObject([{ event: "discovery.listener-failed", service: "a", message: "refused", logFailed: "logger down" }])
    refuse = false
    emits[0]!({ _tag: "Add", endpoint: endpoint("a", 2) })
    await burstApplied(clock)
    expect(registry.endpointsOf("a").map((e) => e.host)).toEqual(["10.0.0.1", "10.0.0.2"])
  })
})
