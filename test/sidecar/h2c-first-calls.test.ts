// The h2c leg's share for long-lived calls (appH2.ts, h2c-stream-share.test.ts) knew a gRPC method
// streams only once B saw one of its answers carry a second message, and never cut a call it took:
// so first calls took every place. Measured before, --app-h2-max-streams 4 (share 2): the first
// calls of four distinct server-streaming methods that never end all streamed, and four unary
// calls beside them were DEADLINE_EXCEEDED at their 3 s deadline; so were they after four first
// calls of one such method at once. Now a call that shows it streams (its answer's second message,
// or its request's) while long-lived calls hold the share already is cut there: B resets the
// app's stream and the caller gets RESOURCE_EXHAUSTED `inbound; reason=overloaded` (processed: the
// app saw it; A retries it nowhere, nor do grpc-js retry policies; a call refused before the app
// sees it stays UNAVAILABLE), counted in
// iip_mesh_app_long_streams_refused_total. A unary call is never cut: it has one message each way.
// Left open, by design: a call that answers at most one message and then holds its stream (a watch
// with nothing to say yet) cannot be told from a slow unary call until it ends, and only its
// deadline bounds it (PROTOCOL.md §17.5).
// Real peers: a grpc-js client -> sidecar A -> sidecar B -> a grpc-js app.
import * as grpc from "@grpc/grpc-js"
import { afterEach, beforeEach, expect, it } from "vitest"
import { identity, rawMethod } from "../support/grpcRaw.ts"
import { Cleanup, withTimeout } from "../support/iipRaw.ts"
import { parsePrometheusText, value } from "../support/prometheusText.ts"
import { LOOPBACK, type RunningSidecar, sidecarConfig, startSidecar } from "../support/sidecarHarness.ts"

/** Four server-streaming methods, each sending two messages and then nothing; Echo answers. */
const WATCHES = [0, 1, 2, 3].map((i) => rawMethod("demo.Feeds", `Watch${i}`, false, true))
const ECHO = rawMethod("demo.Feeds", "Echo", false, false)
/** A client stream that answers nothing (its messages are counted). */
const COLLECT = rawMethod("demo.Feeds", "Collect", true, false)
const METHODS = Object.fromEntries([...WATCHES.map((m, i) => [`watch${i}`, m] as const), ["echo", ECHO] as const, ["collect", COLLECT] as const])
const FeedsClient = grpc.makeGenericClientConstructor(METHODS, "Feeds")
const LONG = 120_000

let cleanup: Cleanup
let client: grpc.Client
let b: RunningSidecar
let a: RunningSidecar
/** The streams the app is serving, by method path, as they started. */
let served: Array<string>
/** Messages Collect's calls received. */
let collected: number

beforeEach(async () => {
  cleanup = new Cleanup()
  served = []
  collected = 0
  const server = new grpc.Server()
  const handlers: Record<string, grpc.UntypedHandleCall> = {
    echo: (call: grpc.ServerUnaryCall<Buffer, Buffer>, callback: grpc.sendUnaryData<Buffer>) => callback(null, call.request),
    collect: (call: grpc.ServerReadableStream<Buffer, Buffer>) => {
      served.push(COLLECT.path)
      call.on("error", () => {})
      call.on("data", () => collected++)
    }
  }
  WATCHES.forEach((m, i) => {
    handlers[`watch${i}`] = (call: grpc.ServerWritableStream<Buffer, Buffer>) => {
      served.push(m.path)
      call.on("error", () => {})
      call.write(Buffer.from("a"))
      call.write(Buffer.from("b"))
    }
  })
  server.addService(METHODS, handlers)
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync(`${LOOPBACK}:0`, grpc.ServerCredentials.createInsecure(), (error, bound) => (error === null ? resolve(bound) : reject(error))))
  cleanup.add(() => server.forceShutdown())
  b = await startSidecar(cleanup, sidecarConfig({ service: "feeds", app: `${LOOPBACK}:${port}`, appProtocol: "h2c", appH2MaxStreams: 4, tracing: false }))
  a = await startSidecar(cleanup, sidecarConfig({ service: "store", tracing: false, requestTimeoutMs: LONG, endpoints: { feeds: [{ address: b.inboundAddress, weight: 1 }] } }))
  client = new FeedsClient(`${LOOPBACK}:${a.outboundPort}`, grpc.credentials.createInsecure(), { "grpc.default_authority": "feeds" })
  cleanup.add(() => client.close())
})
afterEach(() => cleanup.run())

