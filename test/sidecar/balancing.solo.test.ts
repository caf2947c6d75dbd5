// Load balancing through real sidecars (issue 6): caller sidecar A in the test process, the
// instances of service "catalog" as apps behind their own sidecars, everything on 127.0.0.1 port 0.
//
//   1. SIGKILL one of three instances (child processes: app and sidecar die together) under steady
//      load: no idempotent request fails, the other two carry on, A's /mesh shows it out (held out
//      as refused once a dial to it is refused, or ejected for its failed tries).
//   2. One slow instance (10x): p99 under p2c far below weighted round robin's, the two callers
//      side by side under the same open-loop load; the slow one's share under p2c.
//   3. Load shedding at the per-endpoint concurrency limit: 503 overloaded with retry-after.
//   4. Retries only where safe: a POST whose connection dies is not retried, a GET is, a POST
//      refused before it ran is; a retry budget of zero retries nothing.
//   5. Deadlines: the far app learns the time left (iip-timeout); the app may shorten the deadline;
//      a per-try timeout moves a GET from a slow instance to a fast one.
//   6. Admin weight overrides (PUT/DELETE /mesh/<service>/<host:port>/weight) and the /mesh view.
//   7. Active health checks eject an instance whose sidecar stopped, before any request, and take
//      it back when it returns on the same port.
import { Effect, Scope } from "effect"
import { type ChildProcess, spawn } from "node:child_process"
import type * as http from "node:http"
import { Agent } from "node:http"
import { resolve } from "node:path"
import * as readline from "node:readline"
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest"
import * as Admin from "../../src/admin/adminServer.ts"
import type { SidecarConfig } from "../../src/config/sidecarConfig.ts"
import type { AccessRecord } from "../../src/sidecar/outboundAccess.ts"
import { CHILD_START_MS, holdsStarts } from "../support/childStart.ts"
import { Cleanup, readUntil, waitFor, withTimeout } from "../support/iipRaw.ts"
import { type Answer, type App, call, captureAccessLog, echoed, echoRequest, progress, refusingAddress, timedCall, rawValues, type RunningSidecar, sidecarConfig, startApp, startSidecar } from "../support/sidecarHarness.ts"
import type { EndpointView } from "../../src/balancer/serviceBalancer.ts"

const childScript = resolve(import.meta.dirname, "../support/meshInstanceChild.ts")

// ---------------------------------------------------------------------------------------------
// Helpers

/** An instance of "catalog" in a child process (test/support/meshInstanceChild.ts). */
interface ChildInstance {
  readonly name: string
  readonly pid: number
  /** Its sidecar's inbound address, as A's endpoint. */
  readonly inbound: string
  /** "<method> <url>" of each /hold request that reached its app. */
  readonly held: Array<string>
  /** Resolves when a held request matching `test` has reached the app (unbounded: race or bound it). */
  readonly whenHeld: (test: (line: string) => boolean) => Promise<void>
  /** SIGKILL, resolved once the process is gone. */
  readonly kill: () => Promise<void>
  readonly exited: Promise<void>
}

const spawnInstance = async (cleanup: Cleanup, name: string, delayMs = 0): Promise<ChildInstance> => {
  const child: ChildProcess = spawn(process.execPath, [childScript, name, String(delayMs)], { stdio: ["pipe", "pipe", "inherit"] })
  const exited = new Promise<void>((done) => child.once("exit", () => done()))
  const kill = async () => {
    if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL")
    await withTimeout(exited, 5000, `instance ${name} (pid ${child.pid}) to exit`)
  }
  cleanup.add(kill)
  const held: Array<string> = []
  const waiters: Array<() => void> = []
  let ready: ((message: Record<string, unknown>) => void) | undefined
  const up = new Promise<Record<string, unknown>>((done) => (ready = done))
  readline.createInterface({ input: child.stdout! }).on("line", (line) => {
    const message = JSON.parse(line) as Record<string, unknown>
    if (typeof message.held === "string") {
      held.push(message.held)
      for (const waiter of waiters.splice(0)) waiter()
    } else ready?.(message)
  })
  const first = await withTimeout(
    Promise.race([up, exited.then((): Record<string, unknown> => ({ error: "exited before it was up" }))]),
    CHILD_START_MS,
    `instance ${name} to start`
  )
  if (typeof first.inbound !== "string") throw new Error(`instance ${name} did not start: ${JSON.stringify(first)}`)
  const whenHeld = (test: (line: string) => boolean) =>
    new Promise<void>((done) => {
      const check = () => (held.some(test) ? done() : waiters.push(check))
      check()
    })
  return { name, pid: child.pid!, inbound: first.inbound, held, whenHeld, kill, exited }
}

/** An app (in this process) that names itself in every answer, after `delayMs` when given (load, not synchronisation). */
const namedApp = (name: string, delayMs = 0): http.RequestListener => (req, res) => {
  req.resume()
  req.once("end", () => {
    const answer = () => {
      if (res.destroyed) return
      res.writeHead(200, { "content-type": "text/plain", "content-length": Buffer.byteLength(name) })
      res.end(name)
    }
    if (delayMs > 0) setTimeout(answer, delayMs)
    else answer()
  })
}

