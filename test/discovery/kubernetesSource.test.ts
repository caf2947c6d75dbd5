// Kubernetes EndpointSlice discovery (src/discovery/kubernetesSource.ts) against a small fake API
// server on 127.0.0.1 (test/discovery/fakeKubeApi.ts: list + streamed watch) that the test changes
// while the source watches: the initial list, an added slice, a removed endpoint, readiness flips
// (ready / serving / terminating), the weight annotation, a deleted slice, a watch the server
// drops, a watch that fails (the source restarts the informer after its backoff; a wall clock step
// does not restart the backoff series) and an expired history (410 Gone: list again). Every step waits, bounded, for the Reset it causes.
import { afterEach, describe, expect, it } from "vitest"
import { endpointsOfSlices, kubernetesSource, takesTraffic, weightOf } from "../../src/discovery/kubernetesSource.ts"
import { endpointKey, type DiscoveredEndpoint, type EndpointUpdate } from "../../src/discovery/types.ts"
import { HOUR_MS, steppedWallClock } from "../support/wallClock.ts"
import { endpointSlice, FakeKubeApi } from "./fakeKubeApi.ts"
import { Recorder } from "./recorder.ts"

type Reset = Extract<EndpointUpdate, { _tag: "Reset" }>

const apis: Array<FakeKubeApi> = []
const stops: Array<() => void> = []
afterEach(async () => {
  for (const stop of stops.splice(0)) stop()
  await Promise.all(apis.splice(0).map((api) => api.close()))
})

const summary = (endpoints: ReadonlyArray<DiscoveredEndpoint>): Array<string> =>
  endpoints.map((e) => `${endpointKey(e)}#${e.weight}`).sort()

/** A fake API server, a source watching Service "web" in "shop" as mesh service "web", and what it emits and logs. */
const setup = async (backoff: { readonly retryMs: number; readonly maxRetryMs: number } = { retryMs: 20, maxRetryMs: 100 }) => {
  const api = await FakeKubeApi.start("shop")
  apis.push(api)
  const updates = new Recorder<Reset>()
  const logs = new Recorder<{ readonly event: string; readonly fields: Record<string, unknown> }>()
  const start = () => {
    const stop = kubernetesSource({
      service: "web",
      namespace: "shop",
      kubernetesService: "web",
      kubeConfig: api.kubeConfig(),
      ...backoff,
      log: (event, fields) => logs.push({ event, fields })
    }).start((update) => {
      if (update._tag !== "Reset") throw new Error(`unexpected ${update._tag}`)
      updates.push(update)
    })
    stops.push(stop)
    return stop
  }
  // Each expectSet looks only at Resets after the one the previous expectSet matched.
  let from = 0
  /** The next Reset whose endpoints summarise to `expected`. */
  const expectSet = async (expected: Array<string>, timeoutMs = 3000): Promise<Reset> => {
    const found = await updates.waitFor((update) => JSON.stringify(summary(update.endpoints)) === JSON.stringify([...expected].sort()), { from, timeoutMs })
    from = updates.items.indexOf(found) + 1
    return found
  }
  return { api, updates, logs, start, expectSet }
}

describe("endpoint rules (pure)", () => {
  it("takes traffic: not terminating, and ready or serving; missing conditions as the API defines", () => {
    expect(takesTraffic(undefined)).toBe(true)
    expect(takesTraffic({})).toBe(true)
    expect(takesTraffic({ ready: true })).toBe(true)
    expect(takesTraffic({ ready: false })).toBe(false)
    expect(takesTraffic({ ready: false, serving: true })).toBe(true)
    expect(takesTraffic({ ready: false, serving: true, terminating: true })).toBe(false)
    expect(takesTraffic({ ready: true, terminating: true })).toBe(false)
    expect(takesTraffic({ ready: false, serving: false, terminating: false })).toBe(false)
  })

  it("weights are positive integers from the annotation, else 1", () => {
    expect(weightOf(undefined)).toBe(1)
    expect(weightOf("7")).toBe(7)
    expect(weightOf("0")).toBe(1)
    expect(weightOf("-3")).toBe(1)
    expect(weightOf("2.5")).toBe(1)
    expect(weightOf("heavy")).toBe(1)
  })

  it("maps slices to endpoints: the named port, zone, node, source; slices without the port are skipped", () => {
    const noPort: Array<string> = []
    const endpoints = endpointsOfSlices(
      [
        endpointSlice("web-a", [{ ip: "10.1.0.10", zone: "z1", node: "node-1" }, { ip: "10.1.0.11", ready: false }], { weight: "3" }),
        endpointSlice("web-b", [{ ip: "10.1.0.12" }], { portName: "http", port: 8080 }),
        endpointSlice("web-c", [{ ip: "10.1.0.10" }], { port: 4143 })
      ],
      { service: "web", portName: "mesh", weightAnnotation: "iip-mesh/weight", noPort: (slice) => noPort.push(slice) }
    )
    expect(endpoints).toStrictEqual([{ service: "web", host: "10.1.0.10", port: 4143, weight: 3, features: [], source: "kubernetes", offHost: true, zone: "z1", node: "node-1" }])
    expect(noPort).toStrictEqual(["web-b"])
  })
})

