// Request deadlines of the IIP library when the wall clock is stepped (NTP, an operator, a VM
// resume) while requests wait: they run on the monotonic clock, so a step neither stretches a
// deadline nor fires it early. Date.now() is stepped by an hour (test/support/wallClock.ts);
// performance.now() and Node's timers run on. Real TCP on 127.0.0.1, port 0.
// - Mesh mode, stepped back while a 300 ms call is at the handler: the call still fails with its
//   deadline after about 300 ms (not an hour later), and the server interrupts the handler.
// - Mesh mode, stepped forward while a 30 s and a 400 ms call are at the handler: when the 400 ms
//   one times out the 30 s one is untouched, at the caller and at the server, and gets its answer.
// - Plain IIP, a call queued for the client's only channel, stepped back: it fails with its 300 ms
//   deadline (not an hour later).
// - Plain IIP, stepped forward with a 30 s and a 400 ms call queued: the 400 ms one times out, the
//   30 s one stays queued, goes out once the channel is free and gets its answer (with its time left).
import { afterEach, beforeEach, describe, expect, it } from "vitest"
import type { IipClient } from "../../src/iip/client.ts"
import type { IncomingRequest, IipServer } from "../../src/iip/server.ts"
import { RequestTimeout } from "../../src/mux/errors.ts"
import { RemoteError } from "../../src/mux/meshSession.ts"
import { Cleanup, deferred, withTimeout } from "../support/iipRaw.ts"
import { type Settled, settle, startClient, startServer } from "../support/meshTest.ts"
import { HOUR_MS, type SteppedWallClock, steppedWallClock } from "../support/wallClock.ts"

/** A request the /hold handler holds: answered by `release`, or late (unseen) once its signal aborts. */
interface Held {
  readonly signal: AbortSignal
  readonly release: () => void
}

/** The outcome of a call, readable while it is still pending (undefined until then). */
const watched = <A>(promise: Promise<A>): { readonly settled: Promise<Settled<A>>; readonly outcome: () => Settled<A> | undefined } => {
  let outcome: Settled<A> | undefined
  const settled = settle(promise).then((result) => (outcome = result))
  return { settled, outcome: () => outcome }
}

/** A deadline failure as either side reports it: the caller's own timer, or the server's answer. */
const expectDeadlineFailure = (result: Settled<unknown>) => {
  expect(result.ok).toBe(false)
  const error = (result as { readonly error: unknown }).error
  if (error instanceof RemoteError) expect(error.code).toBe("deadline_exceeded")
  else expect(error).toBeInstanceOf(RequestTimeout)
}

describe.each([
  { mode: "mesh", mesh: true },
  { mode: "plain IIP", mesh: false }
])("deadlines with the wall clock stepped ($mode)", ({ mesh }) => {
  let cleanup: Cleanup
  let clock: SteppedWallClock
  let server: IipServer
  let client: IipClient
  /** Requests at /hold, by body, as they arrive. */
  let held: Map<string, ReturnType<typeof deferred<Held>>>

  /** Call before sending `body` to /hold: resolves when the handler holds it. */
  const holding = (body: string) => {
    const entry = deferred<Held>()
    held.set(body, entry)
    return withTimeout(entry.promise, 5000, `${body} at the /hold handler`)
  }

  beforeEach(async () => {
    cleanup = new Cleanup()
    held = new Map()
    server = await startServer(cleanup, { mesh })
    server.handle("/echo", (request) => request.data)
    server.handle("/hold", (request: IncomingRequest) => {
      const body = request.data.toString()
      return new Promise<string>((resolve) => {
        request.signal.addEventListener("abort", () => resolve(`late answer to ${body}`), { once: true })
        held.get(body)?.resolve({ signal: request.signal, release: () => resolve(`answer to ${body}`) })
      })
    })
    // Plain: one connection of one channel, and no pipelining behind a busy one, so a second call waits in the client's queue.
    client = startClient(cleanup, server.address.port, mesh ? { maxConnections: 1 } : { mesh: false, maxConnections: 1, maxChannelsPerConnection: 1, pipelineAtLimit: false })
    expect((await client.call("/echo", "warm-up", { timeoutMs: 5000 })).toString()).toBe("warm-up")
    clock = steppedWallClock()
    cleanup.add(() => clock.restore())
  })

  afterEach(() => cleanup.run())

  it("stepped back an hour while a 300 ms call waits: it fails with its deadline after about 300 ms, not an hour later", async () => {
    const started = performance.now()
    let waiting: Promise<Settled<Buffer>>
    if (mesh) {
      const holds = holding("back")
      waiting = settle(client.call("/hold", "back", { timeoutMs: 300 }))
      const at = await holds
      clock.step(-HOUR_MS)
      expectDeadlineFailure(await withTimeout(waiting, 5000, "the call's deadline"))
      // The server's own deadline (or the caller's cancel) interrupted the handler.
      if (!at.signal.aborted) await withTimeout(new Promise((resolve) => at.signal.addEventListener("abort", resolve)), 5000, "the handler's signal to abort")
    } else {
      const holds = holding("occupier")
      const occupier = settle(client.call("/hold", "occupier", { timeoutMs: 30_000 }))
      const at = await holds
      waiting = settle(client.call("/echo", "queued", { timeoutMs: 300 }))
      expect(client.stats.queued).toBe(1)
      clock.step(-HOUR_MS)
      expectDeadlineFailure(await withTimeout(waiting, 5000, "the queued call's deadline"))
      at.release()
      expect(await withTimeout(occupier, 5000, "the occupier's answer")).toStrictEqual({ ok: true, value: Buffer.from("answer to occupier") })
    }
    expect(performance.now() - started).toBeGreaterThanOrEqual(250)
  })

  it("stepped forward an hour with a 30 s and a 400 ms call waiting: the 400 ms one times out, the 30 s one goes on and gets its answer", async () => {
    const started = performance.now()
    const holds = mesh ? [holding("long"), holding("short")] : [holding("occupier")]
    const occupier = mesh ? undefined : settle(client.call("/hold", "occupier", { timeoutMs: 30_000 }))
    const occupied = mesh ? undefined : await holds[0]!
    const long = watched(client.call(mesh ? "/hold" : "/echo", "long", { timeoutMs: 30_000 }))
    const short = watched(client.call(mesh ? "/hold" : "/echo", "short", { timeoutMs: 400 }))
    const [longAt] = mesh ? await Promise.all(holds) : [undefined]
    if (!mesh) expect(client.stats.queued).toBe(2)
    clock.step(HOUR_MS)
    expectDeadlineFailure(await withTimeout(short.settled, 5000, "the 400 ms call's deadline"))
    expect(performance.now() - started).toBeGreaterThanOrEqual(350)
    // The deadline that passed took nothing else with it.
    expect(long.outcome()).toBeUndefined()
    if (mesh) {
      expect(longAt!.signal.aborted).toBe(false)
      longAt!.release()
      expect(await withTimeout(long.settled, 5000, "the 30 s call's answer")).toStrictEqual({ ok: true, value: Buffer.from("answer to long") })
    } else {
      expect(client.stats.queued).toBe(1)
      occupied!.release()
      expect(await withTimeout(occupier!, 5000, "the occupier's answer")).toStrictEqual({ ok: true, value: Buffer.from("answer to occupier") })
      expect(await withTimeout(long.settled, 5000, "the 30 s call's answer")).toStrictEqual({ ok: true, value: Buffer.from("long") })
    }
  })
})
