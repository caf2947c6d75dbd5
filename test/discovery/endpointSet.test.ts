// The pure core of discovery (src/discovery/endpointSet.ts): folding one source's updates, merging
// sources into one de-duplicated set per service by source priority, and the minimal diff between two
// merged sets; plus a seeded random walk checking that the diffs, applied in turn, rebuild the merge.
import { describe, expect, it } from "vitest"
import { applyUpdate, diff, merged, type MergedEndpoint, type MergedState, type SourceState } from "../../src/discovery/endpointSet.ts"
import { endpointKey, type DiscoveredEndpoint, type EndpointUpdate } from "../../src/discovery/types.ts"
import { prng } from "../helpers/prng.ts"

const ep = (host: string, port: number, source: string, more: Partial<DiscoveredEndpoint> = {}): DiscoveredEndpoint => ({
  service: "web",
  host,
  port,
  weight: 1,
  features: [],
  source,
  ...more
})

/** A new state with `updates` applied in turn. */
const fold = (updates: ReadonlyArray<EndpointUpdate>): SourceState => {
  const state: SourceState = new Map()
  for (const update of updates) applyUpdate(state, update)
  return state
}

const keysOf = (state: SourceState, service = "web"): Array<string> => [...(state.get(service)?.keys() ?? [])]

const only = (view: MergedState, service = "web"): Array<MergedEndpoint> => [...(view.get(service)?.values() ?? [])]

describe("applyUpdate", () => {
  it("a Reset sets the service's endpoints, keyed by host:port", () => {
    const state = fold([{ _tag: "Reset", service: "web", endpoints: [ep("10.0.0.1", 80, "dns"), ep("10.0.0.2", 80, "dns")] }])
    expect(keysOf(state)).toStrictEqual(["10.0.0.1:80", "10.0.0.2:80"])
  })

  it("a second Reset replaces the set instead of adding to it", () => {
    const state = fold([
      { _tag: "Reset", service: "web", endpoints: [ep("10.0.0.1", 80, "dns"), ep("10.0.0.2", 80, "dns")] },
      { _tag: "Reset", service: "web", endpoints: [ep("10.0.0.3", 80, "dns")] }
    ])
    expect(keysOf(state)).toStrictEqual(["10.0.0.3:80"])
  })

  it("an empty Reset drops the service; one for an unknown service changes nothing (and says so)", () => {
    const state = fold([{ _tag: "Reset", service: "web", endpoints: [ep("10.0.0.1", 80, "dns")] }])
    expect(applyUpdate(state, { _tag: "Reset", service: "api", endpoints: [] })).toBe(false)
    expect(keysOf(state)).toStrictEqual(["10.0.0.1:80"])
    expect(applyUpdate(state, { _tag: "Reset", service: "web", endpoints: [] })).toBe(true)
    expect(state.has("web")).toBe(false)
  })

  it("a Reset ignores endpoints of other services and leaves other services alone", () => {
    const state = fold([
      { _tag: "Reset", service: "api", endpoints: [{ ...ep("10.0.0.9", 90, "dns"), service: "api" }] },
      { _tag: "Reset", service: "web", endpoints: [ep("10.0.0.1", 80, "dns"), { ...ep("10.0.0.2", 80, "dns"), service: "api" }] }
    ])
    expect(keysOf(state)).toStrictEqual(["10.0.0.1:80"])
    expect(keysOf(state, "api")).toStrictEqual(["10.0.0.9:90"])
  })

  it("Add adds, Add of a known key replaces it, Change of an unknown key adds it", () => {
    const state = fold([
      { _tag: "Add", endpoint: ep("10.0.0.1", 80, "mdns") },
      { _tag: "Add", endpoint: ep("10.0.0.1", 80, "mdns", { weight: 7 }) },
      { _tag: "Change", endpoint: ep("10.0.0.2", 80, "mdns", { zone: "b" }) }
    ])
    expect(keysOf(state)).toStrictEqual(["10.0.0.1:80", "10.0.0.2:80"])
    expect(state.get("web")!.get("10.0.0.1:80")!.weight).toBe(7)
    expect(state.get("web")!.get("10.0.0.2:80")!.zone).toBe("b")
  })

  it("Remove drops one endpoint, the service with its last one, and an unknown key changes nothing", () => {
    const state = fold([{ _tag: "Add", endpoint: ep("10.0.0.1", 80, "mdns") }, { _tag: "Add", endpoint: ep("10.0.0.2", 80, "mdns") }])
    expect(applyUpdate(state, { _tag: "Remove", service: "web", key: "10.0.0.1:80" })).toBe(true)
    expect(keysOf(state)).toStrictEqual(["10.0.0.2:80"])
    expect(applyUpdate(state, { _tag: "Remove", service: "web", key: "10.0.0.7:80" })).toBe(false)
    expect(applyUpdate(state, { _tag: "Remove", service: "api", key: "10.0.0.2:80" })).toBe(false)
    expect(keysOf(state)).toStrictEqual(["10.0.0.2:80"])
    expect(applyUpdate(state, { _tag: "Remove", service: "web", key: "10.0.0.2:80" })).toBe(true)
    expect(state.has("web")).toBe(false)
  })

  it("updates only the service it names, in place: the others stay the same objects", () => {
    const state = fold([{ _tag: "Add", endpoint: ep("10.0.0.1", 80, "mdns") }, { _tag: "Add", endpoint: { ...ep("10.0.0.9", 90, "mdns"), service: "api" } }])
    const api = state.get("api")!
    applyUpdate(state, { _tag: "Add", endpoint: ep("10.0.0.2", 80, "mdns") })
    applyUpdate(state, { _tag: "Remove", service: "web", key: "10.0.0.1:80" })
    applyUpdate(state, { _tag: "Reset", service: "web", endpoints: [ep("10.0.0.3", 80, "mdns")] })
    expect(state.get("api")).toBe(api)
    expect(keysOf(state)).toStrictEqual(["10.0.0.3:80"])
    expect(keysOf(state, "api")).toStrictEqual(["10.0.0.9:90"])
  })

  it("keys IPv6 hosts with brackets", () => {
    expect(keysOf(fold([{ _tag: "Add", endpoint: ep("fd00::1", 80, "mdns") }]))).toStrictEqual(["[fd00::1]:80"])
    expect(endpointKey({ host: "fd00::1", port: 443 })).toBe("[fd00::1]:443")
  })
})

