// The cap on one source's endpoints per service (MaxEndpointsPerService, src/discovery/types.ts),
// which the Discovery service applies to every source: a Reset beyond it keeps the first endpoints,
// an Add beyond it is refused (and waits) until a Remove makes room, and each is logged with what was left out.
// A single Add, Change or Remove re-merges that one endpoint (before, a flood of Adds into one service
// re-merged the whole service each time: 5,000 took 52 s), and writes only what it changes (before,
// each copied the source's map of services and the service's endpoints: 2,051 Map entries written per
// update across 4,096 services); a random walk checks the result is the full merge.
import { describe, expect, it } from "vitest"
import { Discovery } from "../../src/discovery/discovery.ts"
import { applyUpdate, leftOutByCap, merged, type SourceState } from "../../src/discovery/endpointSet.ts"
import { type DiscoveredEndpoint, type DiscoverySource, type EndpointUpdate, MaxEndpointsPerService } from "../../src/discovery/types.ts"
import { prng } from "../helpers/prng.ts"
import { Recorder } from "./recorder.ts"

const ep = (i: number, more: Partial<DiscoveredEndpoint> = {}): DiscoveredEndpoint => ({
  service: "web",
  host: `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`,
  port: 80,
  weight: 1,
  features: [],
  source: "mdns",
  ...more
})

const COUNT = Number(process.env["FLOOD"] ?? 20_000)
const many = (count: number, from = 0) => Array.from({ length: count }, (_, i) => ep(from + i))

describe("applyUpdate's cap per service", () => {
  it("a Reset keeps the first MaxEndpointsPerService distinct endpoints; leftOutByCap counts the rest", () => {
    const update: EndpointUpdate = { _tag: "Reset", service: "web", endpoints: [...many(MaxEndpointsPerService + 500), ep(0)] }
    const state: SourceState = new Map()
    expect(applyUpdate(state, update)).toBe(true)
    expect(state.get("web")!.size).toBe(MaxEndpointsPerService)
    expect(state.get("web")!.has("10.0.0.0:80")).toBe(true)
    expect(leftOutByCap(update, state)).toBe(500)
  })

  it("an Add (or a Change of an unknown key) beyond the cap changes nothing; a Change of a known one applies", () => {
    const state: SourceState = new Map()
    applyUpdate(state, { _tag: "Reset", service: "web", endpoints: many(MaxEndpointsPerService) })
    const web = state.get("web")!
    const add: EndpointUpdate = { _tag: "Add", endpoint: ep(MaxEndpointsPerService) }
    expect(applyUpdate(state, add)).toBe(false)
    expect(leftOutByCap(add, state)).toBe(1)
    expect(applyUpdate(state, { _tag: "Change", endpoint: ep(MaxEndpointsPerService) })).toBe(false)
    expect(web.size).toBe(MaxEndpointsPerService)
    expect(web.has(`${ep(MaxEndpointsPerService).host}:80`)).toBe(false)
    expect(applyUpdate(state, { _tag: "Change", endpoint: ep(7, { weight: 5 }) })).toBe(true)
    expect(web.get("10.0.0.7:80")!.weight).toBe(5)
    // Another service has a cap of its own.
    expect(applyUpdate(state, { _tag: "Add", endpoint: ep(1, { service: "api" }) })).toBe(true)
    expect(state.get("api")!.size).toBe(1)
    applyUpdate(state, { _tag: "Remove", service: "web", key: "10.0.0.7:80" })
    expect(applyUpdate(state, add)).toBe(true)
    expect(web.has(`${ep(MaxEndpointsPerService).host}:80`)).toBe(true)
  })
})

