// Endpoints whose dial fails are held out of picks at once: caller sidecar A in the test process,
// instances of "catalog" as real sidecars B (node:http apps behind them) on 127.0.0.1 port 0, and
// endpoints that refuse connections (a port bound and closed again: ECONNREFUSED) or that reset
// every connection (a gate in front of a B, shut: the dial fails before the hello is answered).
//
//   1. One of three refusing: of 100 sequential requests, at most the first try goes to it; it is
//      shown held out as "refused", with no ejection and no failure counted, and its refused try
//      counted in iip_mesh_endpoint_refusals_total (an operator's sign it is down: no ejection says so).
//   2. Two of three refusing (above the outlier detector's cap of half a service): after each one's
//      first refusal every request goes to the live one.
//   3. It comes back: the gate opens, and A's background redial takes it back in within its backoff
//      cap; requests reach it again.
//   4. Every endpoint held: requests are still answered (502 connect_failed, outbound hop named)
//      each within a bound, none hangs.
//   5. A try whose per-try timeout ends while its connection is still being made (a gate that holds
//      each new connection 2 s before piping it on): the try's deadline, not the endpoint's verdict,
//      so the endpoint is not held out.
//   6. No connection within the client's 3 s connect timeout (the same gate, holding connections
//      longer): the endpoint's verdict, held out as refused like a refusal (no failure, no ejection).
//
// Tries per request come from A's access log (`attempts`): every request here ends at a live
// endpoint, so the tries beyond one per request are the ones the refusing endpoints took.
import * as net from "node:net"
import { afterEach, describe, expect, it } from "vitest"
import { REFUSED_REDIAL } from "../../src/sidecar/endpoints.ts"
import type { AccessRecord } from "../../src/sidecar/outboundAccess.ts"
import { Cleanup, waitFor } from "../support/iipRaw.ts"
import { parsePrometheusText, sum } from "../support/prometheusText.ts"
import { startResetGate } from "../support/resetGate.ts"
import { type Answer, call, captureAccessLog, LOOPBACK, refusingAddress, type RunningSidecar, sidecarConfig, startApp, startSidecar } from "../support/sidecarHarness.ts"

/** The registry's redial backoff cap for a refused endpoint. */
const REDIAL_CAP_MS = REFUSED_REDIAL.maxMs

/** An instance of "catalog": an app answering its name, behind its own sidecar B. */
const startInstance = async (cleanup: Cleanup, name: string): Promise<RunningSidecar> => {
  const app = await startApp(cleanup, (req, res) => {
    req.resume()
    req.on("end", () => res.end(name))
  })
  return startSidecar(cleanup, sidecarConfig({ service: "catalog", node: name, app: app.address }))
}

const startCaller = (cleanup: Cleanup, addresses: ReadonlyArray<string>) =>
  startSidecar(cleanup, sidecarConfig({ service: "store", accessLog: true, endpoints: { catalog: addresses.map((address) => ({ address, weight: 1 })) } }))

const viewOf = (a: RunningSidecar, address: string) =>
  a.sidecar.registry.view().find((s) => s.service === "catalog")!.endpoints.find((e) => e.address === address)!

/** `n` sequential GETs through A, each bounded (a hang fails the test). */
const sequential = async (a: RunningSidecar, n: number, from = 0): Promise<Array<Answer>> => {
  const answers: Array<Answer> = []
  for (let i = from; i < from + n; i++) answers.push(await call(a.outboundPort, { path: `/r${i}`, headers: { host: "catalog" }, agent: false, timeoutMs: 5000 }))
  return answers
}

/** A TCP gate on 127.0.0.1 port 0 that pipes each new connection to `targetPort` only `delayMs` after accepting it. */
const startSlowGate = async (cleanup: Cleanup, targetPort: number, delayMs: number): Promise<string> => {
  const sockets = new Set<net.Socket>()
  const timers = new Set<NodeJS.Timeout>()
  const server = net.createServer((socket) => {
    sockets.add(socket)
    socket.on("error", () => socket.destroy())
    const timer = setTimeout(() => {
      timers.delete(timer)
      const upstream = net.connect(targetPort, LOOPBACK)
      sockets.add(upstream)
      const end = () => {
        socket.destroy()
        upstream.destroy()
      }
      for (const s of [socket, upstream]) s.on("error", end).on("close", end)
      socket.pipe(upstream).pipe(socket)
    }, delayMs)
    timers.add(timer)
  })
  await new Promise<void>((resolve) => server.listen(0, LOOPBACK, resolve))
  cleanup.add(
    () =>
      new Promise<void>((resolve) => {
        for (const t of timers) clearTimeout(t)
        for (const s of sockets) s.destroy()
        server.close(() => resolve())
      })
  )
  return `${LOOPBACK}:${(server.address() as net.AddressInfo).port}`
}

