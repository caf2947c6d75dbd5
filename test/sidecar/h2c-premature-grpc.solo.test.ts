// Honest gRPC clients that cancel calls, against the outbound listener's reset bounds: the
// premature-reset rule (src/h2's h2Guards.ts: past 500 streams, more than half reset by the caller
// before an answer within 1 s, its own deadline not passed; and a budget of 1,000 such resets, 33 a
// second after). Before src/h2, nghttp2's own bound on RST_STREAMs, which A raised to a backstop. Real peers: grpc-js client -> A -> B -> grpc-js app.
// - Deadlines of 1-20 ms, 100 calls in flight, against an app that holds one call in three and is
//   slow for the others (two sidecars and the load make every call miss its deadline here): each call
//   ends DEADLINE_EXCEEDED (A's own deadline answer, or the client's cancel once its deadline passed:
//   not premature). Measured before the backstop (1,500 calls): nghttp2's bound (1,000 resets at
//   once, 33 a second) ended the session with GOAWAY INTERNAL_ERROR, and the ~100 calls in flight
//   failed INTERNAL "Session closed with error code 2", 2 runs of 2. Measured before A's budget of
//   requests reset before they went on (250 at once, 20 a second) gave way to the premature-reset
//   rule: with this process's loop blocked 400 ms in every 800 (A's loop lagging as on a loaded
//   machine, reading calls and their deadline cancels in one go), A ended the session with GOAWAY
//   ENHANCE_YOUR_CALM too_many_resets and ~100 calls failed RESOURCE_EXHAUSTED, as in a CI run.
// - Calls cancelled by the client (no deadline) once the app took them: one in three, and the
//   session stays; two in three, and A ends it past 500 streams (GOAWAY ENHANCE_YOUR_CALM
//   too_many_premature_resets), after which the client's calls go on over a new session.
// Run alone (*.solo.test.ts): inside the full suite on 2 cores (CI) the deadline case still lost its
// session in 2 of 3 runs, one of them after the fold above (GOAWAY ENHANCE_YOUR_CALM, so the
// premature-reset rule, its ratio or its budget: which was not captured), A's loop lagging past the
// calls' deadlines there. Open for the product (the session's note), not hidden here: alone, under
// niced busy loops, it kept its session in every run.
import * as grpc from "@grpc/grpc-js"
import { afterEach, beforeEach, describe, expect, it } from "vitest"
import { identity, rawMethod } from "../support/grpcRaw.ts"
import { Cleanup } from "../support/iipRaw.ts"
import { parsePrometheusText, sum } from "../support/prometheusText.ts"
import { LOOPBACK, type RunningSidecar, sidecarConfig, startSidecar } from "../support/sidecarHarness.ts"

const WORK = rawMethod("demo.Jobs", "Work", false, false)
const METHODS = { work: WORK }
const JobsClient = grpc.makeGenericClientConstructor(METHODS, "Jobs")
const TOTAL = 1500
const IN_FLIGHT = 100

let cleanup: Cleanup
let a: RunningSidecar
/** Calls the app took; told of each it holds (its request text) so the test can cancel it. */
let taken: number
let onHeld: (text: string) => void

beforeEach(async () => {
  cleanup = new Cleanup()
  taken = 0
  onHeld = () => {}
  const server = new grpc.Server()
  server.addService(METHODS, {
    // A request text starting "hold" is never answered (work its caller gives up on); any other is answered at once.
    work: (call: grpc.ServerUnaryCall<Buffer, Buffer>, callback: grpc.sendUnaryData<Buffer>) => {
      taken++
      const text = call.request.toString()
      if (text.startsWith("hold")) return onHeld(text)
      callback(null, call.request)
    }
  })
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync(`${LOOPBACK}:0`, grpc.ServerCredentials.createInsecure(), (error, bound) => (error === null ? resolve(bound) : reject(error))))
  cleanup.add(() => server.forceShutdown())
  const b = await startSidecar(cleanup, sidecarConfig({ service: "jobs", app: `${LOOPBACK}:${port}`, appProtocol: "h2c", tracing: false }))
  a = await startSidecar(cleanup, sidecarConfig({ service: "store", tracing: false, endpoints: { jobs: [{ address: b.inboundAddress, weight: 1 }] } }))
})
afterEach(() => cleanup.run())

/** A client on a connection of its own to A, its path warmed by one answered call (A's connection to B, B's session to the app up). */
const warmClient = async (): Promise<grpc.Client> => {
  const client = new JobsClient(`${LOOPBACK}:${a.outboundPort}`, grpc.credentials.createInsecure(), { "grpc.default_authority": "jobs", "grpc.use_local_subchannel_pool": 1 })
  cleanup.add(() => client.close())
  await new Promise<void>((resolve, reject) =>
    client.makeUnaryRequest(WORK.path, identity, identity, Buffer.from("warm"), new grpc.Metadata(), { deadline: Date.now() + 10_000 }, (error) => (error === null ? resolve() : reject(error))))
  return client
}

