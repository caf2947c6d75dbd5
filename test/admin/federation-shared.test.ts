// How many calls the peers get when many admin clients ask at once (a dashboard left open in many
// tabs, or a client looping): /federation/series called every fresh peer once per admin request,
// so 50 concurrent GETs were 50 calls to each peer, an amplification the admin's clients
// controlled. Concurrent requests for one series (and for the view) now share one call per peer.
// Three counting peer admins, found through discovery, hold their answers until the 50 requests
// have reached this admin (a later /health on another connection answered), so every one of them
// finds the round running.
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Scope from "effect/Scope"
import { mkdtempSync, rmSync, writeFileSync } from "node:fs"
import * as http from "node:http"
import * as net from "node:net"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest"
import * as Admin from "../../src/admin/adminServer.ts"
import { type FederationView, MAX_SERIES_ROUNDS } from "../../src/admin/federation.ts"
import type { Sidecar } from "../../src/sidecar/sidecar.ts"
import { Cleanup, readUntil, untilTurn, waitFor } from "../support/iipRaw.ts"
import { call, quietLog, sidecarConfig, startSidecar } from "../support/sidecarHarness.ts"
import { HOUR_MS, steppedWallClock } from "../support/wallClock.ts"

const token = "federation-token-0123456789"
const MESH = "federation-shared"
const PEERS = 3
const CONCURRENT = 50
/**
 * The sidecar's federationTimeoutMs. The peers' answers are held while a case checks what reached
 * this admin, and a request behind two rounds of others waits for a place at most this long (then
 * 503): at the default 1 s, a machine slow enough made rounds time out or waiters busy.
 */
const FEDERATION_TIMEOUT_MS = 10_000
const headers = { host: "127.0.0.1", authorization: `Bearer ${token}` }
const windows = { "10s": { requests: 1, errors: 0, seconds: 10, buckets: [] }, "1m": { requests: 1, errors: 0, seconds: 60, buckets: [] }, "10m": { requests: 1, errors: 0, seconds: 600, buckets: [] } }

/** GET `path` on the admin from `localAddress` (the per-address cap is 32 connections). */
const get = (port: number, path: string, localAddress: string): { written: Promise<void>; answer: Promise<{ status: number; body: string; retryAfter: string | undefined }> } => {
  let written!: () => void
  const done = new Promise<void>((resolve) => (written = resolve))
  const answer = new Promise<{ status: number; body: string; retryAfter: string | undefined }>((resolve, reject) => {
    const req = http.request({ host: "127.0.0.1", port, path, localAddress, headers, agent: false })
    req.once("finish", written)
    req.once("error", reject)
    req.once("response", (res) => {
      let body = ""
      res.setEncoding("utf8")
      res.on("data", (chunk: string) => (body += chunk))
      res.once("end", () => resolve({ status: res.statusCode ?? 0, body, retryAfter: res.headers["retry-after"] }))
    })
    req.end()
  })
  return { written: done, answer }
}

