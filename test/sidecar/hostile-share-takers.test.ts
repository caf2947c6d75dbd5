// Two ways an authenticated calling pod (a compromised or a broken one) kept B's places to its app
// from another pod, which the fixed half share and the paused-a-second rule let through
// (peerShare.ts), on both of B's legs to its app (the HTTP/1.1 pool, an h2c app's streams):
// - a steady slow reader: its app reads each big answer at ~1.5 MiB/s, so A grants B its half
//   windows (512 KiB) more often than once a second and B's answer never stays paused a second
//   (at ~800 KiB/s it does now and then: that one was taken back at main, one run in two);
//   its answers held every place for as long as they lasted (the answer idle timeout never fires);
// - two colluding peers each holding exactly half the places: both within a half share, so
//   nothing was taken back and a third peer's call waited out its deadline.
// Now the share is the places over the peers holding or waiting for one (a third each here), and
// an answer held past it that waits on its reader (paused) is stalled if its reader took less
// than READER_FLOOR (2 MiB) since the last look, a second before. And what must not change: a
// reader above that floor past its share is never cut, the other peer's call waits its turn; an
// honest pod reading at 1 MB/s past its share loses answers as a greedy one does, one per call waiting.
//
// B tells its peers apart by their verified identity (mTLS), as hostile-stalled-answers-pool.test.ts.
// Real peers: node:http and node:http2 apps, raw sockets as the greedy callers, node:http as the honest one.
import * as http2 from "node:http2"
import * as net from "node:net"
import { afterEach, beforeAll, beforeEach, describe, expect, it } from "vitest"
import { makeCredentialHolder } from "../../src/identity/credentials.ts"
import type { SidecarConfig } from "../../src/config/sidecarConfig.ts"
import { Cleanup, readUntil, waitFor } from "../support/iipRaw.ts"
import { metric } from "../support/eventStreamApp.ts"
import { OffCore } from "../support/offCore.ts"
import { listenH2App } from "../support/h2AppListen.ts"
import { call, LOOPBACK, sidecarConfig, startApp, startSidecar, type RunningSidecar } from "../support/sidecarHarness.ts"
import { makeTestPki, type TestPki } from "../support/testPki.ts"

const PLACES = 4
const CHUNK = Buffer.alloc(64 * 1024, 97)
const STORE = "spiffe://iip-mesh.local/svc/store"
const STORE2 = "spiffe://iip-mesh.local/svc/store2"
const STORE3 = "spiffe://iip-mesh.local/svc/store3"
const CATALOG = "spiffe://iip-mesh.local/svc/catalog"
/** A greedy reader's pace: this many bytes each TICK_MS. */
const TICK_MS = 50
/** The slow reader's pace: ~1.5 MiB/s, under READER_FLOOR by a grant or more in any second. */
const SLOW = 75 * 1024
/** An honest slow consumer's pace, bytes each TICK_MS: 1 MB/s. */
const HONEST_SLOW = 50_000

type Leg = "pool" | "h2c"
/** Big answers begun, closed (whole or cut), and sent whole (the app wrote every byte of one). */
interface Counts {
  started: number
  ended: number
  whole: number
}

/** The app behind B: `/honest` answers at once; any other path streams `chunks` of 64 KiB as fast as it is taken. */
const startBigApp = async (cleanup: Cleanup, leg: Leg, chunks: number, counts: Counts): Promise<Partial<SidecarConfig>> => {
  if (leg === "pool") {
    const app = await startApp(cleanup, (req, res) => {
      if (req.url === "/honest") return res.end("ok")
      counts.started++
      res.on("close", () => counts.ended++)
      res.writeHead(200)
      let sent = 0
      const pump = () => {
        while (sent < chunks) {
          sent++
          if (!res.write(CHUNK)) return void res.once("drain", pump)
        }
        res.end(() => counts.whole++)
      }
      pump()
    })
    return { app: app.address, appPoolSize: PLACES }
  }
  const server = http2.createServer()
  server.on("stream", (stream, headers) => {
    stream.on("error", () => {})
    if (headers[":path"] === "/honest") return stream.respond({ ":status": 200 }, { endStream: false }), void stream.end("ok")
    counts.started++
    stream.on("close", () => counts.ended++)
    stream.respond({ ":status": 200 })
    let sent = 0
    const pump = () => {
      while (sent < chunks && !stream.destroyed) {
        sent++
        if (!stream.write(CHUNK)) return void stream.once("drain", pump)
      }
      if (!stream.destroyed) stream.end(() => counts.whole++)
    }
    pump()
  })
  const { port } = await listenH2App(cleanup, server)
  return { app: `${LOOPBACK}:${port}`, appProtocol: "h2c", appH2MaxStreams: PLACES }
}

