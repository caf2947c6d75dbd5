// B's resets on a session to an h2c app (appH2.ts): every call cancelled by its caller, past its
// deadline, or cut past the long-lived share is an RST_STREAM B sends the app. nghttp2 (node's
// HTTP/2, and so grpc-js servers) allows a client 1,000 resets at once, then 33 a second
// (stream_reset_burst / stream_reset_rate, its defense against rapid reset); past that the app
// sends GOAWAY INTERNAL_ERROR and node's client at B destroys the whole session: every call on it
// fails, other callers' too. Measured before: 1,200 calls cancelled by one caller (batches of 100),
// and another caller's long call on the same session ended "13 app at ...: ERR_HTTP2_...". Now B counts its
// resets per session as nghttp2 does and, before the budget runs out, opens new streams on a fresh
// session; the old one drains (its streams finish there).
// Real peers: grpc-js clients -> sidecar A -> sidecar B -> a grpc-js app.
import * as grpc from "@grpc/grpc-js"
import { afterEach, beforeEach, expect, it } from "vitest"
import { identity, rawMethod } from "../support/grpcRaw.ts"
import { Cleanup, waitFor, withTimeout } from "../support/iipRaw.ts"
import { parsePrometheusText, value } from "../support/prometheusText.ts"
import { LOOPBACK, type RunningSidecar, sidecarConfig, startSidecar } from "../support/sidecarHarness.ts"

/** A unary call the app answers only when the test says (`release`). */
const HANG = rawMethod("demo.Jobs", "Hang", false, false)
const METHODS = { hang: HANG }
const JobsClient = grpc.makeGenericClientConstructor(METHODS, "Jobs")
const BATCH = 100
const CANCELS = 1200

let cleanup: Cleanup
let b: RunningSidecar
let a: RunningSidecar
let port: number
/** Calls the app took, and those it saw cancelled. */
let taken: number
let cancelled: number
/** The app's pending answers, by request text. */
let held: Map<string, grpc.sendUnaryData<Buffer>>

beforeEach(async () => {
  cleanup = new Cleanup()
  taken = 0
  cancelled = 0
  held = new Map()
  const server = new grpc.Server()
  server.addService(METHODS, {
    hang: (call: grpc.ServerUnaryCall<Buffer, Buffer>, callback: grpc.sendUnaryData<Buffer>) => {
      taken++
      call.on("cancelled", () => cancelled++)
      held.set(call.request.toString(), callback)
    }
  })
  port = await new Promise<number>((resolve, reject) =>
    server.bindAsync(`${LOOPBACK}:0`, grpc.ServerCredentials.createInsecure(), (error, bound) => (error === null ? resolve(bound) : reject(error))))
  cleanup.add(() => server.forceShutdown())
  b = await startSidecar(cleanup, sidecarConfig({ service: "jobs", app: `${LOOPBACK}:${port}`, appProtocol: "h2c", tracing: false }))
  a = await startSidecar(cleanup, sidecarConfig({ service: "store", tracing: false, requestTimeoutMs: 120_000, endpoints: { jobs: [{ address: b.inboundAddress, weight: 1 }] } }))
})
afterEach(() => cleanup.run())

/** A client of its own connection to A (grpc-js shares one between clients otherwise: A's own server would count the attacker's resets on the victim's connection). */
const client = (): grpc.Client => {
  const made = new JobsClient(`${LOOPBACK}:${a.outboundPort}`, grpc.credentials.createInsecure(), { "grpc.default_authority": "jobs", "grpc.use_local_subchannel_pool": 1 })
  cleanup.add(() => made.close())
  return made
}

const hang = (on: grpc.Client, text: string): { call: grpc.ClientUnaryCall; answer: Promise<string> } => {
  let call!: grpc.ClientUnaryCall
  const answer = new Promise<string>((resolve) => {
    call = on.makeUnaryRequest(HANG.path, identity, identity, Buffer.from(text), new grpc.Metadata(), { deadline: Date.now() + 120_000 }, (error, answer) =>
      resolve(error === null ? answer!.toString() : `${error.code} ${error.details}`))
  })
  cleanup.add(() => call.cancel())
  return { call, answer }
}

