// A's budget across all of its outbound h2c connections for the stream windows granted to request
// bodies (src/sidecar/h2BodyCredit.ts). Before it, one caller's connection could park ~12 MiB of
// request bodies at A that nothing read (1 MiB stream windows, 8 MiB connection window, 4 MiB held
// before it stops coming back), and no bound spanned connections. Now a body starts with a 64 KiB
// window that grows only as the mesh takes it, and past --outbound-h2-max-held-body-bytes a new
// request with a body is refused REFUSED_STREAM before anything of it goes on; an admitted body is
// never reset to make room. Real peers: node:http2 and @grpc/grpc-js callers, node:http and
// grpc-js apps, three sidecars.
import * as grpc from "@grpc/grpc-js"
import * as http2 from "node:http2"
import { afterEach, beforeEach, describe, expect, it } from "vitest"
import { metric } from "../support/eventStreamApp.ts"
import { identity, rawMethod } from "../support/grpcRaw.ts"
import { startBodyApp } from "../support/bodyApp.ts"
import { Cleanup, waitFor } from "../support/iipRaw.ts"
import type { SidecarConfig } from "../../src/config/sidecarConfig.ts"
import { LOOPBACK, type RunningSidecar, sidecarConfig, startSidecar } from "../support/sidecarHarness.ts"