interface Instance {
  readonly name: string
  readonly app: App
  readonly sidecar: RunningSidecar
}

/** An app and its sidecar, both in this process. */
const startInstance = async (cleanup: Cleanup, name: string, handler: http.RequestListener, config: Partial<SidecarConfig> = {}): Promise<Instance> => {
  const app = await startApp(cleanup, handler)
  const sidecar = await startSidecar(cleanup, sidecarConfig({ service: "catalog", node: name, app: app.address, ...config }))
  return { name, app, sidecar }
}

/** Caller sidecar A ("store") with `catalog` = the given inbound addresses (weight 1), plus its admin server. */
const startCaller = async (cleanup: Cleanup, catalog: ReadonlyArray<string>, config: Partial<SidecarConfig> = {}) => {
  const a = await startSidecar(
    cleanup,
    sidecarConfig({ service: "store", node: "a", endpoints: { catalog: catalog.map((address) => ({ address, weight: 1 })) }, ...config })
  )
  // In A's Scope: it closes with A.
  const admin = await Effect.runPromise(Admin.make({ admin: "127.0.0.1:0", control: "127.0.0.1:0", token: undefined }, () => a.sidecar).pipe(Scope.provide(a.scope)))
  return { a, adminPort: admin.control.port }
}

/** An endpoint as /mesh shows it. */
type EndpointJson = EndpointView & { readonly source: string }

interface MeshJson {
  readonly services: Record<string, ReadonlyArray<EndpointJson>>
}

const meshOf = async (adminPort: number): Promise<MeshJson> => {
  const answer = await call(adminPort, { path: "/mesh", headers: { host: "127.0.0.1" }, timeoutMs: 2000 })
  expect(answer.status).toBe(200)
  return JSON.parse(answer.body.toString()) as MeshJson
}

const endpointIn = (mesh: MeshJson, address: string): EndpointJson | undefined => mesh.services.catalog?.find((e) => e.address === address)

/**
 * GETs A's /mesh until `test` holds for the endpoint at `address` (the view announces nothing: it
 * is polled, every 10 ms, within `timeoutMs`). Returns the view that matched.
 */