/** The access records of `n` requests (they are written as each ends; waits for the last). */
const accessOf = async (access: ReadonlyArray<AccessRecord>, n: number): Promise<ReadonlyArray<AccessRecord>> => {
  await waitFor(() => access.length >= n, 5000, `${n} access records`)
  return access.slice(0, n)
}

/** A counter of A's /metrics, summed over the series with `labels`. */
const metricOf = async (a: RunningSidecar, name: string, labels: Readonly<Record<string, string>>): Promise<number> =>
  sum(parsePrometheusText((await a.sidecar.telemetry.metrics.text()).body), name, labels)

const triesBeyondFirst = (records: ReadonlyArray<AccessRecord>): number => records.reduce((sum, r) => sum + r.attempts - 1, 0)

describe("an endpoint whose dial fails is held out of picks", () => {
  let cleanup = new Cleanup()
  afterEach(async () => {
    await cleanup.run()
    cleanup = new Cleanup()
  })

  it("one of three refusing: at most one of 100 requests tries it; held as refused, no ejection, no failure", async () => {
    const access = captureAccessLog(cleanup, (line) => JSON.parse(line) as AccessRecord)
    const [b1, b2] = [await startInstance(cleanup, "b1"), await startInstance(cleanup, "b2")]
    const dead = await refusingAddress(cleanup)
    const a = await startCaller(cleanup, [b1.inboundAddress, b2.inboundAddress, dead])

    const answers = await sequential(a, 100)
    const records = await accessOf(access, 100)
    const refusedTries = triesBeyondFirst(records)
    console.log(`1 of 3 refusing: ${refusedTries} of 100 requests tried it; A's view of it: ${JSON.stringify(viewOf(a, dead))}`)
    expect(answers.filter((x) => x.status !== 200).map((x) => x.status)).toStrictEqual([])
    expect(refusedTries).toBeLessThanOrEqual(1)
    expect(viewOf(a, dead)).toMatchObject({ health: "refused", ejections: 0, failures: 0 })
    // Its refused tries, as /mesh counts them, are what the metric says; no ejection is counted.
    expect(await metricOf(a, "iip_mesh_endpoint_refusals_total", { service: "catalog", endpoint: dead })).toBe(viewOf(a, dead).refusals)
    expect(viewOf(a, dead).refusals).toBeGreaterThanOrEqual(1)
    expect(await metricOf(a, "iip_mesh_endpoint_ejections_total", { service: "catalog" })).toBe(0)
  }, 30_000)

  it("two of three refusing (above the ejection cap): after each one's first refusal, every request goes to the live one", async () => {
    const access = captureAccessLog(cleanup, (line) => JSON.parse(line) as AccessRecord)
    const b1 = await startInstance(cleanup, "b1")
    const dead = [await refusingAddress(cleanup), await refusingAddress(cleanup)]
    const a = await startCaller(cleanup, [b1.inboundAddress, ...dead])

    const answers = await sequential(a, 100)
    const records = await accessOf(access, 100)
    const refusedTries = triesBeyondFirst(records)
    console.log(`2 of 3 refusing: ${refusedTries} tries of 100 requests went to them (${records.filter((r) => r.attempts > 1).length} requests retried); A's view: ${JSON.stringify(dead.map((d) => viewOf(a, d)))}`)
    expect(answers.filter((x) => x.status !== 200).map((x) => `${x.status} ${String(x.headers["x-iip-mesh-error"])}`)).toStrictEqual([])
    expect(refusedTries).toBeLessThanOrEqual(2)
    for (const d of dead) expect(viewOf(a, d)).toMatchObject({ health: "refused", ejections: 0, failures: 0 })
  }, 30_000)

  it("it comes back: once its dial succeeds again, requests reach it within the redial backoff", async () => {
    const access = captureAccessLog(cleanup, (line) => JSON.parse(line) as AccessRecord)
    const b1 = await startInstance(cleanup, "b1")
    const b2 = await startInstance(cleanup, "b2")
    const gate = await startResetGate(cleanup, LOOPBACK, b2.sidecar.inbound.port)
    const a = await startCaller(cleanup, [b1.inboundAddress, gate.address])

    // Until A has tried the shut gate once (p2c may draw b1 for a while): then it is held.
    let sent = 0
    while (viewOf(a, gate.address).health !== "refused" && sent < 100) sent += (await sequential(a, 1, sent)).length
    expect(viewOf(a, gate.address)).toMatchObject({ health: "refused", ejections: 0, failures: 0 })
    const held = await sequential(a, 50, sent)
    sent += 50
    expect(held.map((x) => x.body.toString()).filter((body) => body !== "b1")).toStrictEqual([])
    expect(triesBeyondFirst(await accessOf(access, sent))).toBe(1)

    gate.open()
    const openedAt = performance.now()
    let backAfterMs = Number.NaN
    while (Number.isNaN(backAfterMs) && performance.now() - openedAt < REDIAL_CAP_MS + 2000) {
      const [answer] = await sequential(a, 1, sent++)
      if (answer!.body.toString() === "b2") backAfterMs = performance.now() - openedAt
    }
    console.log(`back ${backAfterMs.toFixed(0)} ms after the gate opened; A's view: ${JSON.stringify(viewOf(a, gate.address))}`)
    expect(backAfterMs).toBeLessThan(REDIAL_CAP_MS + 1000)
    expect(viewOf(a, gate.address)).toMatchObject({ health: "healthy", ejections: 0, failures: 0 })
  }, 30_000)

  it("every endpoint held: each request is still answered, 502 connect_failed at the outbound hop, none hangs", async () => {
    const dead = [await refusingAddress(cleanup), await refusingAddress(cleanup)]
    const a = await startSidecar(cleanup, sidecarConfig({ service: "store", endpoints: { catalog: dead.map((address) => ({ address, weight: 1 })) } }))
    for (let i = 0; i < 20; i++) {
      const started = performance.now()
      const answer = await call(a.outboundPort, { path: `/r${i}`, headers: { host: "catalog" }, agent: false, timeoutMs: 5000 })
      expect(answer.status).toBe(502)
      expect(answer.headers["x-iip-mesh-error"]).toBe("outbound; reason=connect_failed")
      expect(JSON.parse(answer.body.toString())).toMatchObject({ error: "connect_failed", hop: "outbound" })
      expect(performance.now() - started).toBeLessThan(2000)
    }
    for (const d of dead) expect(viewOf(a, d)).toMatchObject({ health: "refused", ejections: 0, failures: 0 })
  }, 30_000)

  it("a try whose per-try timeout ends while its connection is being made: the endpoint is not held out", async () => {
    const b = await startInstance(cleanup, "b")
    const gate = await startSlowGate(cleanup, b.sidecar.inbound.port, 2000)
    const a = await startSidecar(cleanup, sidecarConfig({ service: "store", perTryTimeoutMs: 100, endpoints: { catalog: [{ address: gate, weight: 1 }] } }))
    const started = performance.now()
    const answer = await call(a.outboundPort, { path: "/r", headers: { host: "catalog" }, agent: false, timeoutMs: 5000 })
    const took = performance.now() - started
    // Answered at the try's deadline, well before the gate lets the connection through.
    expect(took).toBeLessThan(1500)
    expect(answer.status).toBeGreaterThanOrEqual(500)
    expect(viewOf(a, gate)).toMatchObject({ refusals: 0, ejections: 0 })
    expect(viewOf(a, gate).health).not.toBe("refused")
  }, 30_000)

  it("no connection within the 3 s connect timeout: held out as refused, no failure, no ejection", async () => {
    const b = await startInstance(cleanup, "b")
    const gate = await startSlowGate(cleanup, b.sidecar.inbound.port, 20_000)
    const a = await startSidecar(cleanup, sidecarConfig({ service: "store", endpoints: { catalog: [{ address: gate, weight: 1 }] } }))
    const started = performance.now()
    const answer = await call(a.outboundPort, { path: "/r", headers: { host: "catalog" }, agent: false, timeoutMs: 10_000 })
    const took = performance.now() - started
    console.log(`connect timeout: ${answer.status} ${String(answer.headers["x-iip-mesh-error"])} after ${took.toFixed(0)} ms; A's view: ${JSON.stringify(viewOf(a, gate))}`)
    expect(answer.status).toBe(502)
    expect(answer.headers["x-iip-mesh-error"]).toBe("outbound; reason=connect_failed")
    expect(took).toBeGreaterThanOrEqual(2900)
    expect(viewOf(a, gate)).toMatchObject({ health: "refused", refusals: 1, failures: 0, ejections: 0 })
  }, 30_000)
})