describe("the admin control port of Kubernetes endpoints (federation)", () => {
  it("is the slice's port named admin-control; none without it", () => {
    const slice = endpointSlice("web-a", [{ ip: "10.1.0.10" }])
    const withAdmin = { ...slice, ports: [...(slice.ports ?? []), { name: "admin-control", port: 9991 }, { name: "admin", port: 9990 }] }
    const options = { service: "web", portName: "mesh", weightAnnotation: "iip-mesh/weight" }
    expect(endpointsOfSlices([withAdmin], options)[0]!.adminPort).toBe(9991)
    expect(endpointsOfSlices([slice], options)[0]!.adminPort).toBeUndefined()
  })
})

describe("the identity of Kubernetes endpoints", () => {
  it("comes from the ServiceAccount label the Service's slices carry, in the sidecar's trust domain; none without it", () => {
    const labelled = endpointSlice("web-a", [{ ip: "10.1.0.10" }])
    const withLabel = { ...labelled, metadata: { ...labelled.metadata, labels: { ...labelled.metadata!.labels, "iip-mesh/service-account": "web" } } }
    const options = { service: "web", portName: "mesh", weightAnnotation: "iip-mesh/weight" }
    expect(endpointsOfSlices([withLabel], { ...options, trustDomain: "iip-mesh.local" })[0]!.identity).toBe("spiffe://iip-mesh.local/ns/shop/sa/web")
    // No trust domain (mTLS off), no label, or a label that makes no valid ID: no identity named.
    expect(endpointsOfSlices([withLabel], options)[0]!.identity).toBeUndefined()
    expect(endpointsOfSlices([labelled], { ...options, trustDomain: "iip-mesh.local" })[0]!.identity).toBeUndefined()
    const bad = { ...withLabel, metadata: { ...withLabel.metadata, labels: { ...withLabel.metadata.labels, "iip-mesh/service-account": "a/../b" } } }
    expect(endpointsOfSlices([bad], { ...options, trustDomain: "iip-mesh.local" })[0]!.identity).toBeUndefined()
  })
})

describe("the version of Kubernetes endpoints", () => {
  it("comes from the iip-mesh/version label a version Service's slices carry; none without it or for a value that is no label", () => {
    const slice = endpointSlice("pricing-v2-a", [{ ip: "10.1.0.20" }], { service: "pricing-v2" })
    const labelled = (version: string) => ({ ...slice, metadata: { ...slice.metadata, labels: { ...slice.metadata!.labels, "iip-mesh/version": version } } })
    const options = { service: "pricing", portName: "mesh", weightAnnotation: "iip-mesh/weight" }
    expect(endpointsOfSlices([labelled("v2")], options)[0]!.version).toBe("v2")
    expect(endpointsOfSlices([slice], options)[0]!.version).toBeUndefined()
    expect(endpointsOfSlices([labelled("-bad-")], options)[0]!.version).toBeUndefined()
  })
})

