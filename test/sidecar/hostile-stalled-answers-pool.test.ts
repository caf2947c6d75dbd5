// One calling pod whose app asks for large answers and reads none of them (HTTP/1.1 connections
// paused after their request): each answer stalls at B with its app socket held, until the answer
// idle timeout (60 s by default). Past B's --app-pool-size of them, every caller of the service,
// other pods' sidecars included, waited for a pool socket and met its deadline: 504 (measured with
// the defaults, 256 sockets, from an h2c client holding 8 x 256 streams at window 0: B
// `iip_mesh_requests_in_flight{direction="inbound"} 256`, another pod's sidecar 504). Now each peer
// has a share of the pool (appPool.ts): while another peer's request waits, a socket held past the
// staller's share by an answer it has not read for a second is taken back.
//
// B tells its peers apart by their verified identity (mTLS), else by address: the sidecars here
// all dial from 127.0.0.1, so they carry identities (store, store2), as pods of two services would.
// Real peers: node:http apps, raw sockets as the stalling callers, node:http callers.
import * as net from "node:net"
import { afterEach, beforeAll, beforeEach, describe, expect, it } from "vitest"
import { makeCredentialHolder } from "../../src/identity/credentials.ts"
import { Cleanup, readUntil, waitFor } from "../support/iipRaw.ts"
import { metric } from "../support/eventStreamApp.ts"
import { call, sidecarConfig, startApp, startSidecar } from "../support/sidecarHarness.ts"
import { makeTestPki, type TestPki } from "../support/testPki.ts"

const POOL = 8
const ANSWER_CHUNKS = 512
const STORE = "spiffe://iip-mesh.local/svc/store"
const STORE2 = "spiffe://iip-mesh.local/svc/store2"
const CATALOG = "spiffe://iip-mesh.local/svc/catalog"

describe("one caller stalling its answers past B's app pool", () => {
  let cleanup: Cleanup
  let pki: TestPki
  beforeAll(async () => {
    pki = await makeTestPki("poolshare")
  })
  beforeEach(() => {
    cleanup = new Cleanup()
  })
  afterEach(() => cleanup.run())

  it(`another pod's call still gets through while ${POOL * 2} answers stall (B's pool: ${POOL}); the staller keeps its share`, async () => {
    let started = 0
    let ended = 0
    const app = await startApp(cleanup, (req, res) => {
      if (req.url === "/honest") return res.end("ok")
      started++
      res.on("close", () => ended++)
      res.writeHead(200)
      const chunk = Buffer.alloc(64 * 1024, 97)
      let sent = 0
      const pump = () => {
        while (sent < ANSWER_CHUNKS) {
          sent++
          if (!res.write(chunk)) return void res.once("drain", pump)
        }
        res.end()
      }
      pump()
    })
    const lines: Array<Record<string, unknown>> = []
    const credentials = async (id: string) => ({ credentials: makeCredentialHolder(await pki.credentials(id)) })
    const b = await startSidecar(cleanup, sidecarConfig({ service: "catalog", app: app.address, appPoolSize: POOL }), (event, fields) => {
      if (event === "app-pool-share-reclaimed") lines.push(fields)
    }, await credentials(CATALOG))
    const endpoints = { catalog: [{ address: b.inboundAddress, weight: 1, identity: CATALOG }] }
    const a = await startSidecar(cleanup, sidecarConfig({ service: "store", endpoints }), undefined, await credentials(STORE))
    const other = await startSidecar(cleanup, sidecarConfig({ service: "store2", endpoints, requestTimeoutMs: 10_000 }), undefined, await credentials(STORE2))
    for (let i = 0; i < POOL * 2; i++) {
      const socket = net.connect(a.outboundPort, "127.0.0.1")
      cleanup.add(() => socket.destroy())
      socket.on("error", () => {})
      socket.pause()
      socket.write(`GET /big${i} HTTP/1.1\r\nhost: catalog\r\n\r\n`)
    }
    // Alone, the staller may use the whole pool (before and after).
    await waitFor(() => started >= POOL, 5_000, "B's pool to be taken by the stalled answers")
    // The other half of the staller's requests wait for a socket (a gauge says so).
    expect((await readUntil(() => metric(b, /^iip_mesh_app_pool_waiting /), (waiting) => waiting === POOL, 5_000)).value).toBe(POOL)
    // Before: 504 at its 10 s deadline (the stalled answers hold their sockets for the answer idle
    // timeout, 60 s). Now about two looks (RECLAIM_STALL_MS each) once the answers stall; their
    // stalling takes a while on a loaded machine (8 answers of 32 MiB filling the buffers on
    // the way), and a 3 s deadline failed there 2 runs in 3.
    const answer = await call(other.outboundPort, { path: "/honest", timeoutMs: 15_000 })
    expect(answer.status).toBe(200)
    expect(answer.body.toString()).toBe("ok")
    // One socket taken back for the one waiting request, and said, naming the staller.
    expect(await metric(b, /^iip_mesh_app_pool_share_reclaimed_total /)).toBe(1)
    expect(lines).toMatchObject([{ peer: STORE, reclaimed: 1, held: POOL, share: POOL / 2 }])
    // The staller's next request took the freed socket back (nobody else waits): its share is never less than half.
    await waitFor(() => started >= POOL + 1, 5_000, "the staller's next request to take the socket")
    expect(ended).toBe(1)
  }, 30_000)
})
