// The Kubernetes informer (src/discovery/kubernetesWatch.ts) against an API server that answers
// every watch with 410 Gone (test/discovery/fakeKubeApi.ts), on a manual clock (manualClock.ts)
// so minutes of backoff run at once, with the default backoff (1 s doubling to 30 s). A 410 makes
// the informer list again; the client's own delay sat between that list and the next watch, so
// the lists came right after each 410: 6 lists in 15 s (of up to 16 MiB each), and a server that
// sends one event before each 410 (which resets the client's delay) had one list a second. The
// relists back off as the informer's restarts do; 30 s since the last list without a 410 (one watch
// open that long, or many a proxy cut) resets the series.
import { afterEach, describe, expect, it } from "vitest"
import { watchKubernetes } from "../../src/discovery/kubernetesWatch.ts"
import { endpointSlice, FakeKubeApi } from "./fakeKubeApi.ts"
import { ManualClock } from "./manualClock.ts"
import { Recorder } from "./recorder.ts"

const apis: Array<FakeKubeApi> = []
const stops: Array<() => void> = []
afterEach(async () => {
  for (const stop of stops.splice(0)) stop()
  await Promise.all(apis.splice(0).map((api) => api.close()))
})

/** The defaults of watchKubernetes: the first delay, doubling up to the longest. */
const RETRY_MS = 1_000
const MAX_RETRY_MS = 30_000

/** A fake API server holding one slice of "web" in "shop". */
const server = async (): Promise<FakeKubeApi> => {
  const api = await FakeKubeApi.start("shop")
  apis.push(api)
  api.apply("ADDED", endpointSlice("web-a", [{ ip: "10.1.0.10" }]))
  return api
}

/** Watches "shop"'s slices on `clock` with the default backoff: what it reports as failed (the delays it announces). */
const watch = (api: FakeKubeApi, clock: ManualClock) => {
  const failed = new Recorder<{ readonly failures: number; readonly retryInMs: number | undefined }>()
  stops.push(watchKubernetes({
    kubeConfig: api.kubeConfig(),
    path: "/apis/discovery.k8s.io/v1/namespaces/shop/endpointslices",
    namespace: "shop",
    onChange: () => {},
    onFailed: (_error, failures, retryInMs) => failed.push({ failures, retryInMs }),
    clock
  }))
  return failed
}

/** Wakes the informer's sleeps in turn up to `untilMs` on the clock: when (on the clock) the server got each list from `from` on. */
const listTimes = async (api: FakeKubeApi, clock: ManualClock, untilMs: number, from = 0): Promise<Array<number>> => {
  const times: Array<number> = []
  let seen = from
  for (;;) {
    await clock.idle()
    // The clock stands still while the informer does I/O: what it sent since, it sent now.
    for (const request of api.requests.items.slice(seen)) if (request.kind === "list") times.push(clock.now())
    seen = api.requests.items.length
    if (clock.nextAt > untilMs) return times
    clock.wakeNext()
  }
}

/** Wakes the informer's sleeps in turn, as soon as each begins, until `done` holds (within 3 s of real time). */
const wakeUntil = async (clock: ManualClock, done: () => boolean, what: string): Promise<void> => {
  const deadline = performance.now() + 3000
  while (!done()) {
    if (performance.now() > deadline) throw new Error(`timed out after 3000 ms waiting for ${what} (at ${clock.now()} ms on the clock)`)
    if (clock.nextAt !== Infinity) clock.wakeNext()
    else await new Promise<void>((resolve) => setTimeout(resolve, 2))
  }
}

/** The gaps between consecutive times. */
const gaps = (times: ReadonlyArray<number>): Array<number> => times.slice(1).map((time, i) => time - times[i]!)

/** What each gap must be at least: the backoff's delay for the nth relist in a row. */
const backoff = (n: number): number => Math.min(MAX_RETRY_MS, RETRY_MS * 2 ** n)