const waitForEndpoint = async (adminPort: number, address: string, test: (e: EndpointJson) => boolean, timeoutMs: number, what: string): Promise<EndpointJson> => {
  const deadline = performance.now() + timeoutMs
  for (;;) {
    const endpoint = endpointIn(await meshOf(adminPort), address)
    if (endpoint !== undefined && test(endpoint)) return endpoint
    if (performance.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}; last: ${JSON.stringify(endpoint)}`)
    await new Promise<void>((r) => setTimeout(r, 10))
  }
}

const percentile = (sorted: ReadonlyArray<number>, p: number): number => sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)]!

const bodyOf = (answer: Answer): string => answer.body.toString("utf8")

/**
 * For the retry tests: round robin takes turns, so a first try reaches the endpoint under test
 * within two requests. (p2c would too, in time, but it keeps a cold endpoint at the default 100 ms
 * estimate until the peers' mean is next refreshed, so a quick run of requests can miss it.)
 */
const takeTurns = { loadBalancer: "weighted-round-robin" } as const

/**
 * Sends `method /hold?id=N` through A until one request is held by the victim's app (the other
 * instance answers its share at once), then SIGKILLs the victim while that request is in flight.
 * Returns the held request's path and the answer A gave it.
 */
const holdOnVictimThenKill = async (port: number, victim: ChildInstance, method: "GET" | "POST"): Promise<{ readonly path: string; readonly answer: Answer }> => {
  for (let id = 0; id < 10; id++) {
    const path = `/hold?id=${id}`
    const answer = call(port, { method, path, ...(method === "POST" ? { body: "order 42", headers: { host: "catalog", "content-type": "text/plain" } } : {}) })
    const first = await withTimeout(
      Promise.race([answer.then(() => "answered" as const), victim.whenHeld((line) => line === `${method} ${path}`).then(() => "held" as const)]),
      5000,
      `${method} ${path} to be answered or held`
    )
    if (first === "held") {
      await victim.kill()
      return { path, answer: await answer }
    }
  }
  throw new Error("no request reached the victim in 10 tries")
}

// ---------------------------------------------------------------------------------------------
// 1. SIGKILL under steady load

interface Outcome {
  readonly startedAt: number
  readonly endedAt: number
  readonly status: number
  /** The instance that answered (the app's body), on a 200. */
  readonly instance: string | undefined
  readonly meshError: string | undefined
  readonly thrown: string | undefined
}

const describeOutcome = (o: Outcome) =>
  o.thrown !== undefined ? `thrown ${o.thrown}` : `${o.status} ${o.meshError ?? ""} (after ${(o.endedAt - o.startedAt).toFixed(0)} ms)`

describe("SIGKILL one of three instances under steady load", () => {
  const cleanup = new Cleanup()
  const outcomes: Array<Outcome> = []
  let access: Array<AccessRecord> = []
  const names = ["c1", "c2", "c3"] as const
  const victim = "c2"
  const marks = { killedAt: 0, goneAt: 0, ejectedAt: 0, endedAt: 0, pendingAtKill: 0 }
  let ejected: EndpointJson | undefined
  let victimAddress = ""
  /** Failed tries at the victim, as A counted them: failures (in flight at the kill) and refusals (dials after it). */
  let victimFailures = 0

  beforeAll(async () => {
    const instances = await Promise.all(names.map((name) => spawnInstance(cleanup, name, 2)))
    const byName = new Map(instances.map((i) => [i.name, i]))
    victimAddress = byName.get(victim)!.inbound
    access = captureAccessLog(cleanup, (line) => JSON.parse(line) as AccessRecord)
    const { a, adminPort } = await startCaller(cleanup, instances.map((i) => i.inbound), { requestTimeoutMs: 5000, accessLog: true })
    const pendingAtA = (address: string) => a.sidecar.registry.view().find((v) => v.service === "catalog")?.endpoints.find((e) => e.address === address)?.pending ?? 0

    // Resolved by the workers as outcomes arrive (no polling, no sleeps).
    const { record, until } = progress(outcomes)
    const agent = new Agent({ keepAlive: true, maxSockets: 16 })
    cleanup.add(() => agent.destroy())
    let running = true
    const worker = async (id: number) => {
      for (let i = 0; running; i++) {
        const { startedAt, answer, thrown } = await timedCall(a.outboundPort, `/w${id}/${i}`, agent)
        const meshError = answer?.headers["x-iip-mesh-error"]
        record({
          startedAt,
          endedAt: performance.now(),
          status: answer?.status ?? 0,
          instance: answer?.status === 200 ? bodyOf(answer) : undefined,
          meshError: typeof meshError === "string" ? meshError : undefined,
          thrown
        })
      }
    }
    const workers = [0, 1, 2, 3, 4, 5].map(worker)
    const stopLoad = async () => {
      running = false
      await Promise.all(workers)
    }
    cleanup.add(stopLoad)
    try {
      await until(() => outcomes.length >= 300 && names.every((n) => outcomes.some((o) => o.instance === n)), "steady load over all three instances")
      // Kill the victim while A has a request in flight to it (checked and killed in one turn).
      await waitFor(() => pendingAtA(victimAddress) > 0, 5000, "a request in flight to the victim")
      marks.pendingAtKill = pendingAtA(victimAddress)
      process.kill(byName.get(victim)!.pid, "SIGKILL")
      marks.killedAt = performance.now()
      await withTimeout(byName.get(victim)!.exited, 5000, "the victim to die")
      marks.goneAt = performance.now()
      ejected = await waitForEndpoint(adminPort, victimAddress, (e) => e.health === "ejected" || e.health === "refused", 20_000, "A's /mesh to show the victim out")
      marks.ejectedAt = performance.now()
      const atEjected = outcomes.length
      await until(() => outcomes.length >= atEjected + 300, "load after the ejection")
    } finally {
      await stopLoad()
      marks.endedAt = performance.now()
    }
    const victimView = a.sidecar.registry.view()[0]!.endpoints.find((e) => e.address === victimAddress)!
    victimFailures = victimView.failures + victimView.refusals
    const retried = access.filter((r) => r.attempts > 1)
    const slowestOf = (list: ReadonlyArray<Outcome>) =>
      [...list]
        .sort((x, y) => y.endedAt - y.startedAt - (x.endedAt - x.startedAt))
        .slice(0, 5)
        .map((o) => `${(o.endedAt - o.startedAt).toFixed(1)} ms (${o.instance ?? describeOutcome(o)}, sent ${(o.startedAt - marks.killedAt).toFixed(0)} ms after the kill)`)
        .join(", ")
    const after = outcomes.filter((o) => o.startedAt > marks.killedAt)
    console.log(
      `SIGKILL: ${outcomes.length} requests (${outcomes.filter((o) => o.status !== 200).length} failed), ` +
        `per instance ${names.map((n) => `${n} ${outcomes.filter((o) => o.instance === n).length}`).join(", ")}; ` +
        `sent after the kill ${after.length} (${names.map((n) => `${n} ${after.filter((o) => o.instance === n).length}`).join(", ")}); ` +
        `${marks.pendingAtKill} in flight to ${victim} at the kill; out ${(marks.ejectedAt - marks.killedAt).toFixed(0)} ms after the kill (${ejected?.health} ${ejected?.ejection?.reason ?? ""}); ` +
        `the victim was gone ${(marks.goneAt - marks.killedAt).toFixed(0)} ms after the SIGKILL; ${victimFailures} failed tries at it, ` +
        `${retried.length} requests retried (${retried.map((r) => `${r.attempts} tries, ${r.durationMs.toFixed(1)} ms`).join("; ")}); ` +
        `slowest overall ${slowestOf(outcomes)}; slowest sent after the kill ${slowestOf(after)}`
    )
  }, holdsStarts(1, 30_000))
  afterAll(() => cleanup.run())

  it("no request fails: every one of them is answered 200", () => {
    expect(outcomes.length).toBeGreaterThan(600)
    expect(outcomes.filter((o) => o.status !== 200).map(describeOutcome)).toStrictEqual([])
  })

  it("every try that failed on the killed instance (in flight at the kill, or refused after) was retried on another one and answered 200", () => {
    expect(marks.pendingAtKill).toBeGreaterThan(0)
    expect(victimFailures).toBeGreaterThan(0)
    const retried = access.filter((r) => r.attempts > 1)
    expect(retried).toHaveLength(victimFailures)
    expect(retried.filter((r) => r.status !== 200 || r.endpoint === victimAddress || r.attempts !== 2)).toStrictEqual([])
    expect(access).toHaveLength(outcomes.length)
  })

  it("traffic goes on to the other two instances, and none to the killed one", () => {
    const after = outcomes.filter((o) => o.startedAt > marks.killedAt)
    for (const name of names.filter((n) => n !== victim)) expect(after.filter((o) => o.instance === name).length).toBeGreaterThan(100)
    expect(after.filter((o) => o.instance === victim)).toHaveLength(0)
  })

  it("A's /mesh shows the killed instance out: held out as refused, or ejected for its failures", () => {
    expect(ejected?.address).toBe(victimAddress)
    if (ejected?.health === "refused") expect(ejected).toMatchObject({ ejections: 0 })
    else expect(["consecutive_failures", "error_rate"]).toContain(ejected?.ejection?.reason)
  })
})

// ---------------------------------------------------------------------------------------------
// 2. One slow instance: p2c against weighted round robin

interface Timed {
  /** Which caller took it (the index into the ports). */
  readonly caller: number
  /** From the intended send time (open loop: a late send counts as waiting). */
  readonly latencyMs: number
  readonly status: number
  readonly instance: string
}

/**
 * Open-loop load: `count` GETs at `rate` per second, request i through `ports[i % ports.length]`,
 * each timed from when it was due, whatever happened to the ones before it. Interleaving the
 * callers gives each the same conditions (a stall of this shared machine hits both alike). The
 * timers pace the load; nothing waits on them.
 */
const openLoop = async (ports: ReadonlyArray<number>, agent: Agent, rate: number, count: number, tag: string): Promise<Array<Timed>> => {
  const interval = 1000 / rate
  const started = performance.now()
  const answers: Array<Promise<Timed>> = []
  for (let i = 0; i < count; i++) {
    const due = started + i * interval
    const wait = due - performance.now()
    if (wait >= 1) await new Promise<void>((r) => setTimeout(r, wait))
    const caller = i % ports.length
    answers.push(
      call(ports[caller]!, { path: `/${tag}/${i}`, agent, timeoutMs: 10_000 }).then((answer) => ({
        caller,
        latencyMs: performance.now() - due,
        status: answer.status,
        instance: bodyOf(answer)
      }))
    )
  }
  return Promise.all(answers)
}

describe("one slow instance of three: p2c against weighted round robin, side by side", () => {
  const cleanup = new Cleanup()
  const FAST_MS = 20
  const SLOW_MS = 200
  /** Requests per second over both callers, and how many each caller gets measured. */
  // Modest, so the sidecars have room to spare while other test files load the machine.
  const RATE = 150
  const MEASURED = 450
  const pickers = ["p2c", "weighted-round-robin"] as const
  const estimates = new Map<string, string>()
  const results = new Map<
    string,
    { readonly p50: number; readonly p90: number; readonly p99: number; readonly slowShare: number; readonly slowAnswers: number; readonly statuses: ReadonlyArray<number> }
  >()

  beforeAll(async () => {
    const instances = [
      await startInstance(cleanup, "fast1", namedApp("fast1", FAST_MS)),
      await startInstance(cleanup, "fast2", namedApp("fast2", FAST_MS)),
      await startInstance(cleanup, "slow", namedApp("slow", SLOW_MS))
    ]
    const addresses = instances.map((i) => i.sidecar.inboundAddress)
    const agent = new Agent({ keepAlive: true, maxSockets: 128 })
    cleanup.add(() => agent.destroy())
    // Warm the process and the instances first (JIT, the apps' and sidecars' connections) through a
    // caller of its own: an endpoint's first latency sample sets its estimate outright and the
    // estimate then moves with a 10 s time constant, so a cold-start outlier in a measured caller's
    // first samples would weigh on its estimates for the whole run.
    const warm = await startCaller(cleanup, addresses, { loadBalancer: "weighted-round-robin" })
    await openLoop([warm.a.outboundPort], agent, RATE, 300, "warm")
    await warm.a.stop()
    // The two callers side by side: the same instances, the same load, the same moments.
    const callers = await Promise.all(pickers.map((loadBalancer) => startCaller(cleanup, addresses, { loadBalancer })))
    const ports = callers.map((c) => c.a.outboundPort)
    // Each caller ramps up as traffic to a new deployment would: one request at a time until it
    // has a few samples of every endpoint (its connections are up; a first sample taken in a burst
    // would carry the burst's queueing), then the open-loop load.
    await Promise.all(
      callers.map(async ({ a }) => {
        const fewest = () => Math.min(...a.sidecar.registry.view()[0]!.endpoints.map((e) => e.samples))
        for (let i = 0; fewest() < 2 && i < 50; i++) await call(a.outboundPort, { path: `/ramp/${i}`, agent })
      })
    )
    await openLoop(ports, agent, RATE, 200, "warm-up")
    const timed = await openLoop(ports, agent, RATE, MEASURED * pickers.length, "measured")
    pickers.forEach((picker, caller) => {
      const mine = timed.filter((t) => t.caller === caller)
      const sorted = mine.map((t) => t.latencyMs).sort((x, y) => x - y)
      results.set(picker, {
        p50: percentile(sorted, 50),
        p90: percentile(sorted, 90),
        p99: percentile(sorted, 99),
        slowShare: mine.filter((t) => t.instance === "slow").length / mine.length,
        // Answers that took about as long as the slow instance or longer, whoever gave them.
        slowAnswers: mine.filter((t) => t.latencyMs >= 0.9 * SLOW_MS).length / mine.length,
        statuses: [...new Set(mine.map((t) => t.status))]
      })
      estimates.set(picker, callers[caller]!.a.sidecar.registry.view()[0]!.endpoints.map((e) => e.latencyMs.toFixed(1)).join("/"))
    })
    const line = (name: string) => {
      const r = results.get(name)!
      return `${name} p50 ${r.p50.toFixed(1)} ms, p90 ${r.p90.toFixed(1)} ms, p99 ${r.p99.toFixed(1)} ms, ${(r.slowAnswers * 100).toFixed(1)}% of answers >= ${0.9 * SLOW_MS} ms, slow instance's share ${(r.slowShare * 100).toFixed(1)}% (its estimates fast1/fast2/slow ${estimates.get(name)} ms)`
    }
    console.log(
      `one slow instance (${SLOW_MS} ms vs ${FAST_MS} ms; open loop, ${RATE}/s over both callers; ${MEASURED} requests each after 100 warm-up): ${line("p2c")}; ${line("weighted-round-robin")}; ` +
        `p99 ratio p2c / round robin ${(results.get("p2c")!.p99 / results.get("weighted-round-robin")!.p99).toFixed(2)}`
    )
  }, 30_000)
  afterAll(() => cleanup.run())

  it("every request is answered 200 under both pickers", () => {
    expect(results.get("p2c")!.statuses).toStrictEqual([200])
    expect(results.get("weighted-round-robin")!.statuses).toStrictEqual([200])
  })

  it("round robin sends the slow instance its third, so its p99 is at least the slow instance's latency", () => {
    const rr = results.get("weighted-round-robin")!
    expect(rr.slowShare).toBeGreaterThan(0.3)
    expect(rr.slowShare).toBeLessThan(0.37)
    expect(rr.p99).toBeGreaterThanOrEqual(SLOW_MS)
  })

  // The p99s are printed above (0.13-0.33 of round robin's in quiet runs). What is asserted allows
  // for a loaded machine (the whole suite runs files in parallel on two cores): there a stalled
  // fast instance can queue enough requests for p2c to try the slow one now and then (1-5 %),
  // which a p99 shows at once, and queueing lifts every percentile of both callers.
  it("under p2c the slow instance gets far less than a third of the traffic (under 10%)", () => {
    expect(results.get("p2c")!.slowShare).toBeLessThan(0.1)
  })

  it("the slow instance raises p2c's tail far less: under a third as many answers as slow as the slow instance", () => {
    expect(results.get("p2c")!.slowAnswers).toBeLessThan(results.get("weighted-round-robin")!.slowAnswers / 3)
  })
})