describe("admin federation under many concurrent admin requests", () => {
  let cleanup: Cleanup
  let dir: string
  beforeEach(() => {
    cleanup = new Cleanup()
    dir = mkdtempSync(join(tmpdir(), "iip-mesh-federation-shared-"))
  })
  afterEach(async () => {
    // A test that fakes setTimeout and then times out never reaches its finally: without this, the
    // cleanup and the tests after it would run on the faked timers (and wait for them for ever).
    vi.useRealTimers()
    await cleanup.run()
    rmSync(dir, { recursive: true, force: true })
  })

  /** This admin (sidecar "web"), three counting peer admins found through discovery, and `concurrently`. */
  const withPeers = async () => {
    const slot = Math.floor(Date.now() / 10_000) * 10_000
    /** While set, the peers answer once it resolves. */
    let gate: Promise<void> | undefined
    const calls = Array.from({ length: PEERS }, () => ({ view: 0, series: 0 }))
    /** The series queries the peers were asked. */
    const asked: Array<string> = []
    /** While set, each series' answers wait here, by service, until `release`. */
    let holdEach = false
    const heldSeries = new Map<string, Array<() => void>>()
    for (let i = 0; i < PEERS; i++) {
      const peer = http.createServer((req, res) => {
        const series = (req.url ?? "").startsWith("/golden/series")
        if (series) {
          calls[i]!.series++
          asked.push(req.url ?? "")
        }
        else calls[i]!.view++
        const answer = () => {
          res.writeHead(200, { "content-type": "application/json" })
          res.end(JSON.stringify(series ? { points: [[slot, 1, 0, null]] } : { generatedAt: 1, services: [{ service: `peer${i}`, windows }], edges: [], routes: [] }))
        }
        const service = new URLSearchParams((req.url ?? "").split("?")[1]).get("service") ?? ""
        if (series && holdEach) heldSeries.set(service, [...(heldSeries.get(service) ?? []), answer])
        else if (gate === undefined) answer()
        else void gate.then(answer)
      })
      await new Promise<void>((resolve) => peer.listen(0, "127.0.0.1", resolve))
      cleanup.add(() => new Promise<void>((resolve) => (peer.closeAllConnections(), peer.close(() => resolve()))))
      const adminPort = (peer.address() as net.AddressInfo).port
      writeFileSync(join(dir, `peer${i}.json`), JSON.stringify({ service: `peer${i}`, host: "127.0.0.1", port: 1, weight: 1, node: `peer${i}-node`, mesh: MESH, pid: process.pid, adminPort }))
    }
    const scope = await Effect.runPromise(Scope.make())
    cleanup.add(() => Effect.runPromise(Scope.close(scope, Exit.void)))
    let sidecar: Sidecar | undefined
    const addresses = await Effect.runPromise(Admin.make({ admin: "127.0.0.1:0", control: "127.0.0.1:0", token }, () => sidecar).pipe(Scope.provide(scope)))
    const running = await startSidecar(cleanup, sidecarConfig({ service: "web", node: "web-node", localDiscovery: dir, meshName: MESH, federationTimeoutMs: FEDERATION_TIMEOUT_MS }), quietLog, { adminPort: addresses.control.port })
    sidecar = running.sidecar
    const port = addresses.control.port
    await waitFor(() => Array.from({ length: PEERS }, (_, i) => running.sidecar.discovery.endpoints(`peer${i}`).length).every((n) => n > 0), 5000, "web to discover the peers")
    // One view first: the peers are fresh, so a series asks each of them.
    const first = await call(port, { path: "/federation", headers })
    expect((JSON.parse(first.body.toString()) as FederationView).peers.map((p) => p.error)).toEqual([null, null, null])

    /** `CONCURRENT` GETs (the i-th of `pathOf(i)`) held at the peers until all reached this admin and `whileHeld` ran; their answers. */
    /** Holds the peers' answers until the returned function is called. */
    const hold = () => {
      let open!: () => void
      gate = new Promise<void>((resolve) => (open = resolve))
      return () => {
        gate = undefined
        open()
      }
    }

    const concurrently = async (pathOf: (i: number) => string, whileHeld: () => Promise<void> = async () => {}) => {
      const open = hold()
      const requests = Array.from({ length: CONCURRENT }, (_, i) => get(port, pathOf(i), i % 2 === 0 ? "127.0.0.1" : "127.0.0.2"))
      await Promise.all(requests.map((r) => r.written))
      // The admin answers this after it read the requests written before it.
      expect((await call(port, { path: "/health", headers })).status).toBe(200)
      await whileHeld()
      open()
      return Promise.all(requests.map((r) => r.answer))
    }

    /** Holds every series' answers at the peers until `release(service)` sends them. */
    const holdEachSeries = () => {
      holdEach = true
      cleanup.add(async () => {
        holdEach = false
        for (const answers of heldSeries.values()) for (const answer of answers) answer()
      })
    }
    const release = (service: string) => {
      for (const answer of heldSeries.get(service) ?? []) answer()
      heldSeries.delete(service)
    }

    return { calls, asked, slot, hold, concurrently, port, holdEachSeries, release }
  }

  it(`${CONCURRENT} concurrent GETs of one series, and of the view, cost each peer one call`, async () => {
    const { calls, slot, concurrently } = await withPeers()
    const series = await concurrently(() => "/federation/series?service=web")
    for (const answer of series) {
      expect(answer.status, answer.body).toBe(200)
      // Every answer holds the three peers' points.
      expect((JSON.parse(answer.body) as { points: Array<[number, number]> }).points.find((p) => p[0] === slot)?.[1]).toBeGreaterThanOrEqual(PEERS)
    }
    expect(calls.map((c) => c.series)).toEqual([1, 1, 1])

    const views = await concurrently(() => "/federation")
    for (const answer of views) expect(answer.status, answer.body).toBe(200)
    // The first view's call, and at most one round for the 50.
    for (const c of calls) expect(c.view).toBeLessThanOrEqual(2)
  })

  it(`${CONCURRENT} concurrent GETs of as many series: at most ${MAX_SERIES_ROUNDS} asked of a peer at once, every one answered`, async () => {
    const { calls, slot, concurrently, port } = await withPeers()
    const answers = await concurrently((i) => `/federation/series?service=s${i}`, async () => {
      await waitFor(() => calls.every((c) => c.series >= MAX_SERIES_ROUNDS), 5000, `${MAX_SERIES_ROUNDS} series calls at each peer`)
      // The admin has handled every request by now; the rest wait for a round to end.
      expect((await call(port, { path: "/health", headers })).status).toBe(200)
      expect(calls.map((c) => c.series)).toEqual(calls.map(() => MAX_SERIES_ROUNDS))
    })
    for (const answer of answers) {
      expect(answer.status, answer.body).toBe(200)
      expect((JSON.parse(answer.body) as { points: Array<[number, number]> }).points.find((p) => p[0] === slot)?.[1]).toBe(PEERS)
    }
    expect(calls.map((c) => c.series)).toEqual(calls.map(() => CONCURRENT))
  })

  it(`a request waiting for a place has a deadline of its own, federationTimeoutMs: past it, 503 federation_busy`, async () => {
    const { calls, hold, port } = await withPeers()
    // The peers never answer in this case (their gate stays shut until the end): every round lasts
    // federationTimeoutMs, on a faked setTimeout, so that the deadlines pass in a known order
    // whatever the machine's speed. Node's own timers (sockets, http) stay real.
    const open = hold()
    vi.useFakeTimers({ toFake: ["setTimeout", "clearTimeout"] })
    try {
      const running = Array.from({ length: MAX_SERIES_ROUNDS }, (_, i) => get(port, `/federation/series?service=s${i}`, "127.0.0.1"))
      await untilTurn(() => calls.every((c) => c.series >= MAX_SERIES_ROUNDS), `${MAX_SERIES_ROUNDS} series calls at each peer`)
      // One waiter more than there are places: every place is a running round.
      const waiting = Array.from({ length: MAX_SERIES_ROUNDS + 1 }, (_, i) => get(port, `/federation/series?service=w${i}`, "127.0.0.2"))
      await Promise.all(waiting.map((r) => r.written))
      expect((await call(port, { path: "/health", headers })).status).toBe(200)
      // The running rounds give up on their peers (their timers were set first) and 16 waiters take
      // their places, in rounds that last as long again; the 17th waiter's deadline passes first.
      await vi.advanceTimersByTimeAsync(FEDERATION_TIMEOUT_MS)
      // No peer answered them, and this admin has no such series itself.
      for (const { answer } of running) expect((await answer).status).toBe(404)
      // Waited for without a timer (they are faked): before, no waiter was ever answered here.
      const answered: Array<{ status: number; body: string; retryAfter: string | undefined }> = []
      for (const { answer } of waiting) void answer.then((a) => answered.push(a), () => {})
      await untilTurn(() => answered.length > 0, "a waiter's answer")
      const [busy] = answered
      expect(busy!.status).toBe(503)
      // A place comes within federationTimeoutMs (each running round ends within it): ask again then.
      expect(busy!.retryAfter).toBe(String(FEDERATION_TIMEOUT_MS / 1000))
      expect(JSON.parse(busy!.body)).toStrictEqual({
        error: "federation_busy",
        message: `all ${MAX_SERIES_ROUNDS} places for series rounds were taken for ${FEDERATION_TIMEOUT_MS} ms (federationTimeoutMs): ask again`
      })
      open()
      const answers = await Promise.all(waiting.map((r) => r.answer))
      expect(answers.map((a) => a.status).sort()).toStrictEqual([...Array(MAX_SERIES_ROUNDS).fill(200), 503])
    } finally {
      vi.useRealTimers()
      open()
    }
  })

  it(`requests waiting for a place get one each in the order they came, each woken once (not every waiter per round that ends)`, async () => {
    const { asked, port, holdEachSeries, release } = await withPeers()
    holdEachSeries()
    const running = Array.from({ length: MAX_SERIES_ROUNDS }, (_, i) => get(port, `/federation/series?service=s${i}`, "127.0.0.1"))
    await waitFor(() => asked.length === MAX_SERIES_ROUNDS * PEERS, 5000, `${MAX_SERIES_ROUNDS} series calls at each peer`)
    // A waiter races its way out of the queue (its client leaving, its deadline, its turn): the
    // races with more than two entries counted are the waiters' (a trace exporter's has two).
    const race = vi.spyOn(Promise, "race")
    const waits = () => race.mock.calls.filter(([entries]) => [...entries].length > 2).length
    const WAITERS = 24
    const waiting: Array<ReturnType<typeof get>> = []
    for (let i = 0; i < WAITERS; i++) {
      waiting.push(get(port, `/federation/series?service=w${i}`, "127.0.0.2"))
      // Queued before the next one is sent: the order they came is known.
      await untilTurn(() => waits() === i + 1, `waiter w${i} to wait`)
    }
    /** The waiters whose series every peer was asked (so that releasing it ends its round), in the order they were first asked. */
    const placed = () => {
      const services = asked.filter((url) => url.includes("service=w")).map((url) => new URLSearchParams(url.split("?")[1]).get("service"))
      return [...new Set(services)].filter((service) => services.filter((s) => s === service).length === PEERS)
    }
    // Rounds end one at a time: the oldest waiter takes each place left.
    const ending = [...Array.from({ length: MAX_SERIES_ROUNDS }, (_, i) => `s${i}`), ...Array.from({ length: WAITERS - MAX_SERIES_ROUNDS }, (_, i) => `w${i}`)]
    for (const [n, service] of ending.entries()) {
      release(service)
      await untilTurn(() => placed().length === n + 1, `a place for the waiter after ${service}`)
    }
    expect(placed()).toStrictEqual(Array.from({ length: WAITERS }, (_, i) => `w${i}`))
    // Each waiter waited once. Before, every round that ended woke every waiter, each but the one
    // that took the place racing again (against all 16 rounds): 24 + 23 + 22 + ... + 0 = 300 races
    // here, a cost quadratic in the waiters.
    expect(waits()).toBe(WAITERS)
    race.mockRestore()
    for (let i = 0; i < WAITERS; i++) release(`w${i}`)
    for (const answer of await Promise.all([...running, ...waiting].map((r) => r.answer))) expect(answer.status, answer.body).toBe(200)
  })

  it(`a request waiting for a place leaves the queue when its client goes: its series is never asked`, async () => {
    const { calls, asked, hold, port } = await withPeers()
    const open = hold()
    const running = Array.from({ length: MAX_SERIES_ROUNDS }, (_, i) => get(port, `/federation/series?service=s${i}`, "127.0.0.1"))
    await waitFor(() => calls.every((c) => c.series >= MAX_SERIES_ROUNDS), 5000, `${MAX_SERIES_ROUNDS} series calls at each peer`)
    // Every place is a running round: this request waits, and its client leaves.
    const leaving = net.connect(port, "127.0.0.1")
    leaving.on("error", () => {})
    leaving.write(`GET /federation/series?service=gone HTTP/1.1\r\nhost: 127.0.0.1\r\nauthorization: Bearer ${token}\r\n\r\n`)
    expect((await call(port, { path: "/health", headers })).status).toBe(200)
    await new Promise((resolve) => leaving.once("close", resolve).destroy())
    expect((await call(port, { path: "/health", headers })).status).toBe(200)
    open()
    for (const answer of await Promise.all(running.map((r) => r.answer))) expect(answer.status, answer.body).toBe(200)
    // Had the waiter stayed, it took the first place a round left, before these answers were written.
    expect((await get(port, "/federation/series?service=after", "127.0.0.1").answer).status).toBe(200)
    expect(asked.filter((url) => url.includes("service=gone"))).toEqual([])
    expect(asked.filter((url) => url.includes("service=after"))).toHaveLength(PEERS)
  })

  it("a wall clock stepped back an hour does not stop the view's refreshes: the peers are asked again", async () => {
    // Taken over before the admin's federation is made (on the first view): it keeps what it reads the time with.
    const wall = steppedWallClock()
    cleanup.add(() => wall.restore())
    const { calls, port } = await withPeers()
    expect(calls.map((c) => c.view)).toEqual([1, 1, 1])
    wall.step(-HOUR_MS)
    // A view is refreshed at most every 500 ms: read it until the peers were asked again. Before,
    // the last round's time (Date.now()) was an hour ahead: no refresh came for that hour.
    const { value } = await readUntil(async () => {
      await call(port, { path: "/federation", headers })
      return calls.map((c) => c.view)
    }, (views) => views.every((n) => n >= 2), 10_000)
    expect(value.every((n) => n >= 2), `view calls at the peers: ${value}`).toBe(true)
  })
})