const MiB = 1024 * 1024
const BUDGET = 4 * MiB
const CONNECTIONS = 20
const UPLOADS = 8
const REFUSED_STREAM = 0x7

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
  /** Its END_STREAM went (the whole body is at A), the stream still open (A has not answered). */
  const sentWhole = () => !stream.closed && stream.state.localClose === 1
  return { told, closed, sentWhole }
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

  const start = async (files: Partial<SidecarConfig> = {}) => {
    const stalled = await startBodyApp(cleanup)
    const b = await startSidecar(cleanup, sidecarConfig({ service: "store", app: stalled.app.address }))
    // The honest uploads' app is another (the attack fills the places of B's app, whose requests wait there unread).
    const c = await startSidecar(cleanup, sidecarConfig({ service: "files", app: (await startBodyApp(cleanup)).app.address, ...files }))
    const endpoints = { store: [{ address: b.inboundAddress, weight: 1 }], files: [{ address: c.inboundAddress, weight: 1 }] }
    const a = await startSidecar(cleanup, sidecarConfig({ service: "shop", endpoints, outboundH2MaxHeldBodyBytes: BUDGET, requestTimeoutMs: 30_000 }))
    const connect = (options: http2.ClientSessionOptions = {}) => {
      const session = http2.connect(`http://${LOOPBACK}:${a.outboundPort}`, options)
      session.on("error", () => {})
      cleanup.add(() => session.destroy())
      return session
    }
    return { stalled, a, connect, seen: watchA(cleanup, a) }
  }

  /** The attack: CONNECTIONS x UPLOADS uploads of 1 MiB to B's app, which reads none of them. */
  const flood = (connect: () => http2.ClientHttp2Session) => {
    const body = Buffer.alloc(MiB, 0x61)
    return Array.from({ length: CONNECTIONS }, () => {
      const session = connect()
      return Array.from({ length: UPLOADS }, () => upload(session, "/stall", body, "store"))
    }).flat()
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

  it(`${CONNECTIONS} connections x ${UPLOADS} uploads of 1 MiB that the app never reads: the windows granted stay within the budget, the rest refused REFUSED_STREAM before anything went on, each caller told once, the gauge back to 0`, { timeout: 120_000 }, async () => {
    const { stalled, connect, seen } = await start()
    const attack = flood(connect)
    await waitFor(() => seen.refused > 0, 20_000, "bodies refused at A")
    await waitFor(() => stalled.parked.length + seen.refused >= CONNECTIONS * UPLOADS, 20_000, "every attack stream admitted or refused")
    // Room for 64 requests' first windows (64 KiB) at a time, each held until its stream closes or
    // the mesh took its whole body (its END_STREAM came: the window goes back). B takes a body whole
    // although its app reads none: it goes into the kernel's buffers of B's connection to the app
    // (at this point, 8 runs: 6-52 bodies sent whole of the 48-56 that reached the app; in 4 of them
    // ss saw B's send queues to the app hold 24-43 MB, the app's receive queues 6.0-6.6 MB). So the
    // requests that reach the app are bounded by 64 plus the bodies sent whole (CI saw 68), not by 64.
    const sentWhole = attack.filter((one) => one.sentWhole()).length
    expect(stalled.parked.length).toBeLessThanOrEqual(BUDGET / (64 * 1024) + sentWhole)
    expect(stalled.parked.length).toBeLessThan(CONNECTIONS * UPLOADS)
    const outcomes = await settle(attack, () => stalled.release())
    for (const one of outcomes) expect(one.times).toBe(1)
    const refused = outcomes.filter((one) => one.status === 0)
    for (const one of refused) expect(one.reset).toBe(REFUSED_STREAM)
    expect(refused.length).toBe(seen.refused)
    await waitFor(() => seen.granted === 0, 10_000, "A's body windows back to 0")
    expect(seen.max).toBeLessThanOrEqual(BUDGET)
  })

  it("an honest 16 MiB upload to an app that reads, started while the attack fills the budget: refused REFUSED_STREAM at worst, sent again once room frees it arrives whole; one admitted before the attack arrives whole beside it, never reset", { timeout: 120_000 }, async () => {
    const { stalled, connect, seen } = await start()
    const honestBody = Buffer.alloc(16 * MiB, 0x62)
    // The honest callers' node:http2 sessions may hold their whole 16 MiB unsent (node counts it in
    // maxSessionMemory, 10 MB by default, past which it resets the stream ENHANCE_YOUR_CALM itself:
    // seen under load, A sending nothing of the kind).
    const first = upload(connect({ maxSessionMemory: 64 }), "/upload", honestBody, "files")
    const attack = flood(connect)
    await waitFor(() => seen.refused > 0, 20_000, "bodies refused at A")
    // Admitted before the budget filled: it keeps its window to its end.
    expect(await first.closed).toStrictEqual({ status: 200, reset: -1, times: 1, body: String(16 * MiB) })
    const session = connect({ maxSessionMemory: 64 })
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

  it("a grpc-js client stream of 4 MiB while the attack fills the budget: answered, or UNAVAILABLE `Stream refused by server` (grpc-js sent it again once itself), never cut mid-way; sent again once room frees, it arrives whole", { timeout: 120_000 }, async () => {
    const sum = rawMethod("demo.Files", "Sum", true, false)
    const server = new grpc.Server()
    server.addService({ sum }, {
      sum: (call: grpc.ServerReadableStream<Buffer, Buffer>, callback: grpc.sendUnaryData<Buffer>) => {
        let bytes = 0
        call.on("data", (message: Buffer) => (bytes += message.length))
        call.on("end", () => callback(null, Buffer.from(String(bytes))))
      }
    })
    const port = await new Promise<number>((resolve, reject) =>
      server.bindAsync(`${LOOPBACK}:0`, grpc.ServerCredentials.createInsecure(), (error, bound) => (error === null ? resolve(bound) : reject(error)))
    )
    cleanup.add(() => server.forceShutdown())
    const { stalled, a, connect, seen } = await start({ app: `${LOOPBACK}:${port}`, appProtocol: "h2c" })
    const client = new (grpc.makeGenericClientConstructor({ sum }, "Files"))(`${LOOPBACK}:${a.outboundPort}`, grpc.credentials.createInsecure(), { "grpc.default_authority": "files" })
    cleanup.add(() => client.close())
    const call = (): Promise<string> =>
      new Promise((resolve) => {
        const stream = client.makeClientStreamRequest(sum.path, identity, identity, new grpc.Metadata(), { deadline: Date.now() + 20_000 }, (error, answer) =>
          resolve(error === null ? answer!.toString() : `${error.code} ${error.details}`)
        )
        const chunk = Buffer.alloc(64 * 1024, 0x63)
        let sent = 0
        const more = () => {
          while (sent < 4 * MiB) {
            sent += chunk.length
            if (!stream.write(chunk)) return void stream.once("drain", more)
          }
          stream.end()
        }
        more()
      })
    const attack = flood(connect)
    await waitFor(() => seen.refused > 0, 20_000, "bodies refused at A")
    const refusedBefore = seen.refused
    const during = await call()
    expect([String(4 * MiB), `${grpc.status.UNAVAILABLE} Stream refused by server`]).toContain(during)
    // Refused: A saw it at least once (grpc-js may have sent it again once).
    if (during !== String(4 * MiB)) await waitFor(() => seen.refused > refusedBefore, 5_000, "the refusal counted")
    await settle(attack, () => stalled.release())
    expect(await call()).toBe(String(4 * MiB))
    await waitFor(() => seen.granted === 0, 10_000, "A's body windows back to 0")
    expect(seen.max).toBeLessThanOrEqual(BUDGET)
  })
})