describe.each<Leg>(["pool", "h2c"])("greedy peers at B's places to its app (%s)", (leg) => {
  let cleanup: Cleanup
  let pki: TestPki
  beforeAll(async () => {
    pki = await makeTestPki(`sharetakers-${leg}`)
  })
  beforeEach(() => {
    cleanup = new Cleanup()
  })
  afterEach(() => cleanup.run())

  const credentials = async (id: string) => ({ credentials: makeCredentialHolder(await pki.credentials(id)) })
  const waitingGauge = leg === "pool" ? /^iip_mesh_app_pool_waiting / : /^iip_mesh_app_streams_waiting /

  /** B in front of the app, and the calling sidecars with these identities (the honest one, STORE2, with a deadline of `deadlineMs`). */
  const mesh = async (app: Partial<SidecarConfig>, callers: ReadonlyArray<string>, deadlineMs: number) => {
    const lines: Array<Record<string, unknown>> = []
    const b = await startSidecar(cleanup, sidecarConfig({ service: "catalog", ...app }), (event, fields) => {
      if (event === "app-pool-share-reclaimed") lines.push(fields)
    }, await credentials(CATALOG))
    const endpoints = { catalog: [{ address: b.inboundAddress, weight: 1, identity: CATALOG }] }
    const sidecars = new Map<string, RunningSidecar>()
    for (const id of [...callers, STORE2]) {
      const service = id.slice(id.lastIndexOf("/") + 1)
      sidecars.set(id, await startSidecar(cleanup, sidecarConfig({ service, endpoints, requestTimeoutMs: id === STORE2 ? deadlineMs : 60_000 }), undefined, await credentials(id)))
    }
    return { b, lines, sidecar: (id: string) => sidecars.get(id)! }
  }

  /** `count` big answers asked through `a` (paths from `from` on), each read `perTick` bytes a TICK_MS (0: never read). */
  const greedy = (a: RunningSidecar, from: number, count: number, perTick: number) => {
    for (let i = from; i < from + count; i++) {
      const socket = net.connect(a.outboundPort, LOOPBACK)
      socket.on("error", () => {})
      socket.pause()
      socket.write(`GET /big${i} HTTP/1.1\r\nhost: catalog\r\n\r\n`)
      if (perTick === 0) {
        cleanup.add(() => socket.destroy())
        continue
      }
      let budget = perTick
      socket.on("data", (data: Buffer) => {
        budget -= data.length
        if (budget <= 0) socket.pause()
      })
      const pace = setInterval(() => {
        budget = perTick
        socket.resume()
      }, TICK_MS)
      cleanup.add(() => (clearInterval(pace), socket.destroy()))
      socket.resume()
    }
  }

  it(`a steady slow reader (~1.5 MiB/s an answer) holding every place and as many waiting: another pod's call gets through; its answer taken back`, async () => {
    const counts = { started: 0, ended: 0, whole: 0 }
    const { b, lines, sidecar } = await mesh(await startBigApp(cleanup, leg, 2048, counts), [STORE], 8_000)
    // Alone, it may take every place; then as many more wait (an h2c session allows one stream until the app's SETTINGS come).
    greedy(sidecar(STORE), 0, PLACES, SLOW)
    await waitFor(() => counts.started >= PLACES, 5_000, "B's places to be taken by the slow reader's answers")
    greedy(sidecar(STORE), PLACES, PLACES, SLOW)
    expect((await readUntil(() => metric(b, waitingGauge), (waiting) => waiting === PLACES, 5_000)).value).toBe(PLACES)
    // Before: 504 at its 8 s deadline (the answers move, each a half window at a time, never
    // paused a second). Now within about three looks (a second each): one to note what each
    // reader took, the next to find one below the floor (a look may find it at two grants).
    const answer = await call(sidecar(STORE2).outboundPort, { path: "/honest", timeoutMs: 15_000 })
    expect(answer.status).toBe(200)
    expect(answer.body.toString()).toBe("ok")
    expect(await metric(b, /^iip_mesh_app_pool_share_reclaimed_total /)).toBeGreaterThanOrEqual(1)
    expect(lines[0]).toMatchObject({ peer: STORE, held: PLACES, share: PLACES / 2 })
  }, 30_000)

  it(`two peers each stalling half the places: a third pod's call gets through (a third each now), one of theirs taken back`, async () => {
    const counts = { started: 0, ended: 0, whole: 0 }
    const { b, lines, sidecar } = await mesh(await startBigApp(cleanup, leg, 512, counts), [STORE, STORE3], 8_000)
    greedy(sidecar(STORE), 0, PLACES / 2, 0)
    await waitFor(() => counts.started >= PLACES / 2, 5_000, "the first peer's answers to begin")
    greedy(sidecar(STORE3), 0, PLACES / 2, 0)
    await waitFor(() => counts.started >= PLACES, 5_000, "the second peer's answers to begin")
    // Before: 504 at its 8 s deadline (each held its half share exactly). Now the share is a third
    // (one of four places, at least one), and a place held past it by a stalled answer is taken back.
    const answer = await call(sidecar(STORE2).outboundPort, { path: "/honest", timeoutMs: 15_000 })
    expect(answer.status).toBe(200)
    expect(answer.body.toString()).toBe("ok")
    expect(await metric(b, /^iip_mesh_app_pool_share_reclaimed_total /)).toBe(1)
    expect(lines).toMatchObject([{ reclaimed: 1, held: PLACES / 2, share: 1 }])
    expect([STORE, STORE3]).toContain(lines[0]!.peer)
  }, 30_000)

  it(`an honest pod whose consumers read at 1 MB/s, holding every place: it loses one answer past its share for the one waiting call, its others run to their end`, async () => {
    // The harm the floor does to an honest caller past its share: the same as a greedy reader's
    // (they cannot be told apart), bounded to the calls waiting. At main (the paused-a-second rule
    // alone) one answer was cut too, 3 runs in 3, after 3-7 s: A's grants at this pace leave B's
    // answer paused over a second now and then.
    const counts = { started: 0, ended: 0, whole: 0 }
    // 16 MiB answers: each lasts ~16 s at that pace, longer than the loopback's buffers hide.
    const { b, lines, sidecar } = await mesh(await startBigApp(cleanup, leg, 256, counts), [STORE], 15_000)
    greedy(sidecar(STORE), 0, PLACES, HONEST_SLOW)
    await waitFor(() => counts.started >= PLACES, 5_000, "B's places to be taken by the pod's answers")
    const asked = performance.now()
    const answer = await call(sidecar(STORE2).outboundPort, { path: "/honest", timeoutMs: 20_000 })
    expect(answer.status).toBe(200)
    // Within about three looks: one notes what each took, the next finds it under the floor.
    expect(performance.now() - asked).toBeLessThan(6_000)
    await waitFor(() => counts.ended >= PLACES, 30_000, "the pod's answers to end")
    expect(await metric(b, /^iip_mesh_app_pool_share_reclaimed_total /)).toBe(1)
    expect(lines).toMatchObject([{ peer: STORE, reclaimed: 1, held: PLACES }])
    expect(counts.whole).toBe(PLACES - 1)
  }, 60_000)

  it(`a reader above the floor (~5 MiB/s an answer) past its share is never cut: the other pod's call waits for an answer to end`, async () => {
    const counts = { started: 0, ended: 0, whole: 0 }
    // 16 MiB answers: each over in about 3 s at that pace, so the looks (a second apart, from the
    // other pod's call on) note and then measure them while they hold every place.
    const { b, sidecar } = await mesh(await startBigApp(cleanup, leg, 256, counts), [STORE], 15_000)
    // B measures a reader by what A, in this process, takes of its answer: while this process waits
    // for a core most of the time, A takes under the floor whatever the reader's pace, and B rightly
    // takes an answer back (at load 17-19, 3 runs in 12: off its core 85 % of the time in the one
    // measured; runs at 70-82 % passed). Such a run cannot show the rule spares a fast reader: a
    // place taken back is then allowed, and said (the check holds on a machine that runs it).
    const off = new OffCore()
    cleanup.add(() => off.stop())
    const started = performance.now()
    const noneTakenBack = async (when: string) => {
      const count = await metric(b, /^iip_mesh_app_pool_share_reclaimed_total /)
      const offPercent = Math.round((100 * off.between(started, performance.now())) / (performance.now() - started))
      if (count > 0) console.log(`a reader above the floor: ${count} taken back ${when}, this process off its core ${offPercent} % of the time`)
      expect(count === 0 || offPercent > 75, `${count} taken back ${when}, this process off its core ${offPercent} % of the time`).toBe(true)
    }
    // Two waiting besides the honest call: room for all in the h2c leg's line (as long as the places), none displaced.
    greedy(sidecar(STORE), 0, PLACES, 256 * 1024)
    await waitFor(() => counts.started >= PLACES, 5_000, "B's places to be taken by the reader's answers")
    greedy(sidecar(STORE), PLACES, 2, 256 * 1024)
    const answer = await call(sidecar(STORE2).outboundPort, { path: "/honest", timeoutMs: 20_000 })
    expect(answer.status).toBe(200)
    await noneTakenBack("by the honest call's answer")
    // Every one of its answers runs to its end.
    await waitFor(() => counts.ended >= PLACES + 2, 20_000, "the reader's answers to end")
    await noneTakenBack("by the answers' end")
  }, 40_000)
})