/** A watch of `path`: "streaming" once its two messages came, else "<code> <hop>" as it ended. */
const watch = (path: string): Promise<string> => {
  const call = client.makeServerStreamRequest(path, identity, identity, Buffer.from("w"), new grpc.Metadata(), { deadline: Date.now() + LONG })
  cleanup.add(() => call.cancel())
  call.on("error", () => {})
  return withTimeout(new Promise<string>((resolve) => {
    let seen = 0
    call.on("data", () => {
      if (++seen === 2) resolve("streaming")
    })
    call.on("status", (status: grpc.StatusObject) => resolve(`${status.code} ${status.metadata.get("x-iip-mesh-error")[0]?.toString()}`))
  }), 10_000, `the watch of ${path} to stream or end`)
}

const echo = (text: string): Promise<string> =>
  new Promise((resolve) =>
    client.makeUnaryRequest(ECHO.path, identity, identity, Buffer.from(text), new grpc.Metadata(), { deadline: Date.now() + 3000 }, (error, answer) =>
      resolve(error === null ? answer!.toString() : `${error.code} ${error.details}`)))

const refusedCount = async () => value(parsePrometheusText((await b.sidecar.telemetry.metrics.text()).body), "iip_mesh_app_long_streams_refused_total")
/** Cut once the app saw it (processed). */
const CUT = `${grpc.status.RESOURCE_EXHAUSTED} inbound; reason=overloaded`
/** Refused before the app sees it (not processed): retried elsewhere by whoever may. */
const REFUSED = `${grpc.status.UNAVAILABLE} inbound; reason=overloaded`

it("first calls of four distinct streaming methods: two stream, the next two are cut RESOURCE_EXHAUSTED overloaded as their second message shows them; unary calls are answered", async () => {
  const outcomes: Array<string> = []
  for (const m of WATCHES) outcomes.push(await watch(m.path))
  expect(outcomes).toStrictEqual(["streaming", "streaming", CUT, CUT])
  // Processed: the app served all four (nothing retried them elsewhere).
  expect(served).toStrictEqual(WATCHES.map((m) => m.path))
  expect(await refusedCount()).toBe(2)
  expect(await withTimeout(Promise.all(["u0", "u1", "u2", "u3"].map(echo)), 10_000, "the unary calls")).toStrictEqual(["u0", "u1", "u2", "u3"])
  // A failure of B at A, but the only endpoint is never ejected (the outlier detector's cap).
  const { body } = await a.sidecar.telemetry.metrics.text()
  expect(body.split("\n").filter((l) => /^iip_mesh_endpoint_ejections_total/.test(l) && !l.endsWith(" 0"))).toStrictEqual([])
})

it("four first calls of one streaming method at once: two stream, two are cut; unary calls are answered; the method's next call is refused at its start", async () => {
  const outcomes = await Promise.all(WATCHES.map(() => watch(WATCHES[0]!.path)))
  expect(outcomes.toSorted()).toStrictEqual([CUT, CUT, "streaming", "streaming"])
  expect(await withTimeout(Promise.all(["u0", "u1", "u2", "u3"].map(echo)), 10_000, "the unary calls")).toStrictEqual(["u0", "u1", "u2", "u3"])
  // Learned: refused before the app sees it.
  expect(await watch(WATCHES[0]!.path)).toBe(REFUSED)
  expect(served).toHaveLength(4)
  expect(await refusedCount()).toBe(3)
})

it("a client stream past the share is cut at its request's second message, before B writes it: RESOURCE_EXHAUSTED overloaded (the app has its first)", async () => {
  expect([await watch(WATCHES[0]!.path), await watch(WATCHES[1]!.path)]).toStrictEqual(["streaming", "streaming"])
  const call = client.makeClientStreamRequest(COLLECT.path, identity, identity, new grpc.Metadata(), { deadline: Date.now() + LONG }, () => {})
  cleanup.add(() => call.cancel())
  const status = withTimeout(new Promise<string>((resolve) => call.on("status", (s: grpc.StatusObject) => resolve(`${s.code} ${s.metadata.get("x-iip-mesh-error")[0]?.toString()}`))), 10_000, "the collect's status")
  call.write(Buffer.from("m1"))
  call.write(Buffer.from("m2"))
  call.write(Buffer.from("m3"))
  expect(await status).toBe(CUT)
  // B wrote it its first message at most.
  expect(collected).toBeLessThanOrEqual(1)
  expect(await refusedCount()).toBe(1)
})
