// The cap on one source's endpoints per service (MaxEndpointsPerService, src/discovery/types.ts),
// which the Discovery service applies to every source: a Reset beyond it keeps the first endpoints,
// an Add beyond it is refused (and waits) until a Remove makes room, and each is logged with what was left out.
// A single Add, Change or Remove re-merges that one endpoint (before, a flood of Adds into one service
// re-merged the whole service each time: 5,000 took 52 s); a random walk checks the result is the
// full merge.
import { describe, expect, it } from "vitest"
import { Discovery } from "../../src/discovery/discovery.ts"
import { applyUpdate, emptyState, leftOutByCap, merged, type SourceState } from "../../src/discovery/endpointSet.ts"
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
    const state = applyUpdate(emptyState, update)
    expect(state.get("web")!.size).toBe(MaxEndpointsPerService)
    expect(state.get("web")!.has("10.0.0.0:80")).toBe(true)
    expect(leftOutByCap(update, state)).toBe(500)
  })

  it("an Add (or a Change of an unknown key) beyond the cap changes nothing; a Change of a known one applies", () => {
    const full = applyUpdate(emptyState, { _tag: "Reset", service: "web", endpoints: many(MaxEndpointsPerService) })
    const add: EndpointUpdate = { _tag: "Add", endpoint: ep(MaxEndpointsPerService) }
    expect(applyUpdate(full, add)).toBe(full)
    expect(leftOutByCap(add, full)).toBe(1)
    expect(applyUpdate(full, { _tag: "Change", endpoint: ep(MaxEndpointsPerService) })).toBe(full)
    const changed = applyUpdate(full, { _tag: "Change", endpoint: ep(7, { weight: 5 }) })
    expect(changed.get("web")!.get("10.0.0.7:80")!.weight).toBe(5)
    // Another service has a cap of its own.
    expect(applyUpdate(full, { _tag: "Add", endpoint: ep(1, { service: "api" }) }).get("api")!.size).toBe(1)
    const room = applyUpdate(full, { _tag: "Remove", service: "web", key: "10.0.0.7:80" })
    expect(applyUpdate(room, add).get("web")!.has(`${ep(MaxEndpointsPerService).host}:80`)).toBe(true)
  })
})

describe("Discovery with a source past the cap", () => {
  it("logs what it left out, per update, naming the service and the source", () => {
    const logs = new Recorder<[string, Record<string, unknown>]>()
    const discovery = new Discovery({ log: (event, fields) => logs.push([event, fields]) })
    let emit: (update: EndpointUpdate) => void = () => {}
    const source: DiscoverySource = { start: (e) => ((emit = e), () => {}) }
    discovery.register(source)
    emit({ _tag: "Reset", service: "web", endpoints: many(MaxEndpointsPerService + 3) })
    expect(discovery.endpoints("web")).toHaveLength(MaxEndpointsPerService)
    emit({ _tag: "Add", endpoint: ep(MaxEndpointsPerService + 10) })
    expect(discovery.endpoints("web")).toHaveLength(MaxEndpointsPerService)
    expect(logs.items).toStrictEqual([
      ["discovery.endpoints-capped", { service: "web", source: "mdns", limit: MaxEndpointsPerService, leftOut: 3 }],
      ["discovery.endpoints-capped", { service: "web", source: "mdns", limit: MaxEndpointsPerService, leftOut: 1 }]
    ])
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

describe("Discovery's one-endpoint re-merge", () => {
  it("random walk: three sources' single updates, Resets and withdrawals leave the view equal to the full merge", () => {
    for (const seed of [7, 8, 9, 77]) {
      const rng = prng(seed)
      const kinds = ["static", "dns", "mdns"]
      const discovery = new Discovery({ log: () => {} })
      const emits: Array<(update: EndpointUpdate) => void> = []
      const states: Array<SourceState> = kinds.map(() => emptyState)
      for (const _ of kinds) discovery.register({ start: (e) => (emits.push(e), () => {}) })
      for (let step = 0; step < 300; step++) {
        const i = rng.int(0, 2)
        const random = (): DiscoveredEndpoint => ({
          ...ep(rng.int(1, 4), { source: kinds[i]!, weight: rng.int(1, 3) }),
          service: rng.pick(["web", "api"]),
          ...(rng.int(0, 1) === 0 ? {} : { zone: rng.pick(["a", "b"]) })
        })
        const update: EndpointUpdate = rng.pick<() => EndpointUpdate>([
          () => ({ _tag: "Add", endpoint: random() }),
          () => ({ _tag: "Change", endpoint: random() }),
          () => ({ _tag: "Remove", service: rng.pick(["web", "api"]), key: `10.0.0.${rng.int(1, 4)}:80` }),
          () => ({ _tag: "Reset", service: "web", endpoints: rng.int(0, 2) === 0 ? [] : [random(), random()] })
        ])()
        states[i] = applyUpdate(states[i]!, update)
        emits[i]!(update)
        const expected = merged(states)
        for (const service of ["web", "api"]) {
          // The same endpoints; their order is not part of the contract (the admin view sorts them).
          const sorted = (endpoints: Iterable<DiscoveredEndpoint>) => [...endpoints].sort((a, b) => a.host.localeCompare(b.host))
          expect(sorted(discovery.endpoints(service)), `seed ${seed} step ${step}`).toStrictEqual(sorted(expected.get(service)?.values() ?? []))
        }
      }
      discovery.close()
    }
  })
})
