// Rolling restart under steady load: service "catalog" has two instances (app1 behind sidecar B1,
// app2 behind B2); sidecar A lists both as static endpoints. Four workers loop GETs through A
// while B1 stops gracefully (its Scope closes: go-away, drain) and a new B1' (with a new app1')
// starts on the same inbound port, so A's static endpoint reaches it again.
//
// The scenario runs once (beforeAll); the tests read what it recorded. Zero failed requests over
// the whole run; how long the restart held requests back is reported and checked separately.
import type * as http from "node:http"
import { Agent } from "node:http"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { Cleanup } from "../support/iipRaw.ts"
import { progress, timedCall, type RunningSidecar, sidecarConfig, startApp, startSidecar } from "../support/sidecarHarness.ts"

interface Outcome {
  readonly startedAt: number
  readonly endedAt: number
  readonly status: number
  /** Which instance answered ("b1", "b2", "b1-new"), from the app's body. */
  readonly instance: string | undefined
  readonly meshError: string | undefined
  readonly message: string | undefined
  /** The request itself failed (socket error, client timeout). */
  readonly thrown: string | undefined
}

/** An app that names its instance in every answer. */
const instanceApp = (name: string): http.RequestListener => (req, res) => {
  req.resume()
  req.on("end", () => {
    res.writeHead(200, { "content-type": "text/plain", "x-instance": name })
    res.end(name)
  })
}

const describeOutcome = (o: Outcome) => (o.thrown !== undefined ? `thrown ${o.thrown}` : `${o.status} ${o.meshError ?? ""} ${o.message ?? ""}`.trim())