describe("relists after 410 Gone back off", () => {
  it.each([["status", "an HTTP status"], ["event", "an ERROR event"]] as const)("every watch answered 410 Gone (%s, as %s): the lists back off 1 s doubling to 30 s, and the delays are said", async (gone, _as) => {
    const api = await server()
    api.goneWatches = gone
    const clock = new ManualClock()
    const failed = watch(api, clock)
    const times = await listTimes(api, clock, 180_000)
    console.log(`kubernetes: lists at ${times.map((t) => (t / 1000).toFixed(0)).join(", ")} s against 410 on every watch (${gone})`)
    // Before: 0, 0, 1, 2, 4, 8, 16, ... s, the list right after each 410: 6 lists in the first 15 s.
    expect(times.filter((time) => time < 15_000).length).toBeLessThanOrEqual(4)
    gaps(times).forEach((gap, n) => expect(gap, `gap ${n} of ${JSON.stringify(times)}`).toBeGreaterThanOrEqual(backoff(n)))
    expect(failed.items.slice(0, 6).map((f) => f.retryInMs)).toStrictEqual([1_000, 2_000, 4_000, 8_000, 16_000, 30_000])
  })

  it("an event before each 410 (a server that churns) does not reset the series: the lists still back off", async () => {
    const api = await server()
    api.churnWatches = endpointSlice("web-a", [{ ip: "10.1.0.10" }])
    api.goneWatches = "event"
    const clock = new ManualClock()
    watch(api, clock)
    const times = await listTimes(api, clock, 60_000)
    console.log(`kubernetes: lists at ${times.map((t) => (t / 1000).toFixed(0)).join(", ")} s against an event, then 410, on every watch`)
    // Before: one list a second (the event reset the client's delay; only the watch spacing held it).
    expect(times.filter((time) => time < 15_000).length).toBeLessThanOrEqual(4)
    gaps(times).forEach((gap, n) => expect(gap, `gap ${n} of ${JSON.stringify(times)}`).toBeGreaterThanOrEqual(backoff(n)))
  })

  it("a watch that lived a while (the longest delay) resets the series: the next 410 lists at once, the ones after back off from 1 s again", async () => {
    const api = await server()
    const clock = new ManualClock()
    watch(api, clock)
    await api.requests.waitFor((r) => r.kind === "watch", { timeoutMs: 3000 })
    // Nothing sleeps while the watch is open; it stays open for the longest delay.
    clock.advance(MAX_RETRY_MS)
    const mark = api.requests.mark
    api.expireHistory()
    api.dropWatches()
    const times = await listTimes(api, clock, MAX_RETRY_MS + 20_000, mark)
    expect(times[0]).toBe(MAX_RETRY_MS)
    gaps(times).forEach((gap, n) => expect(gap, `gap ${n} of ${JSON.stringify(times)}`).toBeGreaterThanOrEqual(backoff(n)))
    expect(times.length).toBeGreaterThanOrEqual(3)
  })

  it.each([
    ["stream", "an ERROR event that ends the open watch"],
    ["reopen", "the watch re-opened after the server ended it"]
  ] as const)("a healthy watch open past the longest delay, in the middle of a backed-off series, then 410 Gone (etcd compacted, %s: %s): the list follows at once, no wait on the clock and none said", async (how, _as) => {
    const api = await server()
    api.goneWatches = "event"
    const clock = new ManualClock()
    const failed = watch(api, clock)
    // A series under way: 410 on every watch, lists at 0, 1 and 3 s; the next relist waits 4 s.
    expect(await listTimes(api, clock, 5_000)).toStrictEqual([0, 1_000, 3_000])
    // The server is healthy again: the next list's watch stays open, for longer than the longest delay.
    api.goneWatches = undefined
    await wakeUntil(clock, () => api.openWatches > 0, "a watch that stays open")
    clock.advance(MAX_RETRY_MS + 1_000)
    const said = failed.mark
    const mark = api.requests.mark
    if (how === "stream") api.goneOpenWatches()
    else {
      api.expireHistory()
      api.dropWatches()
      // The client's own delay and the watch spacing come before the watch that meets the 410.
      await wakeUntil(clock, () => api.requests.items.slice(mark).some((r) => r.kind === "watch"), "the watch from the compacted resourceVersion")
    }
    const goneAt = clock.now()
    // Nothing wakes the clock from here: a list that waited on it would never come.
    const listed = await api.requests.waitFor((r) => r.kind === "list", { from: mark, timeoutMs: 3000 }).then(() => true, () => false)
    expect({ listed, at: clock.now(), said: failed.items.slice(said) }).toStrictEqual({ listed: true, at: goneAt, said: [] })
  })

  it("watches ended every 10 s (a proxy that cuts them, none living the longest delay) for a minute since the last list: each 410 then lists at once, as often as it comes", async () => {
    const api = await server()
    const clock = new ManualClock()
    const failed = watch(api, clock)
    const slice = endpointSlice("web-a", [{ ip: "10.1.0.10" }])
    await api.requests.waitFor((r) => r.kind === "watch", { timeoutMs: 3000 })
    for (let round = 1; round <= 3; round++) {
      // Six watches of 10 s, each bringing an event (so the client re-opens at once: nothing sleeps).
      for (let cut = 0; cut < 6; cut++) {
        clock.advance(10_000)
        const mark = api.requests.mark
        api.apply("MODIFIED", slice)
        api.dropWatches()
        await api.requests.waitFor((r) => r.kind === "watch", { from: mark, timeoutMs: 3000 })
      }
      // Ten seconds into the seventh, it ends, and the next is answered 410: its resourceVersion (the event just sent) expired while none was open.
      clock.advance(10_000)
      const mark = api.requests.mark
      api.apply("MODIFIED", slice)
      api.dropWatches()
      api.expireHistory()
      api.apply("MODIFIED", slice)
      // Before: each relist waited (1 s, then 2 s, 4 s...: no watch had stayed open 30 s), and the clock stands still.
      const listed = await api.requests.waitFor((r) => r.kind === "list", { from: mark, timeoutMs: 3000 }).then(() => true, () => false)
      expect({ round, listed, delays: failed.items.map((f) => f.retryInMs) }).toStrictEqual({ round, listed: true, delays: [] })
      // The watch after it waits out the spacing (one a second), then stays open.
      await clock.idle()
      clock.wakeNext()
      await api.requests.waitFor((r) => r.kind === "watch", { from: mark + 2, timeoutMs: 3000 })
    }
  })
})
