// The load-balance client over real IIP servers on 127.0.0.1 (iip-protocol.md §8): each method's
// choices follow the reference's weighted list (`a#2,b#1` gives [a, b, a]); a rule function picks
// by the call; backends are added and removed at run time (a removed one finishes its call, then
// closes); a failed call fails alone while the other calls on the same connection succeed (the
// reference tears the shared connection down); a dead backend's calls go to another backend and
// it is ejected; status lists address, weight, pending, health per backend.
import { afterEach, beforeEach, describe, expect, it } from "vitest"
import type { IipServer } from "../../src/iip/server.ts"
import { RequestTimeout } from "../../src/mux/errors.ts"
import { RemoteError } from "../../src/mux/meshSession.ts"
import { MeshErrorCode } from "../../src/protocol/mesh.ts"
import { InvalidBackendList } from "../../src/toolkit/backendList.ts"
import { LoadBalanceClient, NoBackend } from "../../src/toolkit/loadBalanceClient.ts"
import { Cleanup, deferred, waitFor } from "../support/iipRaw.ts"
import { rejection, settle, startServer } from "../support/meshTest.ts"
import { addressOf, deadPort, fnv1, namedServer, quiet, sequence, startLb } from "./support.ts"

describe("load-balance client", () => {
  let cleanup: Cleanup
  let a: IipServer
  let b: IipServer
  /** `a#2,b#1`: the reference's weighted list is [a, b, a]. */
  let list: string

  beforeEach(async () => {
    cleanup = new Cleanup()
    a = await namedServer(cleanup, "a")
    b = await namedServer(cleanup, "b")
    list = `${addressOf(a)}#2,${addressOf(b)}#1`
  })

  afterEach(() => cleanup.run())

  it("rejects a list with an entry without weight at construction, naming the entry", () => {
    expect(() => new LoadBalanceClient({ backends: `${addressOf(a)}#2,${addressOf(b)}` })).toThrow(InvalidBackendList)
    expect(() => new LoadBalanceClient({ backends: `${addressOf(a)}#2,${addressOf(b)}` })).toThrow(`"${addressOf(b)}" has no weight`)
  })

  it("MethodRoundrobin walks the weighted list [a, b, a] in order", async () => {
    const lb = startLb(cleanup, { backends: list, method: "MethodRoundrobin" })
    expect(await sequence(lb, 6)).toStrictEqual(["a", "b", "a", "a", "b", "a"])
  })

  it("MethodRandom takes the slot floor(random x 3) of the weighted list", async () => {
    const draws = [0, 0.34, 0.67, 0.5, 0.99, 0.1]
    let next = 0
    const lb = startLb(cleanup, { backends: list, method: "MethodRandom", balancer: { random: () => draws[next++ % draws.length]! } })
    expect(await sequence(lb, 6)).toStrictEqual(["a", "b", "a", "b", "a", "a"])
  })

  it("MethodMinPending (the default) takes the round-robin slot when idle and steers away from a busy backend", async () => {
    const lb = startLb(cleanup, { backends: list })
    expect(await sequence(lb, 3)).toStrictEqual(["a", "b", "a"])
    const release = deferred()
    a.handle("/hold", () => release.promise.then(() => "held"))
    // The next slot is a (slot 0): it is idle, so it takes the held call; from then on a has one
    // pending and every call goes to b, the backend with the fewest pending, whatever slot comes up.
    const held = lb.call("/hold", "", { timeoutMs: 10_000 })
    expect(await sequence(lb, 4)).toStrictEqual(["b", "b", "b", "b"])
    expect(lb.status().map((s) => s.pending)).toStrictEqual([1, 0])
    release.resolve()
    expect((await held).toString()).toBe("held")
  })

  it("MethodIpHash sends a client address to slot FNV-1(ip) mod 3, the same one every time", async () => {
    const lb = startLb(cleanup, { backends: list, method: "MethodIpHash" })
    const slots = ["a", "b", "a"]
    for (const ip of ["10.0.0.1", "10.0.0.2", "192.168.7.40", "::1", "172.16.0.9"]) {
      expect(await sequence(lb, 3, "/who", ip)).toStrictEqual(Array(3).fill(slots[fnv1(ip) % 3]))
    }
  })

  it("MethodURIParam hashes the named query value with FNV-1 (absent: the empty string)", async () => {
    const lb = startLb(cleanup, { backends: list, method: "MethodURIParam", paramKey: "uid" })
    const slots = ["a", "b", "a"]
    for (const uid of ["alice", "bob", "carol", "dave", "e"]) {
      expect((await lb.call(`/who?uid=${uid}&x=1`)).toString()).toBe(slots[fnv1(uid) % 3])
    }
    expect((await lb.call("/who?other=1")).toString()).toBe(slots[fnv1("") % 3])
  })

  it("a rule function picks the backend from the call's path, query and client address; undefined leaves it to the method", async () => {
    const rule = (call: { readonly path: string; readonly query: ReadonlyMap<string, ReadonlyArray<string>>; readonly clientIp: string | undefined }) =>
      call.query.get("to")?.[0] === "b" || call.clientIp === "10.9.9.9" ? addressOf(b) : undefined
    const lb = startLb(cleanup, { backends: list, method: "MethodRoundrobin", rule })
    expect(await sequence(lb, 3, "/who?to=b")).toStrictEqual(["b", "b", "b"])
    expect(await sequence(lb, 2, "/who", "10.9.9.9")).toStrictEqual(["b", "b"])
    expect(new Set(await sequence(lb, 3))).toStrictEqual(new Set(["a", "b"]))
    const unknown = startLb(cleanup, { backends: list, rule: () => "127.0.0.1:1" })
    const error = await rejection(unknown.call("/who"))
    expect(error).toBeInstanceOf(NoBackend)
    expect((error as NoBackend).message).toBe("the rule chose 127.0.0.1:1, which is not a backend")
  })

  it("adds and removes backends at run time; a removed backend finishes its call, then closes its connections", async () => {
    const toA = (call: { readonly path: string }) => (call.path === "/hold" ? addressOf(a) : undefined)
    const lb = startLb(cleanup, { backends: `${addressOf(a)}#1`, method: "MethodRoundrobin", rule: toA })
    expect(await sequence(lb, 2)).toStrictEqual(["a", "a"])
    lb.addBackend(`${addressOf(b)}#1`)
    expect(lb.status().map((s) => [s.address, s.weight])).toStrictEqual([[addressOf(a), 1], [addressOf(b), 1]])
    expect(new Set(await sequence(lb, 4))).toStrictEqual(new Set(["a", "b"]))
    lb.addBackend(`${addressOf(b)}#3`)
    expect(lb.status().map((s) => s.weight)).toStrictEqual([1, 3])
    const release = deferred()
    a.handle("/hold", () => release.promise.then(() => "finished on a"))
    const held = lb.call("/hold", "", { timeoutMs: 10_000 })
    expect(lb.status().map((s) => s.pending)).toStrictEqual([1, 0])
    expect(lb.removeBackend(addressOf(a))).toBe(true)
    expect(lb.removeBackend(addressOf(a))).toBe(false)
    expect(lb.status().map((s) => s.address)).toStrictEqual([addressOf(b)])
    expect(await sequence(lb, 3)).toStrictEqual(["b", "b", "b"])
    expect(a.connectionCount).toBe(1)
    release.resolve()
    expect((await held).toString()).toBe("finished on a")
    await waitFor(() => a.connectionCount === 0, 5000, "a's connection to close once its call ended")
  })

  it("a plain-IIP call that times out fails alone: calls before and after it on the same connection succeed, nothing is redialled", async () => {
    const server = await startServer(cleanup, { mesh: false })
    const hang = deferred()
    server.handle("/hang", () => hang.promise.then(() => "late"))
    server.handle("/ok", (request) => request.data)
    const lb = startLb(cleanup, {
      backends: `${addressOf(server)}#1`,
      client: { mesh: false, maxConnections: 1, maxChannelsPerConnection: 4, idleChannelsAhead: 4 }
    })
    expect((await lb.call("/ok", "warm-up")).toString()).toBe("warm-up")
    await waitFor(() => [...server.sessions][0]?.channelCount === 4, 5000, "4 channels open")
    // Its answer follows the channel answers on the connection: the client knows all 4 channels now.
    expect((await lb.call("/ok", "channels known")).toString()).toBe("channels known")
    const session = [...server.sessions][0]
    const hanging = settle(lb.call("/hang", "x", { timeoutMs: 300 }))
    for (let i = 0; i < 10; i++) expect((await lb.call("/ok", `during-${i}`)).toString()).toBe(`during-${i}`)
    const hung = await hanging
    expect(hung.ok ? "answered" : (hung.error as RequestTimeout)._tag).toBe("RequestTimeout")
    for (let i = 0; i < 10; i++) expect((await lb.call("/ok", `after-${i}`)).toString()).toBe(`after-${i}`)
    expect(server.connectionCount).toBe(1)
    expect([...server.sessions][0]).toBe(session)
    expect(lb.status()[0]!.connections).toBe(1)
    hang.resolve()
  })

  it("in mesh mode a failing and a timed-out call fail alone while 40 concurrent calls on the same connection succeed", async () => {
    const server = await startServer(cleanup)
    server.handle("/ok", (request) => request.data)
    server.handle("/boom", () => {
      throw new Error("boom")
    })
    server.handle("/hang", (request) => new Promise<string>((resolve) => request.signal.addEventListener("abort", () => resolve("aborted"))))
    const lb = startLb(cleanup, { backends: `${addressOf(server)}#1`, client: { maxConnections: 1, maxChannelsPerConnection: 8 } })
    expect((await lb.call("/ok", "warm-up")).toString()).toBe("warm-up")
    const session = [...server.meshSessions][0]
    const boom = settle(lb.call("/boom", "x"))
    const hang = settle(lb.call("/hang", "x", { timeoutMs: 200 }))
    const oks = await Promise.all(Array.from({ length: 40 }, (_, i) => lb.call("/ok", `ok-${i}`, { timeoutMs: 5000 })))
    expect(oks.map(String)).toStrictEqual(Array.from({ length: 40 }, (_, i) => `ok-${i}`))
    const [boomed, hung] = [await boom, await hang]
    expect(boomed.ok ? undefined : boomed.error).toBeInstanceOf(RemoteError)
    expect(boomed.ok ? undefined : boomed.error).toMatchObject({ code: "handler_failed", message: "boom" })
    // Both sides hold the 200 ms deadline: the client's own timer, or (when this process stalled and
    // its late timer waits its lateness out, mux/deadlines.ts) the server's deadline answer, ends it.
    const hungError = hung.ok ? undefined : hung.error
    if (hungError instanceof RemoteError) expect(hungError.code).toBe(MeshErrorCode.deadlineExceeded)
    else expect(hungError).toBeInstanceOf(RequestTimeout)
    expect((await lb.call("/ok", "after")).toString()).toBe("after")
    expect(server.connectionCount).toBe(1)
    expect([...server.meshSessions][0]).toBe(session)
  })

  it("a dead backend's calls go to a live one (nothing was sent), and its refused connection ejects it at once", async () => {
    const dead = `127.0.0.1:${await deadPort()}`
    const lb = startLb(cleanup, { backends: `${dead}#1,${addressOf(a)}#1`, method: "MethodRoundrobin" })
    expect(await sequence(lb, 10)).toStrictEqual(Array(10).fill("a"))
    const [down, up] = lb.status()
    expect(down).toMatchObject({ address: dead, health: "ejected", failures: 1, ejections: 1, connections: 0, mode: "unconnected" })
    expect(up).toMatchObject({ address: addressOf(a), health: "healthy", failures: 0 })
  })

  it("status is JSON with address, weight, pending, health, connections, mode, latency, failures and ejections per backend, in list order", async () => {
    const lb = startLb(cleanup, { backends: list, method: "MethodRoundrobin" })
    await sequence(lb, 3)
    const status: unknown = JSON.parse(JSON.stringify(lb.status()))
    const backend = (address: string, weight: number) => ({
      address,
      weight,
      pending: 0,
      health: "healthy",
      connections: 1,
      mode: "mesh",
      latencyMs: expect.any(Number),
      failures: 0,
      ejections: 0
    })
    expect(status).toStrictEqual([backend(addressOf(a), 2), backend(addressOf(b), 1)])
  })

  it("a closed client fails calls at once; with no backend left a call fails with NoBackend", async () => {
    const lb = startLb(cleanup, { backends: `${addressOf(a)}#1`, client: { log: quiet } })
    expect(lb.removeBackend(addressOf(a))).toBe(true)
    expect(await rejection(lb.call("/who"))).toMatchObject({ _tag: "NoBackend", message: "there are no backends" })
    lb.close()
    expect(await rejection(lb.call("/who"))).toMatchObject({ _tag: "ConnectionClosed", sent: false })
  })
})
