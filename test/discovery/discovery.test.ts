// The discovery service (src/discovery/discovery.ts): sources registered and withdrawn, their
// updates merged, subscribers getting a Reset first and then the merged Add/Remove/Change, the admin
// snapshot listing each endpoint with its sources. The sources here are in-memory ones the test drives.
import { afterEach, describe, expect, it, vi } from "vitest"
import { Discovery, type DiscoveryListener } from "../../src/discovery/discovery.ts"
import type { MergedEndpoint } from "../../src/discovery/endpointSet.ts"
import { endpointKey, type DiscoveredEndpoint, type DiscoverySource, type EndpointUpdate } from "../../src/discovery/types.ts"
import { Recorder } from "./recorder.ts"

const ep = (host: string, source: string, more: Partial<DiscoveredEndpoint> = {}): DiscoveredEndpoint => ({
  service: "web",
  host,
  port: 80,
  weight: 1,
  features: [],
  source,
  ...more
})

/** A source the test drives by hand; `initial` is emitted synchronously inside start. */
const handSource = (initial: ReadonlyArray<EndpointUpdate> = []) => {
  let emit: ((update: EndpointUpdate) => void) | undefined
  const state = { started: 0, stopped: 0 }
  const source: DiscoverySource = {
    start(e) {
      state.started += 1
      emit = e
      for (const update of initial) e(update)
      return () => {
        state.stopped += 1
      }
    }
  }
  return { source, state, emit: (update: EndpointUpdate) => emit!(update) }
}

/** Updates as short strings: "Reset web [10.0.0.1:80]", "Add 10.0.0.1:80", "Remove 10.0.0.1:80", "Change 10.0.0.1:80". */
const show = (update: EndpointUpdate<MergedEndpoint>): string => {
  switch (update._tag) {
    case "Reset":
      return `Reset ${update.service} [${update.endpoints.map(endpointKey).join(" ")}]`
    case "Remove":
      return `Remove ${update.key}`
    default:
      return `${update._tag} ${endpointKey(update.endpoint)}`
  }
}

let discovery: Discovery
afterEach(() => discovery.close())

/** A new Discovery with two hand-driven sources registered on it. */
const twoSources = () => {
  discovery = new Discovery()
  const sources = [handSource(), handSource()] as const
  for (const { source } of sources) discovery.register(source)
  return sources
}

const subscribe = (service: string) => {
  const updates = new Recorder<EndpointUpdate<MergedEndpoint>>()
  const unsubscribe = discovery.subscribe(service, updates.push)
  return { updates, unsubscribe, shown: () => updates.items.map(show) }
}

