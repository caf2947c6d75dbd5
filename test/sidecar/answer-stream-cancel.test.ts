// A's pool of streamed answers (--outbound-max-held-answer-bytes, streams.ts GrantingPool) after its
// callers go mid-answer: HTTP/1.1 callers that read part and close, paused ones closed later, h2c
// streams reset part-way, callers with a short deadline (iip-timeout) left paused past it, and A's
// connection to B lost under held answers. The gauges of the bytes held and of the windows
// (held, and what B may still send) must come back to 0: the pool must not stay spent.
import * as http from "node:http"
import * as http2 from "node:http2"
import * as net from "node:net"
import { afterEach, beforeEach, describe, expect, it } from "vitest"
import { unlabelledValue } from "../support/adminMetrics.ts"
import { Cleanup } from "../support/iipRaw.ts"
import { paceAnswer } from "../support/paceAnswer.ts"
import { LOOPBACK, sidecarConfig, startAdmin, startApp, startSidecar } from "../support/sidecarHarness.ts"

const MiB = 1024 * 1024
const ANSWER = 8 * MiB
const chunk = Buffer.alloc(64 * 1024, 0x61)

/** A's bytes held for the answers' callers, or (`window`) those and what their senders may still send. */
const held = (admin: string, gauge = "iip_mesh_outbound_answer_held_bytes"): Promise<number> => unlabelledValue(admin, gauge)

/** The app's answer: ANSWER bytes, written as its socket takes them. */
const writeAnswer = (res: http.ServerResponse): void => paceAnswer(res, ANSWER, chunk)

const WINDOW = "iip_mesh_outbound_answer_window_bytes"

const waitHeld = async (admin: string, ok: (bytes: number) => boolean, what: string, gauge?: string): Promise<number> => {
  let last = Number.NaN
  const deadline = performance.now() + 20_000
  for (;;) {
    last = await held(admin, gauge)
    if (ok(last)) return last
    if (performance.now() > deadline) throw new Error(`timed out waiting for ${what}: held ${last}`)
    await new Promise((resolve) => setTimeout(resolve, 50))
  }
}

/**
 * A raw HTTP/1.1 call at A that reads `readFirst` bytes of its answer, then pauses; resolves once it
 * has, or once its connection closed first (a short deadline may cut the answer before), or once its
 * answer is not the 200 (a short deadline passed before the answer's head: a whole 504 on a kept
 * connection, which never reaches `readFirst` nor closes: the test waited for it to its timeout).
 */
const caller = (port: number, cleanup: Cleanup, readFirst: number, headers = ""): Promise<net.Socket> =>
  new Promise((resolve) => {
    const socket = net.connect(port, LOOPBACK)
    socket.on("error", () => {})
    socket.on("close", () => resolve(socket))
    cleanup.add(() => socket.destroy())
    let read = 0
    const onData = (data: Buffer) => {
      const answered = read === 0 && !data.subarray(0, 12).toString("latin1").startsWith("HTTP/1.1 200")
      read += data.length
      if (read < readFirst && !answered) return
      socket.off("data", onData)
      socket.pause()
      resolve(socket)
    }
    if (readFirst === 0) {
      socket.pause()
      resolve(socket)
    } else socket.on("data", onData)
    socket.write(`GET /big HTTP/1.1\r\nhost: feed\r\n${headers}\r\n`)
  })