describe("kubernetesSource against a fake API server", () => {
  it("lists, then follows added slices, removed endpoints, readiness, weights and deleted slices", async () => {
    const { api, updates, start, expectSet } = await setup()
    api.apply("ADDED", endpointSlice("web-a", [{ ip: "10.1.0.10", zone: "z1", node: "node-1" }, { ip: "10.1.0.11" }]))
    api.apply("ADDED", endpointSlice("other", [{ ip: "10.9.0.1" }], { service: "other" }))
    start()

    // Initial list: one Reset with both ready endpoints, the other Service's slice left out.
    const first = await expectSet(["10.1.0.10:4143#1", "10.1.0.11:4143#1"])
    expect(first.endpoints.find((e) => e.host === "10.1.0.10")).toStrictEqual({
      service: "web", host: "10.1.0.10", port: 4143, weight: 1, features: [], source: "kubernetes", offHost: true, zone: "z1", node: "node-1"
    })
    const list = await api.requests.waitFor((r) => r.kind === "list")
    expect(list.url.searchParams.get("labelSelector")).toBe("kubernetes.io/service-name=web")
    expect(list.authorization).toBe("Bearer test-token")
    await api.requests.waitFor((r) => r.kind === "watch")

    // A second slice is added.
    const mark = updates.mark
    api.apply("ADDED", endpointSlice("web-b", [{ ip: "10.1.0.20" }]))
    await expectSet(["10.1.0.10:4143#1", "10.1.0.11:4143#1", "10.1.0.20:4143#1"])
    expect(updates.items.length).toBe(mark + 1)

    // An endpoint removed from a slice.
    api.apply("MODIFIED", endpointSlice("web-a", [{ ip: "10.1.0.10", zone: "z1", node: "node-1" }]))
    await expectSet(["10.1.0.10:4143#1", "10.1.0.20:4143#1"])

    // Readiness flip: not ready → dropped; ready again → back.
    api.apply("MODIFIED", endpointSlice("web-b", [{ ip: "10.1.0.20", ready: false, serving: false }]))
    await expectSet(["10.1.0.10:4143#1"])
    api.apply("MODIFIED", endpointSlice("web-b", [{ ip: "10.1.0.20", ready: true, serving: true }]))
    await expectSet(["10.1.0.10:4143#1", "10.1.0.20:4143#1"])

    // Serving but not ready counts; terminating does not, even when serving.
    api.apply("MODIFIED", endpointSlice("web-b", [{ ip: "10.1.0.20", ready: false, serving: true, terminating: false }, { ip: "10.1.0.21", ready: false, serving: true, terminating: true }]))
    api.apply("ADDED", endpointSlice("web-c", [{ ip: "10.1.0.30" }]))
    // (the marker slice web-c shows the change was processed; the set is the same otherwise, so no Reset came for it alone)
    await expectSet(["10.1.0.10:4143#1", "10.1.0.20:4143#1", "10.1.0.30:4143#1"])
    expect(updates.items.some((u) => u.endpoints.some((e) => e.host === "10.1.0.21"))).toBe(false)
    api.apply("MODIFIED", endpointSlice("web-b", [{ ip: "10.1.0.20", ready: false, serving: true, terminating: true }]))
    await expectSet(["10.1.0.10:4143#1", "10.1.0.30:4143#1"])
    api.apply("DELETED", endpointSlice("web-c", []))
    await expectSet(["10.1.0.10:4143#1"])

    // Weight from the slice's annotation.
    api.apply("MODIFIED", endpointSlice("web-b", [{ ip: "10.1.0.20" }], { weight: "5" }))
    await expectSet(["10.1.0.10:4143#1", "10.1.0.20:4143#5"])

    // A deleted slice takes its endpoints with it.
    api.apply("DELETED", endpointSlice("web-a", []))
    await expectSet(["10.1.0.20:4143#5"])
    api.apply("DELETED", endpointSlice("web-b", []))
    await expectSet([])
  })

  it("an empty Service is reported as an empty set", async () => {
    const { start, expectSet } = await setup()
    start()
    const reset = await expectSet([])
    expect(reset).toStrictEqual({ _tag: "Reset", service: "web", endpoints: [] })
  })

  it("a watch the server drops is re-opened and later events still arrive", async () => {
    const { api, start, expectSet } = await setup()
    api.apply("ADDED", endpointSlice("web-a", [{ ip: "10.1.0.10" }]))
    start()
    await expectSet(["10.1.0.10:4143#1"])
    await api.requests.waitFor((r) => r.kind === "watch")

    const mark = api.requests.mark
    api.dropWatches()
    // A change while no watch is open arrives by the re-watch (from the last resourceVersion).
    api.apply("ADDED", endpointSlice("web-b", [{ ip: "10.1.0.20" }]))
    await expectSet(["10.1.0.10:4143#1", "10.1.0.20:4143#1"])
    const rewatch = await api.requests.waitFor((r) => r.kind === "watch", { from: mark, timeoutMs: 3000 })
    expect(Number(rewatch.url.searchParams.get("resourceVersion"))).toBeGreaterThan(100)

    // And the re-opened stream carries later events.
    await waitUntil(() => api.openWatches === 1)
    api.apply("MODIFIED", endpointSlice("web-a", [{ ip: "10.1.0.10", ready: false }]))
    await expectSet(["10.1.0.20:4143#1"])
  })

  /**
   * A source with a 20 ms retry (doubling up to 60 s) whose list has web-a, once its watch is open.
   * A long maxRetryMs: an informer that lived that long before failing starts the series again,
   * and a loaded machine can take 100 ms to list and watch.
   */
  const watchingWebA = async () => {
    const watching = await setup({ retryMs: 20, maxRetryMs: 60_000 })
    watching.api.apply("ADDED", endpointSlice("web-a", [{ ip: "10.1.0.10" }]))
    watching.start()
    await watching.expectSet(["10.1.0.10:4143#1"])
    await waitUntil(() => watching.api.openWatches === 1)
    return watching
  }

  it("a failing watch restarts the informer after the backoff: a fresh list, then a watch", async () => {
    const { api, logs, expectSet } = await watchingWebA()

    const mark = api.requests.mark
    api.failWatches = 2
    api.dropWatches()
    const failed = await logs.waitFor((l) => l.event === "discovery.kubernetes-failed", { timeoutMs: 3000 })
    expect(failed.fields).toMatchObject({ service: "web", namespace: "shop", kubernetesService: "web", failures: 1, retryInMs: 20 })
    // The restarted informer lists fine, but its watch fails too: the backoff doubles.
    await logs.waitFor((l) => l.event === "discovery.kubernetes-failed" && l.fields["failures"] === 2 && l.fields["retryInMs"] === 40, { timeoutMs: 3000 })
    await api.requests.waitFor((r) => r.kind === "list", { from: mark, timeoutMs: 3000 })
    await waitUntil(() => api.openWatches === 1)

    api.apply("ADDED", endpointSlice("web-b", [{ ip: "10.1.0.20" }]))
    await expectSet(["10.1.0.10:4143#1", "10.1.0.20:4143#1"])
  })

  it("a wall clock stepped forward an hour does not make a short-lived informer's failure start a new series: the backoff goes on doubling", async () => {
    const { api, logs } = await watchingWebA()
    api.failWatches = 1
    api.dropWatches()
    await logs.waitFor((l) => l.event === "discovery.kubernetes-failed" && l.fields["failures"] === 1, { timeoutMs: 3000 })
    // The restarted informer lists and watches; then the wall clock jumps and its watch fails.
    await waitUntil(() => api.openWatches === 1)
    const clock = steppedWallClock()
    try {
      clock.step(HOUR_MS)
      const from = logs.items.length
      api.failWatches = 1
      api.dropWatches()
      const failed = await logs.waitFor((l) => l.event === "discovery.kubernetes-failed", { from, timeoutMs: 3000 })
      expect(failed.fields).toMatchObject({ failures: 2, retryInMs: 40 })
    } finally {
      clock.restore()
    }
  })

  it("an expired resourceVersion (410 Gone) makes it list again; a slice deleted meanwhile is gone", async () => {
    const { api, start, expectSet } = await setup()
    api.apply("ADDED", endpointSlice("web-a", [{ ip: "10.1.0.10" }]))
    api.apply("ADDED", endpointSlice("web-b", [{ ip: "10.1.0.20" }]))
    start()
    await expectSet(["10.1.0.10:4143#1", "10.1.0.20:4143#1"])
    await waitUntil(() => api.openWatches === 1)

    const mark = api.requests.mark
    api.dropWatches()
    api.apply("DELETED", endpointSlice("web-a", []))
    api.expireHistory()
    await expectSet(["10.1.0.20:4143#1"])
    await api.requests.waitFor((r) => r.kind === "list", { from: mark, timeoutMs: 3000 })
  })

  it("after stop it emits nothing and closes its watch", async () => {
    const { api, updates, start, expectSet } = await setup()
    api.apply("ADDED", endpointSlice("web-a", [{ ip: "10.1.0.10" }]))
    const stop = start()
    await expectSet(["10.1.0.10:4143#1"])
    await waitUntil(() => api.openWatches === 1)
    const mark = updates.mark
    stop()
    await waitUntil(() => api.openWatches === 0)
    api.apply("ADDED", endpointSlice("web-b", [{ ip: "10.1.0.20" }]))
    // A bounded wait for a Reset that must not come.
    await expect(updates.waitFor(() => true, { from: mark, timeoutMs: 200 })).rejects.toThrow()
  })
  it("stopped while its watch request is in flight, it still closes the watch once the answer comes", async () => {
    const { api, updates, start, expectSet } = await setup()
    api.apply("ADDED", endpointSlice("web-a", [{ ip: "10.1.0.10" }]))
    const stop = start()
    await expectSet(["10.1.0.10:4143#1"])
    // The server has taken the watch request; the client has not yet read the answer's headers.
    await api.requests.waitFor((r) => r.kind === "watch")
    const mark = updates.mark
    stop()
    await api.closedWatches.waitFor(() => true, { timeoutMs: 3000 })
    expect(api.openWatches).toBe(0)
    api.apply("ADDED", endpointSlice("web-b", [{ ip: "10.1.0.20" }]))
    await expect(updates.waitFor(() => true, { from: mark, timeoutMs: 200 })).rejects.toThrow()
  })
})

/** Polls `condition` until it holds, at most `timeoutMs`. */
const waitUntil = async (condition: () => boolean, timeoutMs = 3000): Promise<void> => {
  const deadline = Date.now() + timeoutMs
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`condition not met within ${timeoutMs} ms`)
    await new Promise((resolve) => setTimeout(resolve, 5))
  }
}