describe("Discovery with a source past the cap", () => {
  it("logs what it left out, naming the service and the source, and tells how many are left out now by the kind of source", () => {
    const logs = new Recorder<[string, Record<string, unknown>]>()
    const discovery = new Discovery({ log: (event, fields) => logs.push([event, fields]) })
    let emit: (update: EndpointUpdate) => void = () => {}
    const source: DiscoverySource = { start: (e) => ((emit = e), () => {}) }
    discovery.register(source)
    emit({ _tag: "Reset", service: "web", endpoints: many(MaxEndpointsPerService + 3) })
    expect(discovery.endpoints("web")).toHaveLength(MaxEndpointsPerService)
    emit({ _tag: "Add", endpoint: ep(MaxEndpointsPerService + 10, { source: "static:file" }) })
    expect(discovery.endpoints("web")).toHaveLength(MaxEndpointsPerService)
    expect(logs.items).toStrictEqual([
      ["discovery.endpoints-capped", { service: "web", source: "mdns", limit: MaxEndpointsPerService, leftOut: 3 }],
      ["discovery.endpoints-capped", { service: "web", source: "static:file", limit: MaxEndpointsPerService, leftOut: 1 }]
    ])
    expect(discovery.leftOut()).toStrictEqual(new Map([["mdns", 3], ["static", 1]]))
    // Another service's left out add up under the same kind.
    emit({ _tag: "Reset", service: "api", endpoints: many(MaxEndpointsPerService + 2).map((endpoint) => ({ ...endpoint, service: "api" })) })
    expect(discovery.leftOut()).toStrictEqual(new Map([["mdns", 5], ["static", 1]]))
    discovery.close()
  })

  it("a source flapping endpoints past the cap (an mDNS host: goodbye, announce, again) logs at most 10 lines a minute, the next saying how many it left out meanwhile; what is left out reads what is out now", () => {
    const logs = new Recorder<[string, Record<string, unknown>]>()
    let now = 0
    const discovery = new Discovery({ log: (event, fields) => logs.push([event, fields]), now: () => now })
    let emit: (update: EndpointUpdate) => void = () => {}
    discovery.register({ start: (e) => ((emit = e), () => {}) })
    for (const endpoint of many(MaxEndpointsPerService)) emit({ _tag: "Add", endpoint })
    const over = many(2000, MaxEndpointsPerService)
    for (let round = 0; round < 3; round++) {
      for (const endpoint of over) emit({ _tag: "Add", endpoint })
      for (const endpoint of over) emit({ _tag: "Remove", service: "web", key: `${endpoint.host}:80` })
    }
    const capped = () => logs.items.filter(([event]) => event === "discovery.endpoints-capped")
    expect(capped()).toHaveLength(10)
    // Every one announced was said goodbye to: none left out now (before: a counter at 6,000, growing with the churn).
    expect(discovery.leftOut()).toStrictEqual(new Map([["mdns", 0]]))
    now = 60_000
    emit({ _tag: "Add", endpoint: over[0]! })
    expect(capped()).toHaveLength(11)
    expect(capped().at(-1)![1]).toMatchObject({ leftOut: 1, suppressedBefore: 5990 })
    expect(discovery.leftOut()).toStrictEqual(new Map([["mdns", 1]]))
    expect(discovery.endpoints("web")).toHaveLength(MaxEndpointsPerService)
    discovery.close()
  })

  it("a source answering the same list past the cap again and again (a DNS or EndpointSlice re-list) leaves out as many as before, not as many again; withdrawn, none", () => {
    const discovery = new Discovery({ log: () => {} })
    let emit: (update: EndpointUpdate) => void = () => {}
    const stop = discovery.register({ start: (e) => ((emit = e), () => {}) })
    const listed = many(MaxEndpointsPerService + 3).map((endpoint) => ({ ...endpoint, source: "dns:web" }))
    for (let round = 0; round < 5; round++) emit({ _tag: "Reset", service: "web", endpoints: listed })
    expect(discovery.leftOut()).toStrictEqual(new Map([["dns", 3]]))
    // Room made by the source's own Remove: the oldest waiting one gets in, one fewer left out.
    emit({ _tag: "Remove", service: "web", key: `${listed[0]!.host}:80` })
    expect(discovery.leftOut()).toStrictEqual(new Map([["dns", 2]]))
    stop()
    expect(discovery.leftOut()).toStrictEqual(new Map([["dns", 0]]))
    discovery.close()
  })

  it("an Add refused at the cap gets in once Removes make room: a source reports an endpoint once (mDNS re-confirms it silently), so a real instance that came during a flood would otherwise stay out after the flood expired", () => {
    const logs = new Recorder<[string, Record<string, unknown>]>()
    const discovery = new Discovery({ log: (event, fields) => logs.push([event, fields]) })
    let emit: (update: EndpointUpdate) => void = () => {}
    discovery.register({ start: (e) => ((emit = e), () => {}) })
    const hostile = many(MaxEndpointsPerService)
    for (const endpoint of hostile) emit({ _tag: "Add", endpoint })
    const real = ep(MaxEndpointsPerService + 1, { weight: 3 })
    emit({ _tag: "Add", endpoint: real })
    expect(discovery.endpoints("web").some((e) => e.host === real.host)).toBe(false)
    expect(logs.items.map(([event]) => event)).toStrictEqual(["discovery.endpoints-capped"])
    for (const endpoint of hostile) emit({ _tag: "Remove", service: "web", key: `${endpoint.host}:80` })
    expect(discovery.endpoints("web")).toMatchObject([{ host: real.host, weight: 3 }])
    // One the source removed while it waited never gets in.
    for (const endpoint of hostile) emit({ _tag: "Add", endpoint })
    const gone = ep(MaxEndpointsPerService + 2)
    emit({ _tag: "Add", endpoint: gone })
    emit({ _tag: "Remove", service: "web", key: `${gone.host}:80` })
    emit({ _tag: "Remove", service: "web", key: `${hostile[0]!.host}:80` })
    expect(discovery.endpoints("web").some((e) => e.host === gone.host)).toBe(false)
    discovery.close()
  })

  it("a flood of single Adds (an mDNS host announcing instance after instance) stays linear: 20,000 Adds in under 5 s", () => {
    const discovery = new Discovery({ log: () => {} })
    let emit: (update: EndpointUpdate) => void = () => {}
    discovery.register({ start: (e) => ((emit = e), () => {}) })
    const started = performance.now()
    for (let i = 0; i < COUNT; i++) emit({ _tag: "Add", endpoint: ep(i) })
    const elapsed = performance.now() - started
    console.log(`discovery: ${COUNT} single Adds into one service took ${elapsed.toFixed(0)} ms`)
    expect(discovery.endpoints("web")).toHaveLength(MaxEndpointsPerService)
    expect(elapsed).toBeLessThan(5000)
    discovery.close()
  })
})