describe("merged", () => {
  const state = (...endpoints: Array<DiscoveredEndpoint>): SourceState =>
    fold(endpoints.map((endpoint) => ({ _tag: "Add", endpoint }) as const))

  it("one source: its endpoints, each listing that source", () => {
    const view = merged([state(ep("10.0.0.1", 80, "dns"), ep("10.0.0.2", 80, "dns"))])
    expect(only(view).map((e) => [endpointKey(e), e.sources])).toStrictEqual([
      ["10.0.0.1:80", ["dns"]],
      ["10.0.0.2:80", ["dns"]]
    ])
  })

  it("the same host:port from two sources is one endpoint listing both, the weight from the higher-priority source", () => {
    const mdns = state(ep("10.0.0.1", 80, "mdns", { weight: 5 }))
    const fromStatic = state(ep("10.0.0.1", 80, "static", { weight: 2 }))
    for (const order of [[mdns, fromStatic], [fromStatic, mdns]]) {
      const endpoints = only(merged(order))
      expect(endpoints).toHaveLength(1)
      expect(endpoints[0]).toMatchObject({ host: "10.0.0.1", port: 80, weight: 2, source: "static", sources: ["static", "mdns"] })
    }
  })

  it("priority is static > kubernetes > dns > mdns > unknown kinds, by the part before ':'", () => {
    const sources = ["gossip", "mdns", "dns", "kubernetes", "static:file"]
    const view = merged(sources.map((source, i) => state(ep("10.0.0.1", 80, source, { weight: i + 1 }))))
    expect(only(view)[0]).toMatchObject({ weight: 5, source: "static:file", sources: ["static:file", "kubernetes", "dns", "mdns", "gossip"] })
  })

  it("an address any source from this host or the operator reports is not offHost, whatever a network source says; reported only from the network, it is", () => {
    const fromDns = state(ep("127.0.0.1", 80, "dns", { offHost: true }))
    const fromMdns = state(ep("127.0.0.1", 80, "mdns", { offHost: true }))
    // The local directory (this host's own sidecars) ranks below every network source, static above them.
    for (const trusted of ["local", "static"]) {
      for (const order of [[fromDns, state(ep("127.0.0.1", 80, trusted))], [state(ep("127.0.0.1", 80, trusted)), fromDns]]) {
        expect(only(merged(order))[0]!.offHost, trusted).toBeUndefined()
      }
    }
    expect(only(merged([fromDns, fromMdns]))[0]).toMatchObject({ offHost: true, source: "dns" })
  })

  it("between sources of the same kind the one registered first wins, and the kind is listed once", () => {
    const view = merged([state(ep("10.0.0.1", 80, "dns", { weight: 3 })), state(ep("10.0.0.1", 80, "dns", { weight: 9 }))])
    expect(only(view)[0]).toMatchObject({ weight: 3, sources: ["dns"] })
  })

  it("zone, version and node the winner lacks come from the next source that has them; features from the first that lists any", () => {
    const view = merged([
      state(ep("10.0.0.1", 80, "mdns", { zone: "z1", version: "2.0", node: "n1", features: ["mesh/1", "stream"] })),
      state(ep("10.0.0.1", 80, "dns", { version: "1.9" })),
      state(ep("10.0.0.1", 80, "static", { weight: 4 }))
    ])
    expect(only(view)[0]).toStrictEqual({
      service: "web",
      host: "10.0.0.1",
      port: 80,
      weight: 4,
      zone: "z1",
      version: "1.9",
      node: "n1",
      features: ["mesh/1", "stream"],
      source: "static",
      sources: ["static", "dns", "mdns"]
    })
  })

  it("the same host on two ports is two endpoints; the same host:port in two services stays apart", () => {
    const view = merged([state(ep("10.0.0.1", 80, "dns"), ep("10.0.0.1", 81, "dns")), state({ ...ep("10.0.0.1", 80, "mdns"), service: "api" })])
    expect(only(view).map(endpointKey)).toStrictEqual(["10.0.0.1:80", "10.0.0.1:81"])
    expect(only(view, "api").map((e) => e.sources)).toStrictEqual([["mdns"]])
  })

  it("removal from one source keeps the endpoint, now as the remaining source reports it", () => {
    const dns = state(ep("10.0.0.1", 80, "dns", { weight: 3 }))
    const mdns = state(ep("10.0.0.1", 80, "mdns", { weight: 8, zone: "z" }))
    const before = merged([dns, mdns])
    expect(only(before)[0]).toMatchObject({ weight: 3, zone: "z", sources: ["dns", "mdns"] })
    applyUpdate(dns, { _tag: "Remove", service: "web", key: "10.0.0.1:80" })
    const after = merged([dns, mdns])
    expect(only(after)[0]).toMatchObject({ weight: 8, zone: "z", source: "mdns", sources: ["mdns"] })
    expect(diff(before, after)).toStrictEqual([{ _tag: "Change", endpoint: only(after)[0] }])
  })

  it("restricted to some services it merges only those, and leaves out services nobody reports", () => {
    const sources = [state(ep("10.0.0.1", 80, "dns"), { ...ep("10.0.0.2", 80, "dns"), service: "api" })]
    expect([...merged(sources, ["api", "nobody"]).keys()]).toStrictEqual(["api"])
    expect([...merged(sources).keys()]).toStrictEqual(["web", "api"])
    expect(merged([]).size).toBe(0)
  })
})

