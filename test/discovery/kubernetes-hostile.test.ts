// The EndpointSlice source (src/discovery/kubernetesSource.ts, kubernetesWatch.ts) against an API
// server that misbehaves (test/discovery/fakeKubeApi.ts): one that answers every watch with an
// event and ends it at once, one whose history is always expired (410 Gone on every watch), and
// annotations out of range. The watch must not reconnect in a tight loop. And EndpointSlice
// objects that are not what the API defines (whoever may write slices in the namespace, or a
// server in the middle): one malformed slice threw out of the watch's change handler (uncaught),
// and the service's good endpoints were never reported; ports and addresses out of range were
// dialled and shown.
import { mkdtempSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { afterEach, describe, expect } from "vitest"
import { endpointsOfSlices, kubernetesSource, weightOf } from "../../src/discovery/kubernetesSource.ts"
import { KubeConfig, type V1EndpointSlice } from "@kubernetes/client-node"
import { MaxListBytes } from "../../src/discovery/kubernetesGet.ts"
import { MaxWatchLineBytes, watchKubernetes } from "../../src/discovery/kubernetesWatch.ts"
import { type EndpointUpdate, MaxWeight } from "../../src/discovery/types.ts"
import { it } from "../support/cleanupTest.ts"
import type { Cleanup } from "../support/iipRaw.ts"
import { tcpBufferMaxima } from "../support/socketBuffers.ts"
import { endpointSlice, FakeKubeApi } from "./fakeKubeApi.ts"
import { Recorder } from "./recorder.ts"

/**
 * What the fake server may have written that the client never read: the kernel's socket buffers
 * of both ends at their largest (tcp_rmem, tcp_wmem: 16 MiB each in a namespace set so, where a
 * fixed 16 MiB allowance failed) and a chunk or line in flight.
 */
const inSocketBuffers = (): number => {
  const { receive, send } = tcpBufferMaxima()
  return receive + send + 2 * 1024 * 1024
}

const apis: Array<FakeKubeApi> = []
const stops: Array<() => void> = []
afterEach(async () => {
  for (const stop of stops.splice(0)) stop()
  await Promise.all(apis.splice(0).map((api) => api.close()))
})

/**
 * Watches the slices of "shop" with `kubeConfig` (the list and the watch read the configuration's
 * credentials): the recorder of the informer's failures (retried at 20 ms, doubling to 100).
 */
const watchSlices = (kubeConfig: KubeConfig, options: { readonly maxHeldBytes?: number } = {}) => {
  const failures = new Recorder<{ readonly message: string; readonly retryInMs: number | undefined }>()
  stops.push(watchKubernetes({
    kubeConfig,
    path: "/apis/discovery.k8s.io/v1/namespaces/shop/endpointslices",
    namespace: "shop",
    onChange: () => {},
    onFailed: (error, _failures, retryInMs) => failures.push({ message: String(error), retryInMs }),
    retryMs: 20,
    maxRetryMs: 100,
    ...options
  }))
  return failures
}

/** Watches as watchSlices until the informer fails once: that failure, and the recorder of the ones that follow. */
const firstWatchFailure = async (kubeConfig: KubeConfig, options: { readonly maxHeldBytes?: number } = {}) => {
  const failures = watchSlices(kubeConfig, options)
  return { ...(await failures.waitFor(() => true, { timeoutMs: 3000 })), failures }
}

/** A fake API server with one slice, and kubernetesSource watching it: both ended by `cleanup` (its test's own: these tests run side by side). */
const start = async (cleanup: Cleanup) => {
  const api = await FakeKubeApi.start("shop")
  cleanup.add(() => api.close())
  api.apply("ADDED", endpointSlice("web-a", [{ ip: "10.1.0.10" }]))
  const updates = new Recorder<unknown>()
  cleanup.add(kubernetesSource({ service: "web", namespace: "shop", kubernetesService: "web", kubeConfig: api.kubeConfig(), retryMs: 20, maxRetryMs: 100, log: () => {} }).start(updates.push))
  await updates.waitFor(() => true, { timeoutMs: 3000 })
  return api
}

/** The watch requests the server gets within `ms` from now. */
const watchesWithin = async (api: FakeKubeApi, ms: number): Promise<number> => {
  const mark = api.requests.mark
  await new Promise((resolve) => setTimeout(resolve, ms))
  return api.requests.items.slice(mark).filter((r) => r.kind === "watch").length
}

// Concurrent: each test counts requests over a fixed real-time window (2 s, 3 s) on its own server.
describe.concurrent("the EndpointSlice watch against a misbehaving API server", () => {
  it("a server that ends every watch right after one event is not re-watched in a tight loop (at most one watch a second)", async ({ cleanup }) => {
    const api = await start(cleanup)
    await api.requests.waitFor((r) => r.kind === "watch", { timeoutMs: 3000 })
    api.churnWatches = endpointSlice("web-a", [{ ip: "10.1.0.10" }])
    api.dropWatches()
    const count = await watchesWithin(api, 2000)
    console.log(`kubernetes: ${count} watches in 2 s from a server that ends each after one event`)
    expect(count).toBeLessThanOrEqual(3)
    expect(count).toBeGreaterThanOrEqual(1)
  })

  it("an always-expired history (410 Gone on every watch) backs off: lists and watches a few times in 3 s, not hundreds", async ({ cleanup }) => {
    const api = await start(cleanup)
    await api.requests.waitFor((r) => r.kind === "watch", { timeoutMs: 3000 })
    const mark = api.requests.mark
    api.expireHistory()
    api.dropWatches()
    // With no change after the expiry, every list's resourceVersion is too old for the next watch.
    const count = await watchesWithin(api, 3000)
    const lists = api.requests.items.slice(mark).filter((r) => r.kind === "list").length
    console.log(`kubernetes: ${count} watches and ${lists} lists in 3 s against an always-expired history`)
    expect(count).toBeLessThanOrEqual(4)
    expect(lists).toBeLessThanOrEqual(4)
  })
})

describe("watch streams with hostile lines", () => {
  it("a line that never ends is cut at MaxWatchLineBytes: the watch fails (logged), is restarted, and memory stays bounded", async () => {
    const api = await FakeKubeApi.start("shop")
    apis.push(api)
    api.apply("ADDED", endpointSlice("web-a", [{ ip: "10.1.0.10" }]))
    const updates = new Recorder<unknown>()
    const logs = new Recorder<{ readonly event: string; readonly fields: Record<string, unknown> }>()
    api.endlessLine = true
    stops.push(kubernetesSource({ service: "web", namespace: "shop", kubernetesService: "web", kubeConfig: api.kubeConfig(), retryMs: 20, maxRetryMs: 100, log: (event, fields) => logs.push({ event, fields }) }).start(updates.push))
    const failed = await logs.waitFor((l) => l.event === "discovery.kubernetes-failed", { timeoutMs: 10_000 })
    expect(String(failed.fields["message"])).toContain(`longer than ${MaxWatchLineBytes} bytes`)
    // What the server got to send before the cut: the line limit plus what the socket buffers held.
    expect(api.endlessBytes).toBeLessThan(MaxWatchLineBytes + inSocketBuffers())
    // The list still gave the endpoints; a server that behaves again is watched again.
    expect(updates.items.length).toBeGreaterThanOrEqual(1)
    api.endlessLine = false
    await api.requests.waitFor((r) => r.kind === "watch", { from: api.requests.mark, timeoutMs: 5000 })
  })

  it("malformed lines (not JSON, JSON that is no event) are skipped; the events after them on the same stream apply", async () => {
    const api = await FakeKubeApi.start("shop")
    apis.push(api)
    api.apply("ADDED", endpointSlice("web-a", [{ ip: "10.1.0.10" }]))
    api.watchPrefix = 'not json\nnull\n42\n{"type":"ADDED"}\n{"type":"ADDED","object":null}\n\n'
    const updates = new Recorder<EndpointUpdate>()
    stops.push(kubernetesSource({ service: "web", namespace: "shop", kubernetesService: "web", kubeConfig: api.kubeConfig(), retryMs: 20, maxRetryMs: 100, log: () => {} }).start(updates.push))
    await updates.waitFor((u) => u._tag === "Reset" && u.endpoints.length === 1, { timeoutMs: 3000 })
    await api.requests.waitFor((r) => r.kind === "watch", { timeoutMs: 3000 })
    await new Promise<void>((resolve) => {
      const poll = () => (api.openWatches === 1 ? resolve() : setTimeout(poll, 5))
      poll()
    })
    api.apply("ADDED", endpointSlice("web-b", [{ ip: "10.1.0.20" }]))
    await updates.waitFor((u) => u._tag === "Reset" && u.endpoints.length === 2, { timeoutMs: 3000 })
  })
})

/** The message of the first failure the EndpointSlice source logs against `api`. */
const firstFailure = async (api: FakeKubeApi): Promise<string> => {
  const logs = new Recorder<{ readonly event: string; readonly fields: Record<string, unknown> }>()
  stops.push(kubernetesSource({ service: "web", namespace: "shop", kubernetesService: "web", kubeConfig: api.kubeConfig(), retryMs: 20, maxRetryMs: 100, log: (event, fields) => logs.push({ event, fields }) }).start(() => {}))
  const failed = await logs.waitFor((l) => l.event === "discovery.kubernetes-failed", { timeoutMs: 8000 })
  return String(failed.fields["message"])
}

describe("list answers that are too large or hold what is no object", () => {
  it("a list that never ends is cut at MaxListBytes: the list fails (logged), is retried, and memory stays bounded", async () => {
    const api = await FakeKubeApi.start("shop")
    apis.push(api)
    api.endlessList = true
    expect(await firstFailure(api)).toContain(`longer than ${MaxListBytes} bytes`)
    // What the server got to send before the cut: the limit plus what the socket buffers held.
    expect(api.endlessListBytes).toBeLessThan(MaxListBytes + inSocketBuffers())
    // Retried after the backoff, and a server that behaves again is listed and watched.
    api.endlessList = false
    api.apply("ADDED", endpointSlice("web-a", [{ ip: "10.1.0.10" }]))
    await api.requests.waitFor((r) => r.kind === "watch", { timeoutMs: 5000 })
  })

  it("list items without metadata (null, a number, {}, a name that is no string) are left out, on the first list and on a list after 410 Gone; the good slices apply", async () => {
    const api = await FakeKubeApi.start("shop")
    apis.push(api)
    api.apply("ADDED", endpointSlice("web-a", [{ ip: "10.1.0.10" }]))
    api.listExtraItems = [null, 42, {}, { addressType: "IPv4" }, { metadata: { name: 7 } }]
    const updates = new Recorder<EndpointUpdate>()
    stops.push(kubernetesSource({ service: "web", namespace: "shop", kubernetesService: "web", kubeConfig: api.kubeConfig(), retryMs: 20, maxRetryMs: 100, log: () => {} }).start(updates.push))
    await updates.waitFor((u) => u._tag === "Reset" && u.endpoints.length === 1, { timeoutMs: 3000 })
    // The next watch finds its history expired and lists again: the same items there.
    api.apply("ADDED", endpointSlice("web-b", [{ ip: "10.1.0.20" }]))
    api.expireHistory()
    api.dropWatches()
    await updates.waitFor((u) => u._tag === "Reset" && u.endpoints.length === 2, { timeoutMs: 5000 })
  })
})

describe("a watch that brings ever new objects", () => {
  // MaxHeldBytes (32 MiB) took 2-6 s to stream through the informer; the limit is the same code.
  const maxHeldBytes = 1024 * 1024

  it("is closed once the objects held pass the limit (MaxHeldBytes, 1 MiB here): the watch fails, the informer is restarted with a fresh list, and what was sent stays bounded", async () => {
    const api = await FakeKubeApi.start("shop")
    apis.push(api)
    api.apply("ADDED", endpointSlice("web-a", [{ ip: "10.1.0.10" }]))
    api.endlessAdds = true
    expect((await firstWatchFailure(api.kubeConfig(), { maxHeldBytes })).message).toContain(`more than ${maxHeldBytes} bytes`)
    expect(api.endlessAddsBytes).toBeLessThan(maxHeldBytes + inSocketBuffers())
    const mark = api.requests.mark
    await api.requests.waitFor((r) => r.kind === "list", { from: mark, timeoutMs: 5000 })
  })

  it("objects whose namespace or name holds a slash (a/b + c, a + b/c) are each counted: names that join alike do not pass the limit unseen", async () => {
    const api = await FakeKubeApi.start("shop")
    apis.push(api)
    // 63 objects per joined name: "k<group>/x/x/.../x" cut after each of its 63 slashes.
    api.endlessAddsNames = (n) => {
      const parts = [`k${Math.floor(n / 63)}`, ...Array.from({ length: 63 }, () => "x")]
      const cut = 1 + (n % 63)
      return { namespace: parts.slice(0, cut).join("/"), name: parts.slice(cut).join("/") }
    }
    api.endlessAdds = true
    expect((await firstWatchFailure(api.kubeConfig(), { maxHeldBytes })).message).toContain(`more than ${maxHeldBytes} bytes`)
    expect(api.endlessAddsBytes).toBeLessThan(maxHeldBytes + inSocketBuffers())
  })
})

/**
 * Watches the slices of "shop" with `kubeConfig` until the watch is open, then `spoil`s the
 * credentials and ends the watch: the informer watches again without listing, so the first failure
 * is the watch's own (checked: no list before it). That failure, and the recorder of the ones that
 * follow (each a fresh list with the same credentials).
 */
const rewatchFailure = async (api: FakeKubeApi, kubeConfig: KubeConfig, spoil: () => void) => {
  const failures = watchSlices(kubeConfig)
  await api.requests.waitFor((r) => r.kind === "watch", { timeoutMs: 3000 })
  spoil()
  const mark = api.requests.mark
  api.dropWatches()
  const first = await failures.waitFor(() => true, { timeoutMs: 3000 })
  expect(api.requests.items.slice(mark)).toStrictEqual([])
  return { ...first, failures }
}

describe("a watch that cannot even be sent", () => {
  it("a credential that cannot be read when the watch opens (a CA file gone) fails the informer, which is retried with backoff, not left stopped", async () => {
    const api = await FakeKubeApi.start("shop")
    apis.push(api)
    const dir = mkdtempSync(join(tmpdir(), "iip-mesh-kube-ca-"))
    stops.push(() => rmSync(dir, { recursive: true, force: true }))
    const caFile = join(dir, "ca.crt")
    writeFileSync(caFile, "read, not used: the server is plain HTTP\n")
    const kubeConfig = new KubeConfig()
    kubeConfig.loadFromOptions({
      clusters: [{ name: "fake", server: `http://127.0.0.1:${api.port}`, caFile, skipTLSVerify: true }],
      users: [{ name: "mesh", token: "test-token" }],
      contexts: [{ name: "fake", cluster: "fake", user: "mesh", namespace: "shop" }],
      currentContext: "fake"
    })
    const first = await rewatchFailure(api, kubeConfig, () => rmSync(caFile))
    expect(first.message).toContain("ENOENT")
    expect(first.retryInMs).toBe(20)
    await first.failures.waitFor((f) => f.retryInMs === 40, { timeoutMs: 3000 })
  })
})

describe("bearer tokens as the watch sends them", () => {
  const configWith = (api: FakeKubeApi, user: Record<string, unknown>): KubeConfig => {
    const kubeConfig = new KubeConfig()
    kubeConfig.loadFromOptions({
      clusters: [{ name: "fake", server: `http://127.0.0.1:${api.port}`, skipTLSVerify: true }],
      users: [{ name: "mesh", ...user }],
      contexts: [{ name: "fake", cluster: "fake", user: "mesh", namespace: "shop" }],
      currentContext: "fake"
    })
    return kubeConfig
  }

  it("a token file that ends in a newline (as echo writes it) is sent trimmed, as the client's fetch sends it: the watch opens and follows changes", async () => {
    const api = await FakeKubeApi.start("shop")
    apis.push(api)
    api.apply("ADDED", endpointSlice("web-a", [{ ip: "10.1.0.10" }]))
    const dir = mkdtempSync(join(tmpdir(), "iip-mesh-token-"))
    stops.push(() => rmSync(dir, { recursive: true, force: true }))
    writeFileSync(join(dir, "token"), "file-token\n")
    const kubeConfig = configWith(api, { authProvider: { name: "tokenFile", config: { tokenFile: join(dir, "token") } } })
    const updates = new Recorder<EndpointUpdate>()
    const logs = new Recorder<string>()
    stops.push(kubernetesSource({ service: "web", namespace: "shop", kubernetesService: "web", kubeConfig, retryMs: 20, maxRetryMs: 100, log: (event, fields) => logs.push(`${event} ${String(fields["message"])}`) }).start(updates.push))
    const watch = await api.requests.waitFor((r) => r.kind === "watch", { timeoutMs: 5000 })
    expect(watch.authorization).toBe("Bearer file-token")
    api.apply("ADDED", endpointSlice("web-b", [{ ip: "10.1.0.11" }]))
    await updates.waitFor((u) => u._tag === "Reset" && u.endpoints.some((e) => e.host === "10.1.0.11"), { timeoutMs: 5000 })
    expect(logs.items.filter((l) => l.startsWith("discovery.kubernetes-failed"))).toStrictEqual([])
  })

  it("a token that cannot be a header value (a newline inside) fails the watch, which is retried with backoff; nothing is thrown out of the informer", async () => {
    const api = await FakeKubeApi.start("shop")
    apis.push(api)
    const kubeConfig = configWith(api, { token: "test-token" })
    const first = await rewatchFailure(api, kubeConfig, () => void ((kubeConfig.getCurrentUser() as { token?: string }).token = "broken\ntoken"))
    expect(first.message).toContain("Authorization")
    expect(first.retryInMs).toBe(20)
    await first.failures.waitFor((f) => f.retryInMs === 40, { timeoutMs: 3000 })
  })
})

describe("a watch stopped while its credentials are being fetched", () => {
  it("stopped while an authenticator (exec, OIDC) is still working, the watch is never sent: no request left open after stop", async () => {
    const api = await FakeKubeApi.start("shop")
    apis.push(api)
    const kubeConfig = api.kubeConfig()
    const asked = new Recorder<() => void>()
    kubeConfig.addAuthenticator({
      isAuthProvider: () => true,
      applyAuthentication: (_user: unknown, _options: unknown) => new Promise<void>((resolve) => asked.push(resolve))
    })
    const stop = watchKubernetes({
      kubeConfig,
      path: "/apis/discovery.k8s.io/v1/namespaces/shop/endpointslices",
      namespace: "shop",
      onChange: () => {},
      onFailed: () => {}
    })
    stops.push(stop)
    const release = await asked.waitFor(() => true, { timeoutMs: 3000 })
    stop()
    release()
    expect(await watchesWithin(api, 300)).toBe(0)
  })

  it("stopped while the server holds the list's answer, the list is closed at once (not after ListTimeoutMs) and nothing is watched", async () => {
    const api = await FakeKubeApi.start("shop")
    apis.push(api)
    api.holdLists = true
    const stop = watchKubernetes({
      kubeConfig: api.kubeConfig(),
      path: "/apis/discovery.k8s.io/v1/namespaces/shop/endpointslices",
      namespace: "shop",
      onChange: () => {},
      onFailed: () => {}
    })
    stops.push(stop)
    await api.requests.waitFor((r) => r.kind === "list", { timeoutMs: 3000 })
    stop()
    await api.closedLists.waitFor(() => true, { timeoutMs: 1000 })
    expect(api.requests.items.filter((r) => r.kind === "watch")).toStrictEqual([])
  })
})

describe("EndpointSlice annotations out of range", () => {
  it("a weight annotation beyond MaxWeight is clamped to it (it was taken as 1e20)", () => {
    expect(weightOf("99999999999999999999")).toBe(MaxWeight)
    expect(weightOf("1001")).toBe(MaxWeight)
    expect(weightOf(`${"9".repeat(400)}`)).toBe(MaxWeight)
    expect(weightOf("1000")).toBe(1000)
  })
})

describe("EndpointSlice objects that are not what the API defines", () => {
  const options = { service: "web", portName: "mesh", weightAnnotation: "iip-mesh/weight", adminPortName: "admin-control" }
  const good = endpointSlice("web-a", [{ ip: "10.1.0.10" }])
  /** A copy of a good slice of the one endpoint `ip`, changed by `change` as the test needs (any shape). */
  const bent = (name: string, change: (slice: Record<string, any>) => void, ip = "10.1.0.20") => {
    const slice = structuredClone(endpointSlice(name, [{ ip }])) as Record<string, any>
    change(slice)
    return slice as unknown as V1EndpointSlice
  }
  const hosts = (slices: ReadonlyArray<V1EndpointSlice>) => endpointsOfSlices(slices, options).map((e) => `${e.host}:${e.port}`)

  it("null, missing or mistyped parts (endpoints, addresses, ports, names) are skipped without a throw; the good slice beside them is kept", () => {
    const malformed = [
      bent("m1", (s) => delete s.endpoints[0].addresses),
      bent("m2", (s) => (s.endpoints[0].addresses = null)),
      bent("m3", (s) => (s.endpoints[0].addresses = [12345, null, { ip: "10.1.0.21" }])),
      bent("m4", (s) => (s.endpoints = [null, "10.1.0.22"])),
      bent("m5", (s) => (s.endpoints = { 0: { addresses: ["10.1.0.23"] } })),
      bent("m6", (s) => (s.ports = [null, 7])),
      bent("m7", (s) => (s.ports = "mesh")),
      null as unknown as V1EndpointSlice
    ]
    for (const slice of malformed) expect(hosts([slice, good]), JSON.stringify(slice)).toEqual(["10.1.0.10:4143"])
    expect(hosts([...malformed, good])).toEqual(["10.1.0.10:4143"])
    // A name that is no string only orders the slices: its endpoints are good.
    expect(hosts([bent("n", (s) => (s.metadata.name = 42)), good])).toEqual(["10.1.0.20:4143", "10.1.0.10:4143"])
  })

  it("a port outside 1..65535 or not an integer, and an address that is no IP address or host name, are left out: never dialled nor shown", () => {
    for (const port of [0, -1, 70000, 1.5, "80", null]) expect(hosts([bent("p", (s) => (s.ports[0].port = port)), good]), String(port)).toEqual(["10.1.0.10:4143"])
    for (const ip of ["a b\r\nx-evil: 1", "x".repeat(300), "10.0.0.1:80", ""]) expect(hosts([bent("a", () => {}, ip), good]), JSON.stringify(ip)).toEqual(["10.1.0.10:4143"])
    expect(hosts([bent("fqdn", () => {}, "web-0.web.shop.svc.cluster.local")])).toEqual(["web-0.web.shop.svc.cluster.local:4143"])
  })

  it("every endpoint of a slice is marked offHost: a name (FQDN address) or a loopback address is then refused at the dial", () => {
    expect(endpointsOfSlices([good, bent("fqdn", () => {}, "localhost"), bent("lo", () => {}, "127.0.0.1")], options).map((e) => e.offHost)).toEqual([true, true, true])
  })

  it("an admin port out of range, and a zone or node name with control characters or of 10 KB, are left off the endpoint, which is kept", () => {
    const slice = bent("z", (s) => {
      s.ports.push({ name: "admin-control", port: 70000 })
      s.endpoints[0].zone = "z\n".repeat(5000)
      s.endpoints[0].nodeName = { name: "n1" }
    })
    const [endpoint, ...rest] = endpointsOfSlices([slice], options)
    expect(rest).toEqual([])
    expect(endpoint).toMatchObject({ host: "10.1.0.20", port: 4143 })
    expect(endpoint!.adminPort).toBeUndefined()
    expect(endpoint!.zone).toBeUndefined()
    expect(endpoint!.node).toBeUndefined()
  })
})

describe("EndpointSlices without the mesh port, logged", () => {
  it("are said once while the set stays the same, in one line with their count and at most 5 names of at most 253 characters: 200 slices of 10 KB names made 200 lines on every change (about 2 MB a change)", async () => {
    const api = await FakeKubeApi.start("shop")
    apis.push(api)
    for (let i = 0; i < 200; i++) api.apply("ADDED", endpointSlice(`${"x".repeat(10_000)}-${i}`, [{ ip: `10.2.${i >> 8}.${i & 255}` }], { portName: "http" }))
    api.apply("ADDED", endpointSlice("web-a", [{ ip: "10.1.0.10" }]))
    const updates = new Recorder<EndpointUpdate>()
    const logged = new Recorder<{ readonly event: string; readonly fields: Record<string, unknown> }>()
    stops.push(kubernetesSource({ service: "web", namespace: "shop", kubernetesService: "web", kubeConfig: api.kubeConfig(), retryMs: 20, maxRetryMs: 100, log: (event, fields) => logged.push({ event, fields }) }).start(updates.push))
    await updates.waitFor(() => true, { timeoutMs: 3000 })
    // Ten changes of the good slice, each reported on its own: the slices without the port stay as they were.
    for (let i = 1; i <= 10; i++) {
      const mark = updates.mark
      api.apply("MODIFIED", endpointSlice("web-a", [{ ip: `10.1.0.${10 + i}` }]))
      await updates.waitFor((u) => u._tag === "Reset" && u.endpoints.some((e) => e.host === `10.1.0.${10 + i}`), { from: mark, timeoutMs: 3000 })
    }
    const noPort = logged.items.filter((l) => l.event === "discovery.kubernetes-no-port")
    expect(noPort).toHaveLength(1)
    expect(noPort[0]!.fields["slices"]).toBe(200)
    const names = noPort[0]!.fields["names"] as ReadonlyArray<string>
    expect(names.length).toBeLessThanOrEqual(5)
    for (const name of names) expect(name.length).toBeLessThanOrEqual(253)
    // A change in that set is said again.
    const mark = logged.mark
    api.apply("DELETED", endpointSlice(`${"x".repeat(10_000)}-0`, [{ ip: "10.2.0.0" }], { portName: "http" }))
    const again = await logged.waitFor((l) => l.event === "discovery.kubernetes-no-port", { from: mark, timeoutMs: 3000 })
    expect(again.fields["slices"]).toBe(199)
  })
})