describe("Discovery", () => {
  it("a subscriber gets a Reset first (empty for an unknown service), then the adds and removes", () => {
    discovery = new Discovery()
    const dns = handSource()
    discovery.register(dns.source)
    const web = subscribe("web")
    dns.emit({ _tag: "Add", endpoint: ep("10.0.0.1", "dns") })
    dns.emit({ _tag: "Reset", service: "web", endpoints: [ep("10.0.0.2", "dns"), ep("10.0.0.3", "dns")] })
    dns.emit({ _tag: "Remove", service: "web", key: "10.0.0.3:80" })
    dns.emit({ _tag: "Change", endpoint: ep("10.0.0.2", "dns", { weight: 5 }) })
    expect(web.shown()).toStrictEqual(["Reset web []", "Add 10.0.0.1:80", "Remove 10.0.0.1:80", "Add 10.0.0.2:80", "Add 10.0.0.3:80", "Remove 10.0.0.3:80", "Change 10.0.0.2:80"])
    expect(discovery.endpoints("web").map((e) => e.weight)).toStrictEqual([5])
  })

  it("a late subscriber's Reset holds what is known; updates of other services do not reach it", () => {
    discovery = new Discovery()
    discovery.register(handSource([{ _tag: "Reset", service: "web", endpoints: [ep("10.0.0.1", "static"), ep("10.0.0.2", "static")] }]).source)
    const api = handSource()
    discovery.register(api.source)
    const web = subscribe("web")
    api.emit({ _tag: "Add", endpoint: ep("10.0.0.9", "mdns", { service: "api" }) })
    expect(web.shown()).toStrictEqual(["Reset web [10.0.0.1:80 10.0.0.2:80]"])
  })

  it('"*" gets a Reset per known service, then the updates of every service', () => {
    discovery = new Discovery()
    const source = handSource([
      { _tag: "Add", endpoint: ep("10.0.0.1", "dns") },
      { _tag: "Add", endpoint: ep("10.0.0.9", "dns", { service: "api" }) }
    ])
    discovery.register(source.source)
    const all = subscribe("*")
    source.emit({ _tag: "Add", endpoint: ep("10.0.0.8", "dns", { service: "db" }) })
    expect(all.shown()).toStrictEqual(["Reset web [10.0.0.1:80]", "Reset api [10.0.0.9:80]", "Add 10.0.0.8:80"])
  })

  it("the same endpoint from two sources is announced once; removal from one source keeps it; removal from both removes it", () => {
    const [mdns, fromStatic] = twoSources()
    const web = subscribe("web")
    mdns.emit({ _tag: "Add", endpoint: ep("10.0.0.1", "mdns", { weight: 9, zone: "z" }) })
    fromStatic.emit({ _tag: "Reset", service: "web", endpoints: [ep("10.0.0.1", "static", { weight: 2 })] })
    expect(discovery.endpoints("web")).toStrictEqual([{ ...ep("10.0.0.1", "static", { weight: 2 }), zone: "z", sources: ["static", "mdns"] }])
    fromStatic.emit({ _tag: "Reset", service: "web", endpoints: [] })
    expect(discovery.endpoints("web")).toMatchObject([{ weight: 9, sources: ["mdns"] }])
    mdns.emit({ _tag: "Remove", service: "web", key: "10.0.0.1:80" })
    expect(web.shown()).toStrictEqual(["Reset web []", "Add 10.0.0.1:80", "Change 10.0.0.1:80", "Change 10.0.0.1:80", "Remove 10.0.0.1:80"])
    expect(discovery.endpoints("web")).toStrictEqual([])
  })

  it("an update that changes nothing in the merged view reaches nobody", () => {
    discovery = new Discovery()
    const dns = handSource()
    discovery.register(dns.source)
    const web = subscribe("web")
    for (let i = 0; i < 3; i++) dns.emit({ _tag: "Reset", service: "web", endpoints: [ep("10.0.0.1", "dns")] })
    dns.emit({ _tag: "Remove", service: "web", key: "10.0.0.7:80" })
    expect(web.shown()).toStrictEqual(["Reset web []", "Add 10.0.0.1:80"])
  })

  it("a Reset keeps the object of every endpoint it leaves as it was (subscribers cache per object)", () => {
    discovery = new Discovery()
    const dns = handSource()
    discovery.register(dns.source)
    dns.emit({ _tag: "Reset", service: "web", endpoints: [ep("10.0.0.1", "dns"), ep("10.0.0.2", "dns"), ep("10.0.0.3", "dns", { adminPort: 9901 })] })
    const [one, two, three] = discovery.endpoints("web")
    dns.emit({ _tag: "Reset", service: "web", endpoints: [ep("10.0.0.1", "dns"), ep("10.0.0.2", "dns", { weight: 3 }), ep("10.0.0.3", "dns", { adminPort: 9902 }), ep("10.0.0.4", "dns")] })
    const after = discovery.endpoints("web")
    expect(after.map(endpointKey)).toStrictEqual(["10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80", "10.0.0.4:80"])
    expect(after[0]).toBe(one)
    expect(after[1]).not.toBe(two)
    expect(after[1]!.weight).toBe(3)
    expect(after[2]).not.toBe(three)
    expect(after[2]!.adminPort).toBe(9902)
  })

  it("an Add, a Change or a Reset altering only the admin port is a change (federation reads the admin port)", () => {
    const [mdns, dns] = twoSources()
    mdns.emit({ _tag: "Add", endpoint: ep("10.0.0.1", "mdns", { adminPort: 9901 }) })
    dns.emit({ _tag: "Reset", service: "web", endpoints: [ep("10.0.0.2", "dns", { adminPort: 9901 })] })
    const web = subscribe("web")
    mdns.emit({ _tag: "Add", endpoint: ep("10.0.0.1", "mdns", { adminPort: 9902 }) })
    mdns.emit({ _tag: "Change", endpoint: ep("10.0.0.1", "mdns", { adminPort: 9903 }) })
    dns.emit({ _tag: "Reset", service: "web", endpoints: [ep("10.0.0.2", "dns", { adminPort: 9904 })] })
    expect(discovery.snapshot().services["web"]!.map((endpoint) => endpoint.adminPort)).toStrictEqual([9903, 9904])
    expect(web.shown()).toStrictEqual(["Reset web [10.0.0.1:80 10.0.0.2:80]", "Change 10.0.0.1:80", "Change 10.0.0.1:80", "Change 10.0.0.2:80"])
  })

  it("unregistering a source stops it and withdraws what it reported; it cannot emit any more", () => {
    discovery = new Discovery()
    const dns = handSource([{ _tag: "Reset", service: "web", endpoints: [ep("10.0.0.1", "dns"), ep("10.0.0.2", "dns")] }])
    const mdns = handSource([{ _tag: "Add", endpoint: ep("10.0.0.2", "mdns") }])
    const unregister = discovery.register(dns.source)
    discovery.register(mdns.source)
    const web = subscribe("web")
    unregister()
    unregister()
    expect(dns.state).toStrictEqual({ started: 1, stopped: 1 })
    dns.emit({ _tag: "Add", endpoint: ep("10.0.0.3", "dns") })
    expect(web.shown()).toStrictEqual(["Reset web [10.0.0.1:80 10.0.0.2:80]", "Remove 10.0.0.1:80", "Change 10.0.0.2:80"])
    expect(discovery.endpoints("web")).toMatchObject([{ host: "10.0.0.2", sources: ["mdns"] }])
  })

  it("a source whose start throws leaves nothing behind", () => {
    discovery = new Discovery()
    const broken: DiscoverySource = {
      start(emit) {
        emit({ _tag: "Add", endpoint: ep("10.0.0.1", "dns") })
        throw new Error("no resolver")
      }
    }
    const web = subscribe("web")
    expect(() => discovery.register(broken)).toThrow("no resolver")
    expect(web.shown()).toStrictEqual(["Reset web []", "Add 10.0.0.1:80", "Remove 10.0.0.1:80"])
    expect(discovery.snapshot()).toStrictEqual({ services: {} })
  })

  it("after unsubscribe a listener hears nothing; a listener may unsubscribe itself while being called", () => {
    discovery = new Discovery()
    const dns = handSource()
    discovery.register(dns.source)
    const web = subscribe("web")
    const once: Array<string> = []
    const unsubscribeOnce = discovery.subscribe("web", (update) => {
      once.push(show(update))
      if (update._tag === "Add") unsubscribeOnce()
    })
    web.unsubscribe()
    dns.emit({ _tag: "Reset", service: "web", endpoints: [ep("10.0.0.1", "dns"), ep("10.0.0.2", "dns")] })
    expect(web.shown()).toStrictEqual(["Reset web []"])
    expect(once).toStrictEqual(["Reset web []", "Add 10.0.0.1:80"])
  })

  it("a listener that throws is logged and does not keep the update from the others", () => {
    const log = new Recorder<[string, Record<string, unknown>]>()
    discovery = new Discovery({ log: (event, fields) => log.push([event, fields]) })
    const dns = handSource()
    discovery.register(dns.source)
    const failing: DiscoveryListener = (update) => {
      if (update._tag === "Add") throw new Error("registry full")
    }
    discovery.subscribe("web", failing)
    const web = subscribe("web")
    dns.emit({ _tag: "Add", endpoint: ep("10.0.0.1", "dns") })
    expect(web.shown()).toStrictEqual(["Reset web []", "Add 10.0.0.1:80"])
    expect(log.items).toStrictEqual([["discovery.listener-failed", { service: "web", message: "registry full" }]])
  })

  it("a listener that throws, with a log that throws too, does not keep the update from the others", () => {
    discovery = new Discovery({
      log: () => {
        throw new Error("logger down")
      }
    })
    const dns = handSource()
    discovery.register(dns.source)
    discovery.subscribe("web", (update) => {
      if (update._tag === "Add") throw new Error("registry full")
    })
    const web = subscribe("web")
    const stderr: Array<string> = []
    const write = vi.spyOn(process.stderr, "write").mockImplementation((chunk) => (stderr.push(String(chunk)), true))
    try {
      dns.emit({ _tag: "Add", endpoint: ep("10.0.0.1", "dns") })
    } finally {
      write.mockRestore()
    }
    expect(web.shown()).toStrictEqual(["Reset web []", "Add 10.0.0.1:80"])
    expect(stderr.map((line) => JSON.parse(line) as unknown)).toMatchObject([{ event: "discovery.listener-failed", message: "registry full", logFailed: "logger down" }])
  })

  it("the snapshot lists services and endpoints in order, each with its address and sources", () => {
    discovery = new Discovery()
    discovery.register(handSource([{ _tag: "Reset", service: "web", endpoints: [ep("10.0.0.2", "static", { weight: 3 })] }]).source)
    discovery.register(
      handSource([
        { _tag: "Add", endpoint: ep("10.0.0.2", "mdns", { node: "node-b", version: "1.2", features: ["mesh/1"] }) },
        { _tag: "Add", endpoint: ep("10.0.0.1", "mdns") },
        { _tag: "Add", endpoint: ep("fd00::1", "mdns", { service: "api", port: 4143 }) }
      ]).source
    )
    const snapshot = discovery.snapshot()
    expect(Object.keys(snapshot.services)).toStrictEqual(["api", "web"])
    expect(snapshot.services["api"]!.map((e) => e.address)).toStrictEqual(["[fd00::1]:4143"])
    expect(snapshot.services["web"]).toStrictEqual([
      { address: "10.0.0.1:80", ...ep("10.0.0.1", "mdns"), sources: ["mdns"] },
      { address: "10.0.0.2:80", ...ep("10.0.0.2", "static", { weight: 3, node: "node-b", version: "1.2", features: ["mesh/1"] }), sources: ["static", "mdns"] }
    ])
    expect(JSON.parse(JSON.stringify(snapshot))).toStrictEqual(snapshot)
  })

  it("close stops every source and forgets every endpoint", () => {
    discovery = new Discovery()
    const a = handSource([{ _tag: "Add", endpoint: ep("10.0.0.1", "dns") }])
    const b = handSource()
    discovery.register(a.source)
    discovery.register(b.source)
    const web = subscribe("web")
    discovery.close()
    expect([a.state, b.state]).toStrictEqual([{ started: 1, stopped: 1 }, { started: 1, stopped: 1 }])
    b.emit({ _tag: "Add", endpoint: ep("10.0.0.2", "dns") })
    expect(web.shown()).toStrictEqual(["Reset web [10.0.0.1:80]"])
    expect(discovery.snapshot()).toStrictEqual({ services: {} })
  })
  it("lists(key) says whether any service lists the endpoint now, through Adds, Removes, Resets, a source withdrawn and close", () => {
    const discovery = new Discovery()
    const a = handSource()
    const stopA = discovery.register(a.source)
    const b = handSource()
    discovery.register(b.source)
    expect(discovery.lists("10.0.0.1:80")).toBe(false)
    // One address under two services (a route's canary backend lists its target's pod): listed until both drop it.
    a.emit({ _tag: "Add", endpoint: ep("10.0.0.1", "a") })
    a.emit({ _tag: "Add", endpoint: ep("10.0.0.1", "a", { service: "web-v2" }) })
    b.emit({ _tag: "Reset", service: "web", endpoints: [ep("10.0.0.1", "b", { weight: 5 }), ep("fd00::1", "b")] })
    expect(discovery.lists("10.0.0.1:80")).toBe(true)
    expect(discovery.lists("[fd00::1]:80")).toBe(true)
    a.emit({ _tag: "Remove", service: "web", key: "10.0.0.1:80" })
    b.emit({ _tag: "Reset", service: "web", endpoints: [ep("fd00::1", "b")] })
    expect(discovery.lists("10.0.0.1:80")).toBe(true) // web-v2 still lists it
    a.emit({ _tag: "Reset", service: "web-v2", endpoints: [] })
    expect(discovery.lists("10.0.0.1:80")).toBe(false)
    a.emit({ _tag: "Add", endpoint: ep("10.0.0.2", "a") })
    stopA()
    expect(discovery.lists("10.0.0.2:80")).toBe(false)
    expect(discovery.lists("[fd00::1]:80")).toBe(true)
    discovery.close()
    expect(discovery.lists("[fd00::1]:80")).toBe(false)
  })
})