describe("rolling restart of one of two instances under steady load", () => {
  const cleanup = new Cleanup()
  const outcomes: Array<Outcome> = []
  const marks = { stopStarted: 0, stopped: 0, restarted: 0, ended: 0 }
  const counts = { beforeStop: 0, duringStop: 0, whileDown: 0, afterRestart: 0 }

  beforeAll(async () => {
    const app1 = await startApp(cleanup, instanceApp("b1"))
    const app2 = await startApp(cleanup, instanceApp("b2"))
    const b1 = await startSidecar(cleanup, sidecarConfig({ service: "catalog", node: "b1", app: app1.address, drainTimeoutMs: 3000 }))
    const b2 = await startSidecar(cleanup, sidecarConfig({ service: "catalog", node: "b2", app: app2.address, drainTimeoutMs: 3000 }))
    const a = await startSidecar(
      cleanup,
      sidecarConfig({
        service: "store",
        requestTimeoutMs: 5000,
        endpoints: { catalog: [{ address: b1.inboundAddress, weight: 1 }, { address: b2.inboundAddress, weight: 1 }] }
      })
    )

    // Resolved by the workers as outcomes arrive (no polling, no sleeps).
    const { record, until } = progress(outcomes)

    const agent = new Agent({ keepAlive: true, maxSockets: 8 })
    cleanup.add(() => agent.destroy())
    let running = true
    const worker = async (id: number) => {
      for (let i = 0; running; i++) {
        const { startedAt, answer, thrown } = await timedCall(a.outboundPort, `/w${id}/${i}`, agent)
        const body = answer?.body.toString() ?? ""
        const meshError = answer?.headers["x-iip-mesh-error"]
        record({
          startedAt,
          endedAt: performance.now(),
          status: answer?.status ?? 0,
          instance: answer?.status === 200 ? body : undefined,
          meshError: typeof meshError === "string" ? meshError : undefined,
          message: answer !== undefined && answer.status !== 200 ? body : undefined,
          thrown
        })
      }
    }
    const workers = [0, 1, 2, 3].map(worker)
    const stopLoad = async () => {
      running = false
      await Promise.all(workers)
    }
    cleanup.add(stopLoad)

    const seen = (instance: string) => outcomes.some((o) => o.instance === instance)
    try {
      // Steady state: both instances answer.
      await until(() => outcomes.length >= 200 && seen("b1") && seen("b2"), "steady load over both instances")
      counts.beforeStop = outcomes.length
      // B1 stops gracefully: not ready, go-away, drain, close. Then its app goes too.
      marks.stopStarted = performance.now()
      await b1.stop()
      marks.stopped = performance.now()
      counts.duringStop = outcomes.length - counts.beforeStop
      await app1.close()
      // Load goes on while instance 1 is down.
      const atStopped = outcomes.length
      await until(() => outcomes.length >= atStopped + 200, "load while B1 is down")
      counts.whileDown = outcomes.length - atStopped
      // B1' (with a new app) on the inbound port the OS chose for B1 the first time.
      const app1b = await startApp(cleanup, instanceApp("b1-new"))
      const b1b: RunningSidecar = await startSidecar(
        cleanup,
        sidecarConfig({ service: "catalog", node: "b1-new", app: app1b.address, inbound: b1.inboundAddress, drainTimeoutMs: 3000 })
      )
      expect(b1b.inboundAddress).toBe(b1.inboundAddress)
      marks.restarted = performance.now()
      const atRestarted = outcomes.length
      // A request sent after the restart reaches B1' (the picker may avoid B1's address for a moment after its refusals).
      await until(
        () => outcomes.length >= atRestarted + 400 && outcomes.some((o) => o.instance === "b1-new" && o.startedAt > marks.restarted),
        "a request sent after the restart to reach B1'"
      )
      counts.afterRestart = outcomes.length - atRestarted
    } finally {
      await stopLoad()
      marks.ended = performance.now()
    }
    const failures = outcomes.filter((o) => o.status !== 200)
    const byKind = new Map<string, number>()
    for (const o of failures) byKind.set(describeOutcome(o).replace(/\d+(\.\d+)?\s?ms/g, "N ms"), (byKind.get(describeOutcome(o).replace(/\d+(\.\d+)?\s?ms/g, "N ms")) ?? 0) + 1)
    const slowest = [...outcomes].sort((x, y) => y.endedAt - y.startedAt - (x.endedAt - x.startedAt)).slice(0, 5)
    console.log(
      `rolling restart: slowest requests ${slowest.map((o) => `${(o.endedAt - o.startedAt).toFixed(0)} ms (${o.instance ?? describeOutcome(o)}, sent ${(o.startedAt - marks.stopStarted).toFixed(0)} ms after the stop began)`).join(", ")}`
    )
    console.log(
      `rolling restart: ${outcomes.length} requests (before stop ${counts.beforeStop}, during B1's drain ${counts.duringStop}, while down ${counts.whileDown}, after B1' up ${counts.afterRestart}); ` +
        `B1 stop took ${(marks.stopped - marks.stopStarted).toFixed(0)} ms, down until B1' ${(marks.restarted - marks.stopStarted).toFixed(0)} ms after the stop began; ${failures.length} failed` +
        (failures.length === 0 ? "" : `:\n  ${[...byKind].map(([kind, n]) => `${n} x ${kind}`).join("\n  ")}`)
    )
  }, 60_000)
  afterAll(() => cleanup.run())

  it("traffic reaches both instances before the stop, B2 throughout, and B1' after the restart", () => {
    expect(outcomes.some((o) => o.instance === "b1" && o.endedAt < marks.stopStarted)).toBe(true)
    expect(outcomes.some((o) => o.instance === "b2" && o.startedAt > marks.stopped && o.endedAt < marks.restarted)).toBe(true)
    expect(outcomes.some((o) => o.instance === "b1-new" && o.startedAt > marks.restarted)).toBe(true)
    // Nothing reached the old instance once it had stopped.
    expect(outcomes.filter((o) => o.instance === "b1" && o.startedAt > marks.stopped)).toHaveLength(0)
  })

  it("no request hangs or breaks off: each one gets an HTTP answer", () => {
    expect(outcomes.filter((o) => o.thrown !== undefined).map(describeOutcome)).toStrictEqual([])
  })

  it("zero failed requests over the whole run (every response 200)", () => {
    expect(outcomes.length).toBeGreaterThan(800)
    expect(outcomes.filter((o) => o.status !== 200).map(describeOutcome)).toStrictEqual([])
  })

  it("no request waits longer than A's request timeout (5 s) plus a margin", () => {
    const worst = Math.max(...outcomes.map((o) => o.endedAt - o.startedAt))
    expect(worst).toBeLessThan(5000 + 1500)
  })

  // A request that crosses B1's go-away is refused `draining` (not processed); B1's client has no
  // other connection, so the refusal goes back to the outbound side, which sends it to B2 at once.
  it("no request is parked until B1' comes back: each one sent before the restart is answered by B1 or B2", () => {
    const parked = outcomes.filter((o) => o.startedAt < marks.restarted && o.instance === "b1-new")
    expect(
      parked.map((o) => `sent ${(o.startedAt - marks.stopStarted).toFixed(0)} ms after the stop began, answered by B1' after ${(o.endedAt - o.startedAt).toFixed(0)} ms`)
    ).toStrictEqual([])
  })
})