/** TOTAL calls, IN_FLIGHT at once, the i-th with `text(i)` and `deadline(i)`: how many ended with each status ("0" OK; else code and details). */
const run = (client: grpc.Client, text: (i: number) => string, deadline: (i: number) => grpc.Deadline, calls: Map<string, grpc.ClientUnaryCall>): Promise<Record<string, number>> =>
  new Promise((done) => {
    const outcomes: Record<string, number> = {}
    let started = 0
    let ended = 0
    const one = (): void => {
      const i = started++
      const name = text(i)
      const call = client.makeUnaryRequest(WORK.path, identity, identity, Buffer.from(name), new grpc.Metadata(), { deadline: deadline(i) }, (error) => {
        calls.delete(name)
        const key = error === null ? "0" : error.code === grpc.status.DEADLINE_EXCEEDED || error.code === grpc.status.CANCELLED ? String(error.code) : `${error.code} ${error.details}`
        outcomes[key] = (outcomes[key] ?? 0) + 1
        if (++ended === TOTAL) return done(outcomes)
        if (started < TOTAL) one()
      })
      calls.set(name, call)
      cleanup.add(() => call.cancel())
    }
    for (let i = 0; i < IN_FLIGHT; i++) one()
  })

/** Sessions A ended for abuse, for `reason` or for any. */
const endedSessions = async (reason?: string): Promise<number> =>
  sum(parsePrometheusText((await a.sidecar.telemetry.metrics.text()).body), "iip_mesh_h2_sessions_ended_total", reason === undefined ? {} : { reason })

describe("a grpc-js client whose calls end by their deadlines", () => {
  it(`${TOTAL} calls, ${IN_FLIGHT} in flight on 1-20 ms deadlines against a slow app: each ends OK or DEADLINE_EXCEEDED, the session is never ended`, async () => {
    const client = await warmClient()
    taken = 0
    const outcomes = await run(client, (i) => (i % 3 === 0 ? `hold${i}` : `now${i}`), (i) => Date.now() + 1 + (i % 20), new Map())
    // Nothing but answers and deadlines: a session lost fails the calls in flight INTERNAL, UNAVAILABLE
    // or RESOURCE_EXHAUSTED. Asserted with the sessions A ended by reason, so a failure says which
    // rule (if any of A's: node's own bounds end it INTERNAL_ERROR, or refuse streams one by one).
    // node:http2 kept a reset stream in its map until an immediate after the read that reset it and
    // refused new streams past the announced concurrency meanwhile (4-16 of 1,500 calls
    // RESOURCE_EXHAUSTED "Bandwidth exhausted", 3-4 runs of 10); src/h2 forgets a stream as it ends: no allowance.
    const failed = Object.fromEntries(Object.entries(outcomes).filter(([k]) => k !== "0" && k !== String(grpc.status.DEADLINE_EXCEEDED)))
    const ended = { pings: await endedSessions("too_many_pings"), premature: await endedSessions("too_many_premature_resets"), any: await endedSessions() }
    expect({ failed, ended }).toEqual({ failed: {}, ended: { pings: 0, premature: 0, any: 0 } })
    expect(taken).toBeGreaterThan(0)
  }, 120_000)
})

describe("a grpc-js client that cancels calls once the app took them (no deadline)", () => {
  /** Cancels every held call as the app takes it. */
  const cancelHeld = (calls: Map<string, grpc.ClientUnaryCall>): void => {
    onHeld = (text) => calls.get(text)?.cancel()
  }
  const far = (): grpc.Deadline => Date.now() + 60_000

  it(`one call in three cancelled, ${TOTAL} calls: every other call answered, the session kept`, async () => {
    const client = await warmClient()
    const calls = new Map<string, grpc.ClientUnaryCall>()
    cancelHeld(calls)
    const outcomes = await run(client, (i) => (i % 3 === 0 ? `hold${i}` : `now${i}`), far, calls)
    expect(outcomes).toEqual({ "0": TOTAL - TOTAL / 3, [String(grpc.status.CANCELLED)]: TOTAL / 3 })
    expect(await endedSessions("too_many_premature_resets")).toBe(0)
  }, 120_000)

  it(`two calls in three cancelled, ${TOTAL} calls: A ends the session past 500 streams (too_many_premature_resets); the client's calls go on over a new one`, async () => {
    const client = await warmClient()
    const calls = new Map<string, grpc.ClientUnaryCall>()
    cancelHeld(calls)
    const outcomes = await run(client, (i) => (i % 3 === 0 ? `now${i}` : `hold${i}`), far, calls)
    const ended = await endedSessions("too_many_premature_resets")
    expect(ended).toBeGreaterThanOrEqual(1)
    // The calls in flight on a session A ended fail RESOURCE_EXHAUSTED (grpc-js's reading of ENHANCE_YOUR_CALM); the rest are answered or cancelled by the client.
    const exhausted = outcomes[`${grpc.status.RESOURCE_EXHAUSTED} Bandwidth exhausted or memory limit exceeded`] ?? 0
    expect(Object.keys(outcomes).filter((k) => k !== "0" && k !== String(grpc.status.CANCELLED) && !k.startsWith(`${grpc.status.RESOURCE_EXHAUSTED} `))).toEqual([])
    expect(exhausted).toBeLessThanOrEqual(ended * IN_FLIGHT)
    // Answered calls after the first session's end: the client went on over a new one.
    expect(outcomes["0"]).toBeGreaterThan(500 / 3)
    const after = await new Promise<string>((resolve) =>
      client.makeUnaryRequest(WORK.path, identity, identity, Buffer.from("after"), new grpc.Metadata(), { deadline: Date.now() + 10_000 }, (error, answer) =>
        resolve(error === null ? answer!.toString() : `${error.code} ${error.details}`)))
    expect(after).toBe("after")
  }, 120_000)
})