it("1,200 calls one caller cancels do not end another caller's call on the same session to the app", async () => {
  const other = hang(client(), "long")
  let otherEnded = false
  void other.answer.then(() => (otherEnded = true))
  await waitFor(() => held.has("long"), 5000, "the app to take the long call")
  const attacker = client()
  for (let round = 0; round < CANCELS / BATCH && !otherEnded; round++) {
    const calls = Array.from({ length: BATCH }, (_, i) => hang(attacker, `c${round}-${i}`))
    await waitFor(() => taken === 1 + (round + 1) * BATCH, 10_000, `the app to take round ${round}'s calls`)
    for (const { call } of calls) call.cancel()
    await Promise.all(calls.map((c) => c.answer))
    // Each reset reached the app (or the app ended the session, and the long call with it).
    await waitFor(() => cancelled === (round + 1) * BATCH || otherEnded, 10_000, `the app to see round ${round}'s calls cancelled`)
  }
  // Before: ended with the session ("13 Received RST_STREAM..." or UNAVAILABLE) after ~1,000 resets.
  expect(otherEnded ? await other.answer : "open").toBe("open")
  // The app saw every reset, on more than one session: B rotated before the budget ran out.
  expect(cancelled).toBe(CANCELS)
  // The long call is still open at the app: answered now, its caller gets the answer.
  held.get("long")!(null, Buffer.from("done"))
  expect(await withTimeout(other.answer, 10_000, "the long call's answer")).toBe("done")
  expect(value(parsePrometheusText((await b.sidecar.telemetry.metrics.text()).body), "iip_mesh_app_sessions_rotated_total")).toBeGreaterThanOrEqual(1)
})

it("sessions drained for their resets are bounded: with as many draining as may (each holding a call), new calls are refused UNAVAILABLE overloaded; the held calls are answered", async () => {
  // 256 places: one session's budget spreads them; three may drain for their resets at once.
  await b.stop()
  b = await startSidecar(cleanup, sidecarConfig({ service: "jobs", app: `${LOOPBACK}:${port}`, appProtocol: "h2c", appH2MaxStreams: 256, tracing: false }))
  await a.stop()
  a = await startSidecar(cleanup, sidecarConfig({ service: "store", tracing: false, requestTimeoutMs: 120_000, endpoints: { jobs: [{ address: b.inboundAddress, weight: 1 }] } }))
  const metric = async (name: string) => value(parsePrometheusText((await b.sidecar.telemetry.metrics.text()).body), name)
  const attacker = client()
  const keepers: Array<{ readonly text: string; readonly answer: Promise<string> }> = []
  const refusals: Array<string> = []
  let rotations = -1
  for (let round = 0; round < 60 && refusals.length === 0; round++) {
    // A call each session keeps open while it drains (one per session: A's connection to B carries 128 at once).
    const now = await metric("iip_mesh_app_sessions_rotated_total")
    const all: Array<{ readonly text: string; ended: boolean }> = []
    if (now !== rotations) {
      rotations = now
      const text = `keep${round}`
      const keeper = hang(client(), text)
      keepers.push({ text, answer: keeper.answer })
      const entry = { text, ended: false }
      all.push(entry)
      void keeper.answer.then(() => (entry.ended = true))
    }
    const calls = Array.from({ length: BATCH }, (_, i) => ({ text: `c${round}-${i}`, ...hang(attacker, `c${round}-${i}`), ended: false }))
    for (const c of calls) void c.answer.then(() => (c.ended = true))
    all.push(...calls)
    await waitFor(() => all.every((c) => c.ended || held.has(c.text)), 10_000, `round ${round}'s calls to reach the app or end`)
    const before = cancelled
    const taken = calls.filter((c) => !c.ended)
    for (const c of taken) c.call.cancel()
    for (const c of calls) refusals.push(...(c.ended ? [await c.answer] : []))
    await waitFor(() => cancelled === before + taken.length, 10_000, `the app to see round ${round}'s calls cancelled`)
  }
  expect(await metric("iip_mesh_app_sessions_rotated_total")).toBe(3)
  expect(refusals.length).toBeGreaterThan(0)
  expect(new Set(refusals.map((r) => r.slice(0, 3)))).toEqual(new Set([`${grpc.status.UNAVAILABLE} `]))
  expect(await metric("iip_mesh_app_reset_refused_total")).toBe(refusals.length)
  // Every call held on a draining session (and the current one) is still open: answered now.
  const open = keepers.filter((k) => held.has(k.text))
  expect(open.length).toBeGreaterThanOrEqual(4)
  for (const k of open) held.get(k.text)!(null, Buffer.from("done"))
  expect(await withTimeout(Promise.all(open.map((k) => k.answer)), 10_000, "the held calls' answers")).toEqual(open.map(() => "done"))
})