// ---------------------------------------------------------------------------------------------
// 3-7: one scenario per test, each with its own instances and caller

describe("balancing through real sidecars", () => {
  let cleanup = new Cleanup()
  afterEach(async () => {
    await cleanup.run()
    cleanup = new Cleanup()
  })

  it("load shedding: with 2 requests in flight at the limit of 2, the third gets 503 overloaded with retry-after; after release all succeed", async () => {
    // The app holds requests until released, then answers at once.
    const held: Array<http.ServerResponse> = []
    let holding = true
    const instance = await startInstance(cleanup, "held", (req, res) => {
      req.resume()
      if (holding) held.push(res)
      else res.end("at once")
    })
    const { a } = await startCaller(cleanup, [instance.sidecar.inboundAddress], { maxPendingPerEndpoint: 2 })
    const first = call(a.outboundPort, { path: "/1" })
    const second = call(a.outboundPort, { path: "/2" })
    await waitFor(() => held.length === 2, 5000, "both requests to reach the app")

    const third = await call(a.outboundPort, { path: "/3" })
    expect(third.status).toBe(503)
    expect(third.headers["retry-after"]).toBe("1")
    expect(third.headers["x-iip-mesh-error"]).toBe("outbound; reason=overloaded")
    expect(JSON.parse(bodyOf(third))).toMatchObject({ error: "overloaded", hop: "outbound" })
    // Shed at A: it never reached the app.
    expect(instance.app.seen.map((s) => s.url)).toStrictEqual(["/1", "/2"])

    holding = false
    for (const res of held.splice(0)) res.end("released")
    expect([bodyOf(await first), bodyOf(await second)]).toStrictEqual(["released", "released"])
    expect([(await first).status, (await second).status]).toStrictEqual([200, 200])
    // Below the limit again: the shed request, sent again with another, goes through.
    const again = await Promise.all([call(a.outboundPort, { path: "/3" }), call(a.outboundPort, { path: "/4" })])
    expect(again.map((r) => `${r.status} ${bodyOf(r)}`)).toStrictEqual(["200 at once", "200 at once"])
  })

  it("retries: a POST whose connection dies mid-request is not retried (502 connection_lost), and the other instance never sees it", async () => {
    const victim = await spawnInstance(cleanup, "victim")
    const healthy = await startInstance(cleanup, "healthy", namedApp("healthy"))
    const { a } = await startCaller(cleanup, [victim.inbound, healthy.sidecar.inboundAddress], takeTurns)
    const { path, answer } = await holdOnVictimThenKill(a.outboundPort, victim, "POST")
    expect(answer.status).toBe(502)
    expect(answer.headers["x-iip-mesh-error"]).toBe("outbound; reason=connection_lost")
    expect(healthy.app.seen.filter((s) => s.url === path)).toStrictEqual([])
  }, holdsStarts(1, 15_000))

  it("retries: a GET whose connection dies mid-request is retried on the other instance and answered 200", async () => {
    const victim = await spawnInstance(cleanup, "victim")
    const healthy = await startInstance(cleanup, "healthy", namedApp("healthy"))
    const { a } = await startCaller(cleanup, [victim.inbound, healthy.sidecar.inboundAddress], takeTurns)
    const { path, answer } = await holdOnVictimThenKill(a.outboundPort, victim, "GET")
    expect(`${answer.status} ${bodyOf(answer)}`).toBe("200 healthy")
    expect(healthy.app.seen.filter((s) => s.url === path).map((s) => s.method)).toStrictEqual(["GET"])
  }, holdsStarts(1, 15_000))

  it("retries: a POST refused before it ran (nothing listening) goes to the other instance", async () => {
    const dead = await refusingAddress(cleanup)
    const healthy = await startInstance(cleanup, "healthy", namedApp("healthy"))
    const { a } = await startCaller(cleanup, [dead, healthy.sidecar.inboundAddress], takeTurns)
    const deadView = () => a.sidecar.registry.view()[0]!.endpoints.find((e) => e.address === dead)!
    const answers: Array<string> = []
    // Until one POST has tried the dead endpoint first (every other one does), at most 4.
    for (let i = 0; deadView().refusals === 0 && i < 4; i++) {
      const answer = await call(a.outboundPort, { method: "POST", path: `/order/${i}`, body: "order", headers: { host: "catalog" } })
      answers.push(`${answer.status} ${bodyOf(answer)}`)
    }
    // Its refusal holds it out: not a failure.
    expect(deadView()).toMatchObject({ refusals: 1, failures: 0, health: "refused" })
    expect(answers.every((x) => x === "200 healthy")).toBe(true)
    expect(healthy.app.seen.filter((s) => s.method === "POST")).toHaveLength(answers.length)
  })

  it("retries: with a retry budget of zero (ratio 0, no floor) a GET whose connection dies is not retried", async () => {
    const victim = await spawnInstance(cleanup, "victim")
    const healthy = await startInstance(cleanup, "healthy", namedApp("healthy"))
    const { a } = await startCaller(cleanup, [victim.inbound, healthy.sidecar.inboundAddress], { ...takeTurns, retryBudgetRatio: 0, retryBudgetMinPerSecond: 0 })
    const { path, answer } = await holdOnVictimThenKill(a.outboundPort, victim, "GET")
    expect(answer.status).toBe(502)
    expect(answer.headers["x-iip-mesh-error"]).toBe("outbound; reason=connection_lost")
    expect(healthy.app.seen.filter((s) => s.url === path)).toStrictEqual([])
  }, holdsStarts(1, 15_000))

  it("deadlines: the far app gets an iip-timeout no larger than A's request timeout, or than the app's own shorter one", async () => {
    const instance = await startInstance(cleanup, "echo", echoRequest)
    const { a } = await startCaller(cleanup, [instance.sidecar.inboundAddress], { requestTimeoutMs: 2000 })
    const farTimeout = async (headers: http.OutgoingHttpHeaders): Promise<ReadonlyArray<string>> => {
      const answer = await call(a.outboundPort, { path: "/deadline", headers: { host: "catalog", ...headers } })
      expect(answer.status).toBe(200)
      return rawValues(echoed(answer).rawHeaders, "iip-timeout")
    }
    const ownDefault = await farTimeout({})
    expect(ownDefault).toHaveLength(1)
    expect(Number(ownDefault[0])).toBeGreaterThan(1000)
    expect(Number(ownDefault[0])).toBeLessThanOrEqual(2000)
    // The app's own header shortens it, and is not passed on beside A's.
    const shorter = await farTimeout({ "iip-timeout": "300" })
    expect(shorter).toHaveLength(1)
    expect(Number(shorter[0])).toBeGreaterThan(0)
    expect(Number(shorter[0])).toBeLessThanOrEqual(300)
    // A longer one cannot stretch A's deadline.
    const longer = await farTimeout({ "iip-timeout": "60000" })
    expect(longer).toHaveLength(1)
    expect(Number(longer[0])).toBeLessThanOrEqual(2000)
  })

  it("deadlines: an app's iip-timeout of 100 ms to a 500 ms app ends in 504 after about 100 ms, not after A's 5 s", async () => {
    const instance = await startInstance(cleanup, "slow", namedApp("slow", 500))
    const { a } = await startCaller(cleanup, [instance.sidecar.inboundAddress], { requestTimeoutMs: 5000 })
    const started = performance.now()
    const answer = await call(a.outboundPort, { path: "/slow", headers: { host: "catalog", "iip-timeout": "100" } })
    const took = performance.now() - started
    expect(answer.status).toBe(504)
    expect(answer.headers["x-iip-mesh-error"]).toMatch(/; reason=deadline$/)
    expect(took).toBeGreaterThanOrEqual(95)
    expect(took).toBeLessThan(450)
    expect(instance.app.seen.map((s) => s.url)).toStrictEqual(["/slow"])
  })

  it("deadlines: with perTryTimeoutMs 100, a GET tried first on the 500 ms instance is answered by the fast one after about 100 ms", async () => {
    const slow = await startInstance(cleanup, "slow", namedApp("slow", 500))
    const fast = await startInstance(cleanup, "fast", namedApp("fast"))
    // Round robin takes turns, so some first tries go to the slow instance whatever it did before.
    const { a } = await startCaller(cleanup, [slow.sidecar.inboundAddress, fast.sidecar.inboundAddress], {
      perTryTimeoutMs: 100,
      loadBalancer: "weighted-round-robin"
    })
    const answers: Array<{ readonly path: string; readonly answer: string; readonly took: number }> = []
    for (let i = 0; i < 4; i++) {
      const path = `/try/${i}`
      const started = performance.now()
      const answer = await call(a.outboundPort, { path })
      answers.push({ path, answer: `${answer.status} ${bodyOf(answer)}`, took: performance.now() - started })
    }
    expect(answers.map((x) => x.answer)).toStrictEqual(["200 fast", "200 fast", "200 fast", "200 fast"])
    const viaSlow = answers.filter((x) => slow.app.seen.some((s) => s.url === x.path))
    expect(viaSlow.length).toBeGreaterThanOrEqual(1)
    for (const x of viaSlow) {
      expect(x.took).toBeGreaterThanOrEqual(95)
      expect(x.took).toBeLessThan(450)
    }
    // Every request the slow instance saw was also answered by the fast one: a retry, not a second answer.
    expect(fast.app.seen.map((s) => s.url)).toStrictEqual(answers.map((x) => x.path))
  })

  it("admin: PUT weight 0 moves all traffic off an endpoint and DELETE brings it back; /mesh shows weight, latencyMs, pending, health and source", async () => {
    const instances = await Promise.all(["c1", "c2", "c3"].map((name) => startInstance(cleanup, name, namedApp(name))))
    const addresses = instances.map((i) => i.sidecar.inboundAddress)
    const { a, adminPort } = await startCaller(cleanup, addresses)
    const send = async (count: number): Promise<Map<string, number>> => {
      const by = new Map<string, number>()
      for (let i = 0; i < count; i += 3) {
        for (const answer of await Promise.all([0, 1, 2].map((k) => call(a.outboundPort, { path: `/n/${i + k}` })))) {
          expect(answer.status).toBe(200)
          by.set(bodyOf(answer), (by.get(bodyOf(answer)) ?? 0) + 1)
        }
      }
      return by
    }
    await send(30)
    const view = (await meshOf(adminPort)).services.catalog!
    expect(view.map((e) => e.address).sort()).toStrictEqual([...addresses].sort())
    for (const endpoint of view) {
      expect(endpoint).toMatchObject({ weight: 1, pending: 0, health: "healthy", source: "static" })
      expect(endpoint.latencyMs).toBeGreaterThan(0)
      expect(endpoint.samples).toBeGreaterThan(0)
      expect(endpoint).not.toHaveProperty("discoveredWeight")
    }

    const c2 = addresses[1]!
    const put = await call(adminPort, { method: "PUT", path: `/mesh/catalog/${c2}/weight`, body: "0", headers: { host: "127.0.0.1" } })
    expect(put.status).toBe(200)
    expect(JSON.parse(bodyOf(put))).toStrictEqual({ service: "catalog", address: c2, weight: 0 })
    expect(endpointIn(await meshOf(adminPort), c2)).toMatchObject({ weight: 0, discoveredWeight: 1 })
    const during = await send(60)
    expect(during.get("c2") ?? 0).toBe(0)
    expect((during.get("c1") ?? 0) + (during.get("c3") ?? 0)).toBe(60)
    // Both others stay in the draw: c3 is answered too, at the latest when its faded estimate earns
    // it a probe (an estimate left high by a slow early request keeps p2c on c1 for a while: CI saw
    // all 60 on c1).
    const { value: others } = await readUntil(() => send(30), (by) => (by.get("c3") ?? 0) > 0, 5000)
    expect(others.get("c2") ?? 0).toBe(0)
    expect(others.get("c3")).toBeGreaterThan(0)

    const del = await call(adminPort, { method: "DELETE", path: `/mesh/catalog/${c2}/weight`, headers: { host: "127.0.0.1" } })
    expect(del.status).toBe(200)
    expect(JSON.parse(bodyOf(del))).toStrictEqual({ service: "catalog", address: c2, weight: "from discovery" })
    const restored = endpointIn(await meshOf(adminPort), c2)
    expect(restored?.weight).toBe(1)
    expect(restored).not.toHaveProperty("discoveredWeight")
    // Back in the draw: answered again, at the latest when its faded estimate earns it a probe
    // (an estimate left high by the first requests keeps p2c on the others for a while: CI saw 4 of 60).
    const { value: back } = await readUntil(() => send(30), (by) => (by.get("c2") ?? 0) > 0, 5000)
    expect(back.get("c2")).toBeGreaterThan(0)
  })

  it("admin: a bad weight gets 400 and changes nothing, an unknown endpoint or service 404, another method 405; {\"weight\": n} works too", async () => {
    const instances = await Promise.all(["c1", "c2"].map((name) => startInstance(cleanup, name, namedApp(name))))
    const c1 = instances[0]!.sidecar.inboundAddress
    const { adminPort } = await startCaller(cleanup, instances.map((i) => i.sidecar.inboundAddress))
    const admin = (method: string, path: string, body?: string) => call(adminPort, { method, path, headers: { host: "127.0.0.1" }, ...(body === undefined ? {} : { body }) })
    for (const body of ["abc", "-1", "1.5", "1001", `{"weight":"2"}`, `{"weight":null}`, "null", "", "[3]", "x".repeat(2000)]) {
      const answer = await admin("PUT", `/mesh/catalog/${c1}/weight`, body)
      expect([body.slice(0, 20), answer.status, JSON.parse(bodyOf(answer)).error]).toStrictEqual([body.slice(0, 20), 400, "bad_weight"])
    }
    expect(endpointIn(await meshOf(adminPort), c1)?.weight).toBe(1)
    const unknownEndpoint = await admin("PUT", "/mesh/catalog/127.0.0.1:1/weight", "2")
    expect([unknownEndpoint.status, JSON.parse(bodyOf(unknownEndpoint)).error]).toStrictEqual([404, "no_such_endpoint"])
    expect((await admin("PUT", `/mesh/nosuch/${c1}/weight`, "2")).status).toBe(404)
    expect((await admin("DELETE", `/mesh/nosuch/${c1}/weight`)).status).toBe(404)
    expect((await admin("POST", `/mesh/catalog/${c1}/weight`, "2")).status).toBe(405)
    const json = await admin("PUT", `/mesh/catalog/${c1}/weight`, `{"weight": 3}`)
    expect(json.status).toBe(200)
    expect(endpointIn(await meshOf(adminPort), c1)).toMatchObject({ weight: 3, discoveredWeight: 1 })
  })

  it("active health checks: a stopped sidecar is ejected (health_check) before any request is sent, and is healthy again once back on the same port", async () => {
    const instances = await Promise.all(["c1", "c2", "c3"].map((name) => startInstance(cleanup, name, namedApp(name))))
    const addresses = instances.map((i) => i.sidecar.inboundAddress)
    const { a, adminPort } = await startCaller(cleanup, addresses, { healthCheckIntervalMs: 100 })
    const c2 = instances[1]!
    await c2.sidecar.stop()
    const ejected = await waitForEndpoint(adminPort, c2.sidecar.inboundAddress, (e) => e.health === "ejected", 5000, "A's /mesh to show c2 ejected")
    expect(ejected.ejection?.reason).toBe("health_check")
    // No request has been sent: the checks alone found it.
    const view = (await meshOf(adminPort)).services.catalog!
    expect(view.map((e) => [e.samples, e.failures])).toStrictEqual([
      [0, 0],
      [0, 0],
      [0, 0]
    ])
    expect(instances.flatMap((i) => i.app.seen)).toStrictEqual([])
    expect(view.filter((e) => e.address !== c2.sidecar.inboundAddress).map((e) => e.health)).toStrictEqual(["healthy", "healthy"])

    // Back on the same port (same app): the next passing check returns it, and it takes requests.
    const again = await startSidecar(cleanup, sidecarConfig({ service: "catalog", node: "c2-again", app: c2.app.address, inbound: c2.sidecar.inboundAddress }))
    expect(again.inboundAddress).toBe(c2.sidecar.inboundAddress)
    await waitForEndpoint(adminPort, c2.sidecar.inboundAddress, (e) => e.health === "healthy", 5000, "A's /mesh to show c2 healthy again")
    let answeredByC2 = false
    for (let i = 0; !answeredByC2 && i < 60; i++) answeredByC2 = bodyOf(await call(a.outboundPort, { path: `/back/${i}` })) === "c2"
    expect(answeredByC2).toBe(true)
  })
})