describe("Discovery's cost per update", () => {
  // Map entries written (Map.prototype.set, which copying a Map with `new Map(map)` also calls per entry).
  const setsDuring = (run: () => void): number => {
    const set = Map.prototype.set
    let count = 0
    Map.prototype.set = function (this: Map<unknown, unknown>, key: unknown, value: unknown) {
      count++
      return set.call(this, key, value)
    }
    try {
      run()
      return count
    } finally {
      Map.prototype.set = set
    }
  }

  it("an update writes what it changes, not the source's other services nor the rest of its service: 4,096 services of one endpoint (an mDNS flood) and 1,000 endpoints of one service, at most 8 Map entries written per Add or Remove", () => {
    const discovery = new Discovery({ log: () => {} })
    let emit: (update: EndpointUpdate) => void = () => {}
    discovery.register({ start: (e) => ((emit = e), () => {}) })
    const services = 4096
    const flood = setsDuring(() => {
      for (let i = 0; i < services; i++) emit({ _tag: "Add", endpoint: ep(i, { service: `s${i}` }) })
      for (let i = 0; i < services; i++) emit({ _tag: "Remove", service: `s${i}`, key: `${ep(i).host}:80` })
    })
    const wide = setsDuring(() => {
      for (let i = 0; i < MaxEndpointsPerService; i++) emit({ _tag: "Add", endpoint: ep(i) })
      for (let i = 0; i < MaxEndpointsPerService; i++) emit({ _tag: "Remove", service: "web", key: `${ep(i).host}:80` })
    })
    console.log(`discovery: Map entries written per update: ${(flood / (2 * services)).toFixed(1)} across ${services} services, ${(wide / (2 * MaxEndpointsPerService)).toFixed(1)} within one service of ${MaxEndpointsPerService}`)
    expect(flood / (2 * services)).toBeLessThanOrEqual(8)
    expect(wide / (2 * MaxEndpointsPerService)).toBeLessThanOrEqual(8)
    expect(discovery.snapshot()).toStrictEqual({ services: {} })
    discovery.close()
  })
})

describe("Discovery's one-endpoint re-merge", () => {
  it("random walk: three sources' single updates, Resets and withdrawals leave the view, and what a subscriber folded from its updates, equal to the full merge", () => {
    for (const seed of [7, 8, 9, 77, 78, 79]) {
      const rng = prng(seed)
      const services = ["web", "api", "db"]
      const discovery = new Discovery({ log: () => {} })
      // In registration order, as the merge takes them; a withdrawn source comes back last.
      const sources: Array<{ readonly kind: string; readonly state: SourceState; emit: (update: EndpointUpdate) => void; stop: () => void }> = []
      const register = (kind: string) => {
        const source = { kind, state: new Map() as SourceState, emit: (_: EndpointUpdate) => {}, stop: () => {} }
        source.stop = discovery.register({ start: (emit) => ((source.emit = emit), () => {}) })
        sources.push(source)
      }
      for (const kind of ["static", "dns", "mdns"]) register(kind)
      const seen: SourceState = new Map()
      discovery.subscribe("*", (update) => applyUpdate(seen, update))
      for (let step = 0; step < 400; step++) {
        const i = rng.int(0, 2)
        const source = sources[i]!
        if (rng.int(0, 19) === 0) {
          source.stop()
          sources.splice(i, 1)
          register(source.kind)
        } else {
          const random = (): DiscoveredEndpoint => ({
            ...ep(rng.int(1, 4), { source: source.kind, weight: rng.int(1, 3) }),
            service: rng.pick(services),
            ...(rng.int(0, 1) === 0 ? {} : { zone: rng.pick(["a", "b"]) })
          })
          const update: EndpointUpdate = rng.pick<() => EndpointUpdate>([
            () => ({ _tag: "Add", endpoint: random() }),
            () => ({ _tag: "Change", endpoint: random() }),
            () => ({ _tag: "Remove", service: rng.pick(services), key: `10.0.0.${rng.int(1, 4)}:80` }),
            () => ({ _tag: "Reset", service: rng.pick(services), endpoints: rng.int(0, 2) === 0 ? [] : [random(), random()] })
          ])()
          applyUpdate(source.state, update)
          source.emit(update)
        }
        const expected = merged(sources.map((s) => s.state))
        for (const service of services) {
          // The same endpoints; their order is not part of the contract (the admin view sorts them).
          const sorted = (endpoints: Iterable<DiscoveredEndpoint>) => [...endpoints].sort((a, b) => a.host.localeCompare(b.host))
          const want = sorted(expected.get(service)?.values() ?? [])
          expect(sorted(discovery.endpoints(service)), `seed ${seed} step ${step}`).toStrictEqual(want)
          expect(sorted(seen.get(service)?.values() ?? []), `seed ${seed} step ${step} (subscriber)`).toStrictEqual(want)
        }
      }
      discovery.close()
    }
  })
})
