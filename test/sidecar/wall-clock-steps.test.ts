// A proxied request's deadline when the wall clock is stepped (NTP, an operator, a VM resume)
// while it waits at the app: app <- sidecar B <- sidecar A, in process, real HTTP and IIP on
// 127.0.0.1 port 0. Date.now() is stepped by an hour (test/support/wallClock.ts); the monotonic
// clock and Node's timers run on, and so must every deadline.
// - Stepped back while a request with `iip-timeout: 500` is at the app: the app's caller gets 504
//   after about 500 ms, not an hour later; and the Date header the sidecar writes on an answer
//   without one follows the step at once (a wall time is meant there), not an hour later.
// - Stepped forward while a 30 s and a 500 ms request are at the app: the 500 ms one gets 504, the
//   30 s one is untouched and gets the app's answer when the app gives it.
// - Stepped back while a graceful stop of sidecar A (drain timeout 1 s) waits for a request at the
//   app: the stop ends after about its drain timeout, the request cut, not an hour later.
import type * as http from "node:http"
import { afterEach, beforeEach, describe, expect, it } from "vitest"
import { Cleanup, deferred, waitFor, withTimeout } from "../support/iipRaw.ts"
import { call, type Mesh, startMesh } from "../support/sidecarHarness.ts"
import { HOUR_MS, type SteppedWallClock, steppedWallClock } from "../support/wallClock.ts"

describe("proxied deadlines with the wall clock stepped", () => {
  let cleanup: Cleanup
  let clock: SteppedWallClock
  let mesh: Mesh
  /** Requests the app holds, by path: resolves with the function that answers it. */
  let held: Map<string, ReturnType<typeof deferred<() => void>>>

  /** Call before sending `path`: resolves when the app holds it. */
  const holding = (path: string) => {
    const entry = deferred<() => void>()
    held.set(path, entry)
    return withTimeout(entry.promise, 5000, `${path} at the app`)
  }

  const viaMesh = (path: string, timeoutMs: number) => call(mesh.a.outboundPort, { path, headers: { host: "catalog", "iip-timeout": String(timeoutMs) } })

  beforeEach(async () => {
    cleanup = new Cleanup()
    held = new Map()
    mesh = await startMesh(cleanup, (req: http.IncomingMessage, res: http.ServerResponse) => {
      // No Date of its own: the answer carries sidecar A's.
      res.sendDate = false
      const url = req.url ?? ""
      const answer = () => res.end(`answer to ${url}`)
      const entry = held.get(url)
      if (entry === undefined) answer()
      else entry.resolve(answer)
    })
    expect((await viaMesh("/warm-up", 5000)).status).toBe(200)
    clock = steppedWallClock()
    cleanup.add(() => clock.restore())
  })

  afterEach(() => cleanup.run())

  it("stepped back an hour while a 500 ms request is at the app: 504 after about 500 ms, not an hour later; the Date header follows the step", async () => {
    const holds = holding("/back")
    const started = performance.now()
    const answer = viaMesh("/back", 500)
    await holds
    clock.step(-HOUR_MS)
    const timedOut = await withTimeout(answer, 5000, "the request's deadline")
    expect(timedOut.status).toBe(504)
    expect(performance.now() - started).toBeGreaterThanOrEqual(450)
    // A wall time is meant in the Date header: the step shows there at once.
    const after = await viaMesh("/after", 5000)
    expect(after.status).toBe(200)
    expect(Math.abs(Date.parse(after.headers.date!) - Date.now())).toBeLessThan(5000)
  })

  it("stepped forward an hour with a 30 s and a 500 ms request at the app: the 500 ms one gets 504, the 30 s one its answer", async () => {
    const holds = [holding("/long"), holding("/short")]
    const started = performance.now()
    const long = viaMesh("/long", 30_000)
    const short = viaMesh("/short", 500)
    const [answerLong] = await Promise.all(holds)
    clock.step(HOUR_MS)
    expect((await withTimeout(short, 5000, "the 500 ms request's deadline")).status).toBe(504)
    expect(performance.now() - started).toBeGreaterThanOrEqual(450)
    answerLong!()
    const answered = await withTimeout(long, 5000, "the 30 s request's answer")
    expect(answered.status).toBe(200)
    expect(answered.body.toString()).toBe("answer to /long")
  })

  it("stepped back an hour while a graceful stop waits for a request at the app: it ends at its 1 s drain timeout, not an hour later", async () => {
    const holds = holding("/held")
    const answer = viaMesh("/held", 30_000).then(
      (received) => `answered ${received.status}`,
      () => "cut"
    )
    await holds
    const started = performance.now()
    const stopped = mesh.a.stop()
    // Not ready is the stop's first step, and the drain's start follows it in the same turn: the
    // step lands while the drain waits for the request.
    await waitFor(() => !mesh.a.sidecar.ready(), 5000, "the stop to begin")
    clock.step(-HOUR_MS)
    await withTimeout(stopped, 5000, "sidecar A's graceful stop")
    expect(performance.now() - started).toBeGreaterThanOrEqual(900)
    expect(await withTimeout(answer, 5000, "the held request's end")).toBe("cut")
  })
})
