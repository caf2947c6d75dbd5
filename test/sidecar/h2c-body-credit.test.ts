// A's budget across all of its outbound h2c connections for the stream windows granted to request
// bodies (src/sidecar/h2BodyCredit.ts). Before it, one caller's connection could park ~12 MiB of
// request bodies at A that nothing read (1 MiB stream windows, 8 MiB connection window, 4 MiB held
// before it stops coming back), and no bound spanned connections. Now a body starts with a 64 KiB
// window that grows only as the mesh takes it, and past --outbound-h2-max-held-body-bytes a new
// request with a body is refused REFUSED_STREAM before anything of it goes on; an admitted body is
// never reset to make room. Real peers: node:http2 callers, node:http apps, three sidecars.
import * as http from "node:http"
import * as http2 from "node:http2"
import { afterEach, beforeEach, describe, expect, it } from "vitest"
import { metric } from "../support/eventStreamApp.ts"
import { Cleanup, waitFor } from "../support/iipRaw.ts"
import { LOOPBACK, type RunningSidecar, sidecarConfig, startApp, startSidecar } from "../support/sidecarHarness.ts"

const MiB = 1024 * 1024
const BUDGET = 4 * MiB
const CONNECTIONS = 20
const UPLOADS = 8
const REFUSED_STREAM = 0x7

/** The app: /upload reads its body and answers its length; anything else is never read, answered only at `release`. */
const startBodyApp = async (cleanup: Cleanup) => {
  const parked: Array<http.ServerResponse> = []
  const app = await startApp(cleanup, (req, res) => {
    if (req.url !== "/upload") return void parked.push(res)
    let bytes = 0
    req.on("data", (chunk: Buffer) => (bytes += chunk.length))
    req.on("end", () => res.end(String(bytes)))
  })
  return { app, parked, release: (count = Infinity) => parked.splice(0, count).forEach((res) => res.end("late")) }
}

interface Told {
  status: number
  reset: number
  times: number
  body: string
}

/** One upload of `body` on `session`: what its caller was told (a status, or the reset code without one), and how many times. */
const upload = (session: http2.ClientHttp2Session, path: string, body: Buffer, authority: string) => {
  const told: Told = { status: 0, reset: -1, times: 0, body: "" }
  const stream = session.request({ ":method": "POST", ":path": path, ":authority": authority, "content-type": "application/octet-stream" })
  stream.on("response", (headers) => {
    told.status = Number(headers[":status"])
    told.times++
  })
  stream.setEncoding("utf8")
  stream.on("data", (chunk: string) => (told.body += chunk))
  stream.on("error", () => {})
  const closed = new Promise<Told>((resolve) =>
    stream.on("close", () => {
      if (told.status === 0) {
        told.reset = stream.rstCode ?? -1
        told.times++
      }
      resolve(told)
    })
  )
  stream.end(body)
  return { told, closed }
}

/** A's window gauge and refusal counter, read every few ms; `max`: the highest gauge seen. */
const watchA = (cleanup: Cleanup, a: RunningSidecar) => {
  const seen = { granted: 0, max: 0, refused: 0 }
  let reading = false
  const timer = setInterval(() => {
    if (reading) return
    reading = true
    void Promise.all([metric(a, /^iip_mesh_outbound_h2_body_window_bytes /), metric(a, /^iip_mesh_outbound_h2_bodies_refused_total /)]).then(([granted, refused]) => {
      seen.granted = granted
      seen.max = Math.max(seen.max, granted)
      seen.refused = refused
      reading = false
    })
  }, 5)
  cleanup.add(() => clearInterval(timer))
  return seen
}