describe("diff", () => {
  const view = (...endpoints: Array<DiscoveredEndpoint>): MergedState => merged([fold(endpoints.map((endpoint) => ({ _tag: "Add", endpoint }) as const))])

  it("no difference, no updates", () => {
    expect(diff(view(ep("10.0.0.1", 80, "dns")), view(ep("10.0.0.1", 80, "dns")))).toStrictEqual([])
    expect(diff(new Map(), new Map())).toStrictEqual([])
  })

  it("adds, removes (before adds) and changes, nothing for endpoints that stayed the same", () => {
    const before = view(ep("10.0.0.1", 80, "dns"), ep("10.0.0.2", 80, "dns"), ep("10.0.0.3", 80, "dns"))
    const after = view(ep("10.0.0.2", 80, "dns", { weight: 4 }), ep("10.0.0.3", 80, "dns"), ep("10.0.0.4", 80, "dns"))
    expect(diff(before, after)).toStrictEqual([
      { _tag: "Remove", service: "web", key: "10.0.0.1:80" },
      { _tag: "Change", endpoint: after.get("web")!.get("10.0.0.2:80") },
      { _tag: "Add", endpoint: after.get("web")!.get("10.0.0.4:80") }
    ])
  })

  it("any field a subscriber sees changing is a Change: zone, version, node, features, source", () => {
    const base = ep("10.0.0.1", 80, "dns")
    const changes: Array<Partial<DiscoveredEndpoint>> = [{ zone: "a" }, { version: "2" }, { node: "n" }, { features: ["x"] }, { source: "mdns" }]
    for (const change of changes) expect(diff(view(base), view({ ...base, ...change })).map((u) => u._tag), JSON.stringify(change)).toStrictEqual(["Change"])
  })

  it("a service that disappears is one Remove per endpoint; a new one is one Add per endpoint", () => {
    const web = view(ep("10.0.0.1", 80, "dns"), ep("10.0.0.2", 80, "dns"))
    expect(diff(web, new Map())).toStrictEqual([
      { _tag: "Remove", service: "web", key: "10.0.0.1:80" },
      { _tag: "Remove", service: "web", key: "10.0.0.2:80" }
    ])
    expect(diff(new Map(), web).map((u) => u._tag)).toStrictEqual(["Add", "Add"])
  })

  it("random walk: three sources updating at random; the diffs, folded in turn, always rebuild the merged view", () => {
    for (const seed of [1, 2, 3, 42, 1234]) {
      const rng = prng(seed)
      const kinds = ["static", "dns", "mdns"]
      const states: Array<SourceState> = kinds.map(() => new Map())
      let view: MergedState = new Map()
      const rebuilt: SourceState = new Map()
      for (let step = 0; step < 300; step++) {
        const i = rng.int(0, 2)
        const random = (): DiscoveredEndpoint => ({
          ...ep(`10.0.0.${rng.int(1, 4)}`, 80, kinds[i]!, { weight: rng.int(1, 3) }),
          service: rng.pick(["web", "api"]),
          ...(rng.int(0, 1) === 0 ? {} : { zone: rng.pick(["a", "b"]) })
        })
        const update: EndpointUpdate = rng.pick<() => EndpointUpdate>([
          () => ({ _tag: "Add", endpoint: random() }),
          () => ({ _tag: "Change", endpoint: random() }),
          () => ({ _tag: "Remove", service: rng.pick(["web", "api"]), key: `10.0.0.${rng.int(1, 4)}:80` }),
          () => ({ _tag: "Reset", service: "web", endpoints: rng.int(0, 2) === 0 ? [] : [random(), random()] })
        ])()
        applyUpdate(states[i]!, update)
        const next = merged(states)
        const updates = diff(view, next)
        for (const change of updates) applyUpdate(rebuilt, change)
        expect(rebuilt, `seed ${seed} step ${step}`).toStrictEqual(next)
        expect(diff(next, next)).toStrictEqual([])
        view = next
      }
    }
  })
})
