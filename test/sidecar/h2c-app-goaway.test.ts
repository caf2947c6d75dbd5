// An h2c app that sends GOAWAY (a gRPC server's graceful restart, a max connection age) while B's
// calls wait for a stream to it (appH2.ts): the old session keeps the streams it took until they
// end, and the waiting calls go to a new session at once, each answered once. Before, B counted
// the old session's streams against the new one's places (the app's SETTINGS_MAX_CONCURRENT_STREAMS
// held for all its sessions): the waiting calls stayed behind the held ones, and this failed
// (the two waiting calls ended DEADLINE_EXCEEDED at A's default timeout, the old session's calls
// still held). A stream the app's GOAWAY says it never processed (above its last stream id) ends
// UNAVAILABLE, app_unavailable, not processed (w9-h2refused): a guard, it passed before. An app
// that announced SETTINGS_MAX_CONCURRENT_STREAMS 0 and then went away left its 0 as B's limit: no
// new session was ever made and every call was refused overloaded (this failed: "14 ... overloaded").
import * as grpc from "@grpc/grpc-js"
import * as http2 from "node:http2"
import type * as net from "node:net"
import { afterEach, beforeEach, describe, expect, it } from "vitest"
import { grpcMessage, identity, rawMethod } from "../support/grpcRaw.ts"
import { Cleanup, readUntil, waitFor, withTimeout } from "../support/iipRaw.ts"
import { parsePrometheusText, value } from "../support/prometheusText.ts"
import { LOOPBACK, sidecarConfig, startSidecar } from "../support/sidecarHarness.ts"

const METHODS = { hold: rawMethod("demo.Inventory", "Hold", false, false) }
const InventoryClient = grpc.makeGenericClientConstructor(METHODS, "Inventory")

/** A node:http2 gRPC app on 127.0.0.1 port 0 (closed at cleanup) taking `maxConcurrentStreams` (2) streams per session, echoing each message; an answer is pushed to `held` while `holding()`. */
const startHoldingApp = async (cleanup: Cleanup, held: Array<() => void>, holding: () => boolean, maxConcurrentStreams = 2) => {
  const seen: Array<string> = []
  const sessions: Array<http2.ServerHttp2Session> = []
  const app = http2.createServer({ settings: { maxConcurrentStreams } })
  app.on("session", (session) => sessions.push(session))
  app.on("stream", (stream) => {
    stream.on("error", () => {})
    const parts: Array<Buffer> = []
    stream.on("data", (chunk: Buffer) => parts.push(chunk))
    stream.on("end", () => {
      const message = Buffer.concat(parts).subarray(5)
      seen.push(message.toString())
      const answer = () => {
        if (stream.destroyed) return
        stream.respond({ ":status": 200, "content-type": "application/grpc" }, { waitForTrailers: true })
        stream.on("wantTrailers", () => stream.sendTrailers({ "grpc-status": "0" }))
        stream.end(grpcMessage(message))
      }
      if (holding()) held.push(answer)
      else answer()
    })
  })
  await new Promise<void>((resolve) => app.listen(0, LOOPBACK, resolve))
  cleanup.add(() => new Promise<void>((resolve) => {
    for (const session of sessions) session.destroy()
    app.close(() => resolve())
  }))
  return { app, port: (app.address() as net.AddressInfo).port, sessions, seen }
}

/** B in front of the app at `port` (--app-h2-max-streams 8), A in front of B, and a grpc-js client of A: `call(i)` sends `m<i>`, resolving to "0 <answer>" or "<code> <details> <x-iip-mesh-error>". */
const startMeshTo = async (cleanup: Cleanup, port: number) => {
  const b = await startSidecar(cleanup, sidecarConfig({ service: "inventory", app: `${LOOPBACK}:${port}`, appProtocol: "h2c", appH2MaxStreams: 8, tracing: false }))
  const a = await startSidecar(cleanup, sidecarConfig({ service: "store", tracing: false, endpoints: { inventory: [{ address: b.inboundAddress, weight: 1 }] } }))
  const client = new InventoryClient(`${LOOPBACK}:${a.outboundPort}`, grpc.credentials.createInsecure(), { "grpc.default_authority": "inventory" })
  cleanup.add(() => client.close())
  const call = (i: number) =>
    new Promise<string>((resolve) => {
      client.makeUnaryRequest(METHODS.hold.path, identity, identity, Buffer.from(`m${i}`), new grpc.Metadata(), { deadline: Date.now() + 60_000 }, (error, answer) =>
        resolve(error === null ? `0 ${answer!.toString()}` : `${error.code} ${error.details} ${error.metadata.get("x-iip-mesh-error")[0]?.toString()}`))
    })
  return { b, call }
}

