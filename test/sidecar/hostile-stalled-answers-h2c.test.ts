// One calling pod whose h2c client holds many streams at window 0 (SETTINGS_INITIAL_WINDOW_SIZE 0)
// asking for large answers: each answer stalls at B with its stream to the h2c app held (one of
// --app-h2-max-streams places) until the answer idle timeout (60 s by default). Past B's places,
// every other caller of the service waited for a place and met its deadline: 504 (this test at
// main: the honest call's 10 s deadline). Now each peer has a share of the places, as of B's
// HTTP/1.1 pool (peerShare.ts): while another peer's request waits, a stream held past the
// staller's share by an answer it has not read for a second is taken back (reset CANCEL at the
// app, `overloaded` to its caller), counted in the pool's share metrics and said in the same log line.
//
// B tells its peers apart by their verified identity (mTLS), as hostile-stalled-answers-pool.test.ts.
// Real peers: a node:http2 app over h2c, node:http2 as the stalling caller, node:http as the honest one.
import * as http2 from "node:http2"
import { afterEach, beforeAll, beforeEach, describe, expect, it } from "vitest"
import { makeCredentialHolder } from "../../src/identity/credentials.ts"
import { Cleanup, readUntil, waitFor } from "../support/iipRaw.ts"
import { metric } from "../support/eventStreamApp.ts"
import { call, LOOPBACK, sidecarConfig, startSidecar } from "../support/sidecarHarness.ts"
import { makeTestPki, type TestPki } from "../support/testPki.ts"

const PLACES = 8
const ANSWER_CHUNKS = 512
const STORE = "spiffe://iip-mesh.local/svc/store"
const STORE2 = "spiffe://iip-mesh.local/svc/store2"
const CATALOG = "spiffe://iip-mesh.local/svc/catalog"

describe("one caller stalling its answers past B's h2c places", () => {
  let cleanup: Cleanup
  let pki: TestPki
  beforeAll(async () => {
    pki = await makeTestPki("h2share")
  })
  beforeEach(() => {
    cleanup = new Cleanup()
  })
  afterEach(() => cleanup.run())

  it(`another pod's call still gets through while ${PLACES} h2c answers stall and ${PLACES} more wait (the line full) (B's places: ${PLACES}); the staller keeps its share`, async () => {
    let started = 0
    const resets: Array<number> = []
    const app = http2.createServer()
    app.on("stream", (stream, headers) => {
      stream.on("error", () => {})
      if (headers[":path"] === "/honest") return stream.respond({ ":status": 200 }, { endStream: false }), void stream.end("ok")
      started++
      stream.on("close", () => resets.push(stream.rstCode))
      stream.respond({ ":status": 200 })
      const chunk = Buffer.alloc(64 * 1024, 97)
      let sent = 0
      const pump = () => {
        while (sent < ANSWER_CHUNKS && !stream.destroyed) {
          sent++
          if (!stream.write(chunk)) return void stream.once("drain", pump)
        }
        if (!stream.destroyed) stream.end()
      }
      pump()
    })
    await new Promise<void>((resolve) => app.listen(0, LOOPBACK, resolve))
    cleanup.add(() => new Promise<void>((resolve) => app.close(() => resolve())))
    const appAddress = `${LOOPBACK}:${(app.address() as { port: number }).port}`
    const lines: Array<Record<string, unknown>> = []
    const credentials = async (id: string) => ({ credentials: makeCredentialHolder(await pki.credentials(id)) })
    const b = await startSidecar(cleanup, sidecarConfig({ service: "catalog", app: appAddress, appProtocol: "h2c", appH2MaxStreams: PLACES }), (event, fields) => {
      if (event === "app-pool-share-reclaimed") lines.push(fields)
    }, await credentials(CATALOG))
    const endpoints = { catalog: [{ address: b.inboundAddress, weight: 1, identity: CATALOG }] }
    const a = await startSidecar(cleanup, sidecarConfig({ service: "store", endpoints }), undefined, await credentials(STORE))
    const other = await startSidecar(cleanup, sidecarConfig({ service: "store2", endpoints, requestTimeoutMs: 10_000 }), undefined, await credentials(STORE2))
    const stalled = http2.connect(`http://${LOOPBACK}:${a.outboundPort}`, { settings: { initialWindowSize: 0 } })
    cleanup.add(() => stalled.destroy())
    stalled.on("error", () => {})
    const ask = (from: number, count: number) => {
      for (let i = from; i < from + count; i++) stalled.request({ ":path": `/big${i}`, ":authority": "catalog" }).on("error", () => {})
    }
    // Alone, the staller may use every place (before and after).
    ask(0, PLACES)
    await waitFor(() => started >= PLACES, 5_000, "B's places to be taken by the stalled answers")
    // As many more of its requests wait for a place as may (a gauge says so): the line is full.
    ask(PLACES, PLACES)
    expect((await readUntil(() => metric(b, /^iip_mesh_app_streams_waiting /), (waiting) => waiting === PLACES, 5_000)).value).toBe(PLACES)
    // Before: refused at once, 503 overloaded (the line full), or with room in the line, 504 at its
    // 10 s deadline. Now the staller's newest waiting call gives way (refused, not processed), and
    // a stream of its is taken back in about two looks (a second each) once the answers stall.
    const answer = await call(other.outboundPort, { path: "/honest", timeoutMs: 15_000 })
    expect(answer.status).toBe(200)
    expect(answer.body.toString()).toBe("ok")
    // The staller's newest waiting call gave way to it, refused (counted).
    expect(await metric(b, /^iip_mesh_app_streams_refused_total /)).toBe(1)
    // One stream taken back for the one waiting request, reset CANCEL at the app, and said, naming the staller.
    expect(await metric(b, /^iip_mesh_app_pool_share_reclaimed_total /)).toBe(1)
    expect(lines).toMatchObject([{ peer: STORE, protocol: "h2c", reclaimed: 1, held: PLACES, share: PLACES / 2 }])
    await waitFor(() => resets.length === 1, 5_000, "the app's stream taken back to close")
    expect(resets).toEqual([http2.constants.NGHTTP2_CANCEL])
    // The staller's next request took the freed place back (nobody else waits): its share is never less than half.
    await waitFor(() => started >= PLACES + 1, 5_000, "the staller's next request to take the place")
    expect(resets).toHaveLength(1)
  }, 30_000)
})