describe("A's budget for the windows of its h2c callers' request bodies", () => {
  let cleanup: Cleanup
  beforeEach(() => {
    cleanup = new Cleanup()
  })
  afterEach(() => cleanup.run())

  const start = async () => {
    const stalled = await startBodyApp(cleanup)
    const b = await startSidecar(cleanup, sidecarConfig({ service: "store", app: stalled.app.address }))
    // The honest uploads' app is another (the attack fills the places of B's app, whose requests wait there unread).
    const files = await startBodyApp(cleanup)
    const c = await startSidecar(cleanup, sidecarConfig({ service: "files", app: files.app.address }))
    const endpoints = { store: [{ address: b.inboundAddress, weight: 1 }], files: [{ address: c.inboundAddress, weight: 1 }] }
    const a = await startSidecar(cleanup, sidecarConfig({ service: "shop", endpoints, outboundH2MaxHeldBodyBytes: BUDGET }))
    const connect = () => {
      const session = http2.connect(`http://${LOOPBACK}:${a.outboundPort}`)
      session.on("error", () => {})
      cleanup.add(() => session.destroy())
      return session
    }
    return { stalled, a, connect, seen: watchA(cleanup, a) }
  }

  /** Every attack stream ends (the app answers what it parked, reading none of it, as it comes): what each was told. */
  const settle = (attack: ReadonlyArray<{ closed: Promise<Told> }>, release: () => void) =>
    new Promise<Array<Told>>((resolve) => {
      const more = setInterval(release, 20)
      cleanup.add(() => clearInterval(more))
      void Promise.all(attack.map((one) => one.closed)).then((all) => {
        clearInterval(more)
        resolve(all)
      })
    })

  it(`${CONNECTIONS} connections x ${UPLOADS} uploads of 1 MiB that the app never reads: the windows granted stay within the budget, the rest refused REFUSED_STREAM before anything went on, each caller told once, the gauge back to 0`, { timeout: 60_000 }, async () => {
    const { stalled, connect, seen } = await start()
    const body = Buffer.alloc(MiB, 0x61)
    const attack = Array.from({ length: CONNECTIONS }, () => {
      const session = connect()
      return Array.from({ length: UPLOADS }, () => upload(session, "/stall", body, "store"))
    }).flat()
    await waitFor(() => seen.refused > 0, 20_000, "bodies refused at A")
    // Room for 64 requests' first windows: the app saw no more than that of the attack.
    await waitFor(() => stalled.parked.length + seen.refused >= CONNECTIONS * UPLOADS, 20_000, "every attack stream admitted or refused")
    expect(stalled.parked.length).toBeLessThanOrEqual(BUDGET / (64 * 1024))
    const outcomes = await settle(attack, () => stalled.release())
    for (const one of outcomes) expect(one.times).toBe(1)
    const refused = outcomes.filter((one) => one.status === 0)
    for (const one of refused) expect(one.reset).toBe(REFUSED_STREAM)
    expect(refused.length).toBe(seen.refused)
    await waitFor(() => seen.granted === 0, 10_000, "A's body windows back to 0")
    expect(seen.max).toBeLessThanOrEqual(BUDGET)
  })

  it("an honest 16 MiB upload to an app that reads, started while the attack fills the budget: refused REFUSED_STREAM at worst, sent again once room frees it arrives whole; one admitted before the attack arrives whole beside it, never reset", { timeout: 60_000 }, async () => {
    const { stalled, connect, seen } = await start()
    const honestBody = Buffer.alloc(16 * MiB, 0x62)
    const first = upload(connect(), "/upload", honestBody, "files")
    const body = Buffer.alloc(MiB, 0x61)
    const attack = Array.from({ length: CONNECTIONS }, () => {
      const session = connect()
      return Array.from({ length: UPLOADS }, () => upload(session, "/stall", body, "store"))
    }).flat()
    await waitFor(() => seen.refused > 0, 20_000, "bodies refused at A")
    // Admitted before the budget filled: it keeps its window to its end.
    expect(await first.closed).toStrictEqual({ status: 200, reset: -1, times: 1, body: String(16 * MiB) })
    const session = connect()
    const refusals: Array<number> = []
    for (;;) {
      const told = await upload(session, "/upload", honestBody, "files").closed
      if (told.status !== 0) {
        expect(told).toStrictEqual({ status: 200, reset: -1, times: 1, body: String(16 * MiB) })
        break
      }
      refusals.push(told.reset)
      // The attacker gives up some of its uploads (the app answers them unread): room frees.
      stalled.release(8)
      expect(refusals.length).toBeLessThan(CONNECTIONS * UPLOADS)
    }
    for (const code of refusals) expect(code).toBe(REFUSED_STREAM)
    await settle(attack, () => stalled.release())
    await waitFor(() => seen.granted === 0, 10_000, "A's body windows back to 0")
    expect(seen.max).toBeLessThanOrEqual(BUDGET)
  })
})