describe("an h2c app that sends GOAWAY", () => {
  let cleanup: Cleanup
  beforeEach(() => {
    cleanup = new Cleanup()
  })
  afterEach(() => cleanup.run())

  it("calls waiting for the app's 2 streams go to a new session at once, while the old session's calls finish there", async () => {
    const held: Array<() => void> = []
    let holding = true
    const { port, sessions, seen } = await startHoldingApp(cleanup, held, () => holding)
    const { b, call } = await startMeshTo(cleanup, port)
    // Two calls hold the app's two streams; two more wait at B for a place.
    const first = [call(0), call(1)]
    await waitFor(() => held.length === 2, 10_000, "the app to hold two calls")
    const waiting = [call(2), call(3)]
    const metrics = async () => parsePrometheusText((await b.sidecar.telemetry.metrics.text()).body)
    expect((await readUntil(async () => value(await metrics(), "iip_mesh_app_streams_waiting"), (n) => n === 2, 10_000)).value).toBe(2)
    // The app restarts gracefully: GOAWAY (NO_ERROR, its last stream), the held calls go on, new ones are answered at once.
    holding = false
    sessions[0]!.close()
    expect(await withTimeout(Promise.all(waiting), 20_000, "the two waiting calls' answers")).toStrictEqual(["0 m2", "0 m3"])
    expect(held.length).toBe(2)
    expect(sessions.length).toBe(2)
    for (const release of held.splice(0)) release()
    expect(await withTimeout(Promise.all(first), 20_000, "the two held calls' answers")).toStrictEqual(["0 m0", "0 m1"])
    // Each reached the app once, nothing refused, nobody left waiting.
    expect(seen.toSorted()).toStrictEqual(["m0", "m1", "m2", "m3"])
    expect(value(await metrics(), "iip_mesh_app_streams_waiting")).toBe(0)
    expect(value(await metrics(), "iip_mesh_app_streams_refused_total")).toBe(0)
  }, 90_000)

  it("a stream above the GOAWAY's last stream id is UNAVAILABLE app_unavailable (not processed); the one below is answered; a new call goes to a new session", async () => {
    const held: Array<() => void> = []
    const { port, sessions } = await startHoldingApp(cleanup, held, () => sessions.length === 1)
    const { call } = await startMeshTo(cleanup, port)
    const first = [call(0), call(1)]
    await waitFor(() => held.length === 2, 10_000, "the app to hold two calls")
    // The app says it goes away having processed stream 1 only (RFC 9113 §6.8: stream 3 was not).
    sessions[0]!.goaway(http2.constants.NGHTTP2_NO_ERROR, 1)
    expect(await withTimeout(first[1]!, 20_000, "the refused call's end")).toMatch(/^14 .* app; reason=app_unavailable$/)
    expect(await withTimeout(call(2), 20_000, "a new call's answer")).toBe("0 m2")
    expect(sessions.length).toBe(2)
    for (const release of held.splice(0)) release()
    expect(await withTimeout(first[0]!, 20_000, "the processed call's answer")).toBe("0 m0")
  }, 90_000)

  it("an app that announced 0 streams, then GOAWAY: the next call goes to a new session, not refused overloaded for ever", async () => {
    const { app, port, sessions } = await startHoldingApp(cleanup, [], () => false, 0)
    const { call } = await startMeshTo(cleanup, port)
    // B's first stream goes out before the app's SETTINGS (0): the app refuses it, not processed.
    expect(await withTimeout(call(0), 20_000, "the refused call's end")).toMatch(/^14 .* app; reason=app_unavailable$/)
    // The app takes streams again on new connections, and sends GOAWAY on this one; B closes it.
    app.updateSettings({ maxConcurrentStreams: 2 })
    const gone = new Promise<void>((resolve) => sessions[0]!.once("close", () => resolve()))
    sessions[0]!.close()
    await withTimeout(gone, 20_000, "B to close the app's first session")
    expect(await withTimeout(call(1), 20_000, "a new call's answer")).toBe("0 m1")
    expect(sessions.length).toBe(2)
  }, 90_000)
})