describe("A's streamed answers' pool when their callers go mid-answer", () => {
  let cleanup: Cleanup
  beforeEach(() => {
    cleanup = new Cleanup()
  })
  afterEach(() => cleanup.run())

  it("callers closed, paused past a short deadline, reset part-way and B's connection lost: the held bytes go back to 0", { timeout: 60_000 }, async () => {
    const app = { open: new Set<http.ServerResponse>(), started: 0 }
    const server = await startApp(cleanup, (_req, res) => {
      app.started++
      app.open.add(res)
      res.on("close", () => app.open.delete(res))
      writeAnswer(res)
    })
    cleanup.add(() => app.open.forEach((res) => res.destroy()))
    const b = await startSidecar(cleanup, sidecarConfig({ service: "feed", app: server.address, requestTimeoutMs: 30_000 }))
    // A budget of 2 MiB: a few widened answers spend it.
    const a = await startSidecar(cleanup, sidecarConfig({ service: "shop", endpoints: { feed: [{ address: b.inboundAddress, weight: 1 }] }, requestTimeoutMs: 30_000, outboundMaxHeldAnswerBytes: 2 * MiB }))
    const admin = await startAdmin(cleanup, a)
    const port = a.outboundPort

    for (let round = 0; round < 2; round++) {
      // Readers that took part and stopped (widened, then held), and callers that never read.
      const partial = await Promise.all(Array.from({ length: 6 }, () => caller(port, cleanup, 300 * 1024)))
      const paused = await Promise.all(Array.from({ length: 6 }, () => caller(port, cleanup, 0)))
      // Paused past their deadline: the mesh call ends under them.
      const timed = await Promise.all(Array.from({ length: 3 }, () => caller(port, cleanup, 100 * 1024, "iip-timeout: 400\r\n")))
      const session = http2.connect(`http://${LOOPBACK}:${port}`)
      session.on("error", () => {})
      cleanup.add(() => session.destroy())
      const streams = Array.from({ length: 4 }, () => {
        const stream = session.request({ ":path": "/big", ":authority": "feed" })
        stream.on("error", () => {})
        let read = 0
        return new Promise<http2.ClientHttp2Stream>((resolve) => {
          stream.on("data", (data: Buffer) => {
            read += data.length
            if (read >= 200 * 1024) {
              stream.pause()
              resolve(stream)
            }
          })
        })
      })
      const h2 = await Promise.all(streams)
      await waitHeld(admin, (bytes) => bytes > 0, "answers held")
      // Gone, in every way a caller goes.
      for (const s of partial) s.destroy()
      for (const s of h2) s.close(http2.constants.NGHTTP2_CANCEL)
      if (round === 1) {
        // B goes away under the held ones: A's connection to it is lost.
        await b.stop()
      }
      for (const s of paused) s.destroy()
      session.destroy()
      // The callers with a short deadline are left paused: their failed answers free what they held
      // (answer-deadline-paused.test.ts), within the waits below, far under A's answer idle timeout.
      cleanup.add(() => timed.forEach((s) => s.destroy()))
      await waitHeld(admin, (bytes) => bytes === 0, "the held bytes back to 0")
      // And their windows: nothing left committed (the pool not left spent).
      await waitHeld(admin, (bytes) => bytes === 0, "the windows back to 0", WINDOW)
    }
    expect(await held(admin)).toBe(0)
  })

  it("after callers went mid-answer the pool is not left spent: their windows go back to 0", { timeout: 60_000 }, async () => {
    const server = await startApp(cleanup, (_req, res) => {
      writeAnswer(res)
    })
    const b = await startSidecar(cleanup, sidecarConfig({ service: "feed", app: server.address, requestTimeoutMs: 30_000 }))
    const a = await startSidecar(cleanup, sidecarConfig({ service: "shop", endpoints: { feed: [{ address: b.inboundAddress, weight: 1 }] }, requestTimeoutMs: 30_000, outboundMaxHeldAnswerBytes: 3 * MiB }))
    const admin = await startAdmin(cleanup, a)
    for (let round = 0; round < 3; round++) {
      const gone = await Promise.all(Array.from({ length: 8 }, () => caller(a.outboundPort, cleanup, 300 * 1024)))
      await waitHeld(admin, (bytes) => bytes > 0, "answers held")
      for (const s of gone) s.destroy()
      await waitHeld(admin, (bytes) => bytes === 0, "the held bytes back to 0")
    }
    // Their windows went with them (a pool left spent would grant later answers a chunk at a time).
    expect(await waitHeld(admin, (bytes) => bytes === 0, "the windows back to 0", WINDOW)).toBe(0)
    // A caller that reads then stops holds its window here, counted, until it goes.
    const last = await caller(a.outboundPort, cleanup, 3 * MiB)
    expect(await waitHeld(admin, (bytes) => bytes >= 64 * 1024, "the last answer's window", WINDOW)).toBeGreaterThanOrEqual(64 * 1024)
    last.destroy()
    expect(await waitHeld(admin, (bytes) => bytes === 0, "the windows back to 0", WINDOW)).toBe(0)
  })
})
