// The streams B opens to an h2c app (appH2.ts): at most `appH2MaxStreams` at once, lowered to the
// app's own SETTINGS_MAX_CONCURRENT_STREAMS; as many again wait for a place, in order; past that a
// call is refused before the app sees it, which a gRPC caller reads as UNAVAILABLE in a
// trailers-only answer naming the hop, and B counts. Before, every call went to node's session,
// whose nghttp2 queue for streams past the app's limit has no bound: this failed (all six calls
// were taken, none refused).
import * as grpc from "@grpc/grpc-js"
import { afterEach, beforeEach, describe, expect, it } from "vitest"
import { identity, rawMethod } from "../support/grpcRaw.ts"
import { Cleanup, readUntil, waitFor, withTimeout } from "../support/iipRaw.ts"
import { parsePrometheusText, value } from "../support/prometheusText.ts"
import { LOOPBACK, sidecarConfig, startSidecar } from "../support/sidecarHarness.ts"

const METHODS = { hold: rawMethod("demo.Inventory", "Hold", false, false) }
const InventoryClient = grpc.makeGenericClientConstructor(METHODS, "Inventory")

describe("streams to an h2c app", () => {
  let cleanup: Cleanup
  beforeEach(() => {
    cleanup = new Cleanup()
  })
  afterEach(() => cleanup.run())

  it("past the app's 2 concurrent streams and 2 waiting, the 5th and 6th calls are UNAVAILABLE (inbound overloaded), counted; the rest are answered in turn", async () => {
    // A grpc-js app that announces 2 concurrent streams and holds every call until released.
    const held: Array<() => void> = []
    let holding = true
    const server = new grpc.Server({ "grpc.max_concurrent_streams": 2 })
    server.addService(METHODS, {
      hold: (call: grpc.ServerUnaryCall<Buffer, Buffer>, callback: grpc.sendUnaryData<Buffer>) =>
        holding ? void held.push(() => callback(null, call.request)) : callback(null, call.request)
    })
    const port = await new Promise<number>((resolve, reject) =>
      server.bindAsync(`${LOOPBACK}:0`, grpc.ServerCredentials.createInsecure(), (error, bound) => (error === null ? resolve(bound) : reject(error)))
    )
    cleanup.add(() => server.forceShutdown())
    const b = await startSidecar(cleanup, sidecarConfig({ service: "inventory", app: `${LOOPBACK}:${port}`, appProtocol: "h2c", appH2MaxStreams: 8, tracing: false }))
    const a = await startSidecar(cleanup, sidecarConfig({ service: "store", tracing: false, endpoints: { inventory: [{ address: b.inboundAddress, weight: 1 }] } }))
    const client = new InventoryClient(`${LOOPBACK}:${a.outboundPort}`, grpc.credentials.createInsecure(), { "grpc.default_authority": "inventory" })
    cleanup.add(() => client.close())
    const call = (i: number) =>
      new Promise<{ readonly code: number; readonly hop: string | undefined; readonly answer: string | undefined }>((resolve) => {
        client.makeUnaryRequest(METHODS.hold.path, identity, identity, Buffer.from(`m${i}`), new grpc.Metadata(), { deadline: Date.now() + 20_000 }, (error, answer) =>
          resolve({ code: error === null ? 0 : error.code, hop: error?.metadata.get("x-iip-mesh-error")[0]?.toString(), answer: answer?.toString() }))
      })
    // The first two reach the app, the next two wait at B (in order: each only once the one before it is at B).
    const calls = [call(0), call(1)]
    await waitFor(() => held.length === 2, 10_000, "the app to hold two calls")
    calls.push(call(2), call(3))
    const metrics = async () => parsePrometheusText((await b.sidecar.telemetry.metrics.text()).body)
    expect((await readUntil(async () => value(await metrics(), "iip_mesh_app_streams_waiting"), (waiting) => waiting === 2, 10_000)).value).toBe(2)
    const refused = await withTimeout(Promise.all([call(4), call(5)]), 10_000, "the refusals")
    for (const outcome of refused) {
      expect(outcome.code).toBe(grpc.status.UNAVAILABLE)
      expect(outcome.hop).toBe("inbound; reason=overloaded")
    }
    expect(value(await metrics(), "iip_mesh_app_streams_refused_total")).toBe(2)
    expect(held.length).toBe(2)
    // Released: the waiting ones take the places freed, in turn, and are answered at once.
    holding = false
    for (const release of held.splice(0)) release()
    const answered = await withTimeout(Promise.all(calls), 10_000, "the four answers")
    expect(answered.map((o) => `${o.code} ${o.answer}`)).toStrictEqual(["0 m0", "0 m1", "0 m2", "0 m3"])
    expect(value(await metrics(), "iip_mesh_app_streams_waiting")).toBe(0)
  }, 60_000)
})
