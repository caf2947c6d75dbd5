// How an h2c app's answer ends, at sidecar B (src/sidecar/appH2Exchange.ts), through a real pair:
// an answer is complete only with its END_STREAM (RFC 9113 §8.1: a RST_STREAM(NO_ERROR) is allowed
// after a complete answer, to stop the request body, and ends nothing before it; after it, a reset
// of any code leaves the answer whole, also one B paused for a slow caller), and its trailers go
// on only within what the mesh carries (the sidecars' metadata bound: with the head, in an answer
// held whole). Past either, the caller gets app_failed naming the app hop (a gRPC caller INTERNAL,
// with `x-iip-mesh-error`), and B counts it; before, both went on as if the answer were complete,
// or as the inbound hop's handler_failed (UNAVAILABLE to a gRPC caller, which invites a retry of a
// processed call).
// Not repeated: a reset after fewer bytes than content-length declared, a connection dropped
// mid-answer (hostile-app.test.ts), gRPC statuses and small trailers passed on (grpc.test.ts).
import * as grpc from "@grpc/grpc-js"
import { subscribe, unsubscribe } from "node:diagnostics_channel"
import * as http2 from "node:http2"
import type * as net from "node:net"
import { afterEach, beforeEach, describe, expect, it } from "vitest"
import { APP_STREAM_WINDOW } from "../../src/sidecar/appH2Session.ts"
import { HttpMeta } from "../../src/sidecar/httpEnvelope.ts"
import { identity, startSizedGrpcApp } from "../support/grpcRaw.ts"
import { Cleanup, waitFor, withTimeout } from "../support/iipRaw.ts"
import { startClient } from "../support/meshTest.ts"
import { FrameFlag, FrameType, h2Frame, INITIAL_WINDOW, rstStream, STATUS_200, startRawH2App } from "../support/h2Raw.ts"
import { call, LOOPBACK, type RunningSidecar, sidecarConfig, startSidecar } from "../support/sidecarHarness.ts"

const PATH = "/demo.Inventory/Watch"
/** The mesh stream's window and B's queue of a streamed answer (appH2Exchange.ts's ANSWER_HIGH_WATER). */
const MESH_WINDOW = 1 << 20
const ANSWER_QUEUE = 64 * 1024


/** The sum of the metric lines `pattern` matches (one per status code, say). */
const metric = async (sidecar: RunningSidecar, pattern: RegExp): Promise<number> => {
  const { body } = await sidecar.sidecar.telemetry.metrics.text()
  return body
    .split("\n")
    .filter((line) => pattern.test(line))
    .reduce((sum, line) => sum + Number(line.slice(line.lastIndexOf(" ") + 1)), 0)
}

/** B in front of the app (h2c), A in front of B: the caller's sidecar. */
const startPair = async (cleanup: Cleanup, appPort: number) => {
  const b = await startSidecar(cleanup, sidecarConfig({ service: "inventory", app: `${LOOPBACK}:${appPort}`, appProtocol: "h2c", tracing: false }))
  const a = await startSidecar(cleanup, sidecarConfig({ service: "store", tracing: false, endpoints: { inventory: [{ address: b.inboundAddress, weight: 1 }] } }))
  return { a, b }
}

/** Whether node:http2's server had sent each stream's END_STREAM as it closed it (node's own channel), in order. */
const endStreamsSent = (cleanup: Cleanup): Array<boolean> => {
  const sent: Array<boolean> = []
  const closed = (message: unknown) => {
    const { stream } = message as { readonly stream: http2.ServerHttp2Stream }
    sent.push(stream.state.localClose === 1)
  }
  subscribe("http2.server.stream.close", closed)
  cleanup.add(() => unsubscribe("http2.server.stream.close", closed))
  return sent
}

/** `app` listening on loopback (closed at cleanup): its port. */
const listening = async (cleanup: Cleanup, app: http2.Http2Server): Promise<number> => {
  await new Promise<void>((resolve) => app.listen(0, LOOPBACK, resolve))
  cleanup.add(() => new Promise<void>((resolve) => app.close(() => resolve())))
  return (app.address() as net.AddressInfo).port
}

describe("the end of an h2c app's answer at sidecar B", () => {
  let cleanup: Cleanup
  beforeEach(() => {
    cleanup = new Cleanup()
  })
  afterEach(() => cleanup.run())

  it("a reset with NO_ERROR before END_STREAM (no content-length) is app_failed; the same reset after END_STREAM leaves the answer whole", async () => {
    // Raw frames: node:http2 ends a stream it closes with NO_ERROR (END_STREAM first) before the reset.
    const app = await startRawH2App(cleanup, (socket, stream) => {
      const cut = stream % 4 === 1 // B's streams 1, 5, 9...: the calls alternate below
      socket.write(
        Buffer.concat([
          h2Frame(FrameType.headers, FrameFlag.endHeaders, stream, STATUS_200),
          h2Frame(FrameType.data, cut ? 0 : FrameFlag.endStream, stream, Buffer.from(cut ? "partial" : "whole")),
          rstStream(stream)
        ])
      )
    })
    const { a, b } = await startPair(cleanup, app.port)
    for (let i = 0; i < 2; i++) {
      const broken = await call(a.outboundPort, { path: "/cut", headers: { host: "inventory" }, timeoutMs: 5000 })
      expect(`${broken.status} ${broken.headers["x-iip-mesh-error"]}`).toBe("502 app; reason=app_failed")
      expect(broken.body.toString()).toContain("reset its stream (NO_ERROR) after 7 bytes of its answer, before its end")
      const whole = await call(a.outboundPort, { path: "/whole", headers: { host: "inventory" }, timeoutMs: 5000 })
      expect(`${whole.status} ${whole.body.toString()}`).toBe("200 whole")
    }
    // B counts both as the app's answers broken off, as the HTTP/1.1 leg does.
    expect(await metric(b, /^iip_mesh_request_errors_total\{direction="inbound",service="inventory",code="502",hop="app",reason="answer_broke_off"\}/)).toBe(2)
  })

  /**
   * An answer B has paused, then ended by the raw app's `end` frames. Its caller, a mesh client,
   * reads nothing at first: the mesh stream's window (1 MiB) and B's queue (64 KiB) fill, B pauses
   * the app's stream, and the app's window at B then runs out, all bounds of the design (no kernel
   * buffer in it: the mesh sends no more than its window). `open`: the request's body is still
   * coming (the stream is not half-closed, so a reset after END_STREAM is what closes it). What the
   * caller then reads, and what the app had sent when its window at B ran out: past the mesh's
   * window and B's queue, bytes B held unread as the answer ended. (On node:http2, B's stream was
   * seen through node's client channel, its readable buffer; B's own HTTP/2 has no such buffer.)
   * The app's stream window is what B's SETTINGS announce (APP_STREAM_WINDOW).
   */
  const pausedAnswerEnds = async (end: (stream: number) => Buffer, open = false) => {
    // The app sends as much as B's windows allow, in 16 KiB DATA frames, until the test ends it.
    let sent = 0
    let connectionWindow = INITIAL_WINDOW
    let streamWindow = APP_STREAM_WINDOW
    let answering: { readonly socket: net.Socket; readonly stream: number } | undefined
    const send = () => {
      while (answering !== undefined && Math.min(connectionWindow, streamWindow) > 0) {
        const bytes = Math.min(16_384, connectionWindow, streamWindow)
        answering.socket.write(h2Frame(FrameType.data, 0, answering.stream, Buffer.alloc(bytes, 0x61)))
        sent += bytes
        connectionWindow -= bytes
        streamWindow -= bytes
      }
    }
    const app = await startRawH2App(
      cleanup,
      (socket, stream) => {
        socket.write(h2Frame(FrameType.headers, FrameFlag.endHeaders, stream, STATUS_200))
        answering = { socket, stream }
        send()
      },
      (stream, increment) => {
        if (stream === 0) connectionWindow += increment
        else streamWindow += increment
        send()
      }
    )
    const b = await startSidecar(cleanup, sidecarConfig({ service: "inventory", app: `${LOOPBACK}:${app.port}`, appProtocol: "h2c", tracing: false }))
    const client = startClient(cleanup, b.sidecar.inbound.port)
    const meta = new Map<string, string>().set(HttpMeta.method, open ? "POST" : "GET").set(HttpMeta.authority, "inventory")
    // An open body: one chunk, then nothing more until the test is over.
    let release = () => {}
    const over = new Promise<void>((resolve) => (release = resolve))
    cleanup.add(() => release())
    const body = async function* () {
      yield Buffer.from("more to come")
      await over
    }
    const reply = await withTimeout(client.stream("/big", open ? body() : new Uint8Array(0), { meta, timeoutMs: 5000 }), 5000, "the answer's head")
    await waitFor(() => sent > MESH_WINDOW + ANSWER_QUEUE && Math.min(connectionWindow, streamWindow) === 0, 5000, "B to hold the app's window back with bytes unread")
    const unreadAtEnd = sent - MESH_WINDOW - ANSWER_QUEUE
    const { socket, stream } = answering!
    answering = undefined
    socket.write(end(stream))
    let read = 0
    let error: unknown
    try {
      for await (const chunk of reply.stream!) read += chunk.length
    } catch (failed) {
      error = failed
    }
    return { sent, read, unreadAtEnd, error }
  }
  /** An empty DATA frame with END_STREAM: no window needed. */
  const endStream = (stream: number) => h2Frame(FrameType.data, FrameFlag.endStream, stream)

  it("an answer the caller stopped reading (B paused the app's stream, bytes unread in it) that then gets its END_STREAM and closes: whole, not broken off", async () => {
    const answer = await pausedAnswerEnds(endStream)
    expect(answer.unreadAtEnd).toBeGreaterThan(0)
    expect(answer.sent).toBeGreaterThan(1 << 20)
    expect(answer).toMatchObject({ read: answer.sent, error: undefined })
  })

  // RFC 9113 §8.1 names NO_ERROR for a reset that stops the request body after a whole answer; a
  // server that says CANCEL (or another code) has still sent its END_STREAM: B, reading at once,
  // passed such an answer on whole, and node drops what a paused stream holds on such a reset.
  for (const [name, code] of [["CANCEL", http2.constants.NGHTTP2_CANCEL], ["INTERNAL_ERROR", http2.constants.NGHTTP2_INTERNAL_ERROR]] as const) {
    it(`the same answer ended by END_STREAM, then RST_STREAM(${name}) while the request body still comes: whole, as when B reads it at once`, async () => {
      const answer = await pausedAnswerEnds((stream) => Buffer.concat([endStream(stream), rstStream(stream, code)]), true)
      expect(answer.unreadAtEnd).toBeGreaterThan(0)
      expect(answer).toMatchObject({ read: answer.sent, error: undefined })
    })
  }

  it("a reset with NO_ERROR after the whole answer, while the request body still comes (RFC 9113 §8.1's case): the answer is whole", async () => {
    const app = http2.createServer()
    app.on("stream", (stream) => {
      stream.on("error", () => {})
      // Answered at the body's first bytes; the rest of it is not wanted.
      stream.once("data", () => {
        stream.respond({ ":status": 200 })
        stream.end("early", () => stream.close(http2.constants.NGHTTP2_NO_ERROR))
      })
    })
    await new Promise<void>((resolve) => app.listen(0, LOOPBACK, resolve))
    cleanup.add(() => new Promise<void>((resolve) => app.close(() => resolve())))
    const { a } = await startPair(cleanup, (app.address() as net.AddressInfo).port)
    // 1 MiB: more than the app's stream window, so B is still sending when the answer ends.
    const answer = await call(a.outboundPort, { method: "POST", path: "/upload", headers: { host: "inventory" }, body: Buffer.alloc(1 << 20, 0x61), timeoutMs: 5000 })
    expect(`${answer.status} ${answer.body.toString()}`).toBe("200 early")
  })

  // node:http2's own server resets with NO_ERROR where its END_STREAM should go: its writable side
  // finishes as its last byte is handed over, and a stream whose request body it never read it then
  // closes (a RST_STREAM, at once) while the END_STREAM (an empty DATA frame) waits for window,
  // which nghttp2 gives none when the window is spent: an answer of exactly the stream's window
  // (B's setting: APP_STREAM_WINDOW, 256 KiB; 65,535 on node's client) or a multiple of it, ended
  // after its write, every time, however fast B reads. Whole where its content-length says all of it came. A plain
  // caller's answer held whole (65,535) and streamed and gathered (131,070), a mesh caller's streamed.
  it("node:http2's app ending an answer that spent its stream window (RST_STREAM(NO_ERROR) instead of its END_STREAM): whole, by its content-length", async () => {
    const app = http2.createServer()
    // Answers as many bytes as its path says (`/65535`), declared, in one write, and ends once that
    // is sent (an end that comes with the write's last chunk carries END_STREAM on it); it reads no
    // request body.
    app.on("stream", (stream, headers) => {
      stream.on("error", () => {})
      const bytes = Number(String(headers[":path"]).slice(1))
      stream.respond({ ":status": 200, "content-length": bytes })
      stream.write(Buffer.alloc(bytes, 0x61), () => stream.end())
    })
    const endStreamSent = endStreamsSent(cleanup)
    const { a, b } = await startPair(cleanup, await listening(cleanup, app))
    const plain = startClient(cleanup, b.sidecar.inbound.port, { mesh: false })
    for (const bytes of [APP_STREAM_WINDOW, 2 * APP_STREAM_WINDOW]) {
      const answer = await plain.call(`/${bytes}`, "{}", { timeoutMs: 5000 })
      // A short answer is the handler-fail body: its message shows.
      expect(answer.length === bytes ? bytes : answer.toString()).toBe(bytes)
    }
    const meshed = await call(a.outboundPort, { path: `/${2 * APP_STREAM_WINDOW}`, headers: { host: "inventory" }, timeoutMs: 5000 })
    expect([meshed.status, meshed.body.length]).toEqual([200, 2 * APP_STREAM_WINDOW])
    // The app's reset came before its END_STREAM each time: what this test is about.
    expect(endStreamSent).toEqual([false, false, false])
  })

  // The same frames from an app that breaks its answer off: node:http2's close() (NO_ERROR) with
  // the answer's bytes still queued sends what the stream's window lets through, drops the rest and
  // resets, no END_STREAM. Without a content-length B cannot tell it from the held-back END_STREAM
  // above: it is taken as broken off, a 502 a caller sees rather than a 200 short of its bytes (the
  // price: an answer of no declared length that ends exactly as the app's window runs out fails too).
  it("node:http2's app closing its stream (NO_ERROR) with 100,000 bytes more than B's window written and no content-length: node drops what its window held back, the answer broke off", async () => {
    const app = http2.createServer()
    app.on("stream", (stream) => {
      stream.on("error", () => {})
      stream.respond({ ":status": 200 })
      // Past B's stream window (APP_STREAM_WINDOW; 65,535 on node's client, where 100,000 was enough).
      stream.write(Buffer.alloc(APP_STREAM_WINDOW + 100_000, 0x61))
      stream.close()
    })
    const endStreamSent = endStreamsSent(cleanup)
    const b = await startSidecar(cleanup, sidecarConfig({ service: "inventory", app: `${LOOPBACK}:${await listening(cleanup, app)}`, appProtocol: "h2c", tracing: false }))
    // node keeps the app's session open for the bytes it dropped: ended here, before B stops.
    const sessions: Array<http2.ServerHttp2Session> = []
    app.on("session", (session) => sessions.push(session))
    cleanup.add(() => sessions.forEach((session) => session.destroy()))
    const plain = startClient(cleanup, b.sidecar.inbound.port, { mesh: false })
    const answer = await plain.call("/cut", "{}", { timeoutMs: 5000 })
    // The handler-fail body, not the bytes the app's window let through.
    expect(answer.length < 1000 ? answer.toString() : `${answer.length} bytes`).toMatch(/reset its stream \(NO_ERROR\) after \d+ bytes of its answer, before its end/)
    expect(endStreamSent).toEqual([false])
  })

  // The same reset, where the app's connection window is what holds its END_STREAM back: another
  // stream spent it (the flaky run of answer-budget-endings: the app's window 0, B's own view 49,148,
  // its WINDOW_UPDATE on the way). The app here is node's server in frames: its END_STREAM where its
  // connection window allows it, a RST_STREAM(NO_ERROR) in its place where not (as the test above
  // shows for the stream's window). B's answer of 1,000 bytes cannot tell the reset from a break-off:
  // B gives the app a connection window no answer spends.
  it("an app whose connection window another stream spent as it ended a small answer: it had window for its END_STREAM, the answer is whole", async () => {
    const SMALL = 1000
    let connectionWindow = INITIAL_WINDOW
    const requests: Array<number> = []
    const app = await startRawH2App(
      cleanup,
      (socket, stream) => {
        requests.push(stream)
        if (requests.length < 2) return
        // B's streams 1 (the small answer's call) and 3: the small answer, then stream 3 sends what
        // is left of the connection's window, up to its own stream's window, in 16 KiB frames.
        const [small, filler] = requests as [number, number]
        const frames = [h2Frame(FrameType.headers, FrameFlag.endHeaders, small, STATUS_200), h2Frame(FrameType.data, 0, small, Buffer.alloc(SMALL, 0x61))]
        connectionWindow -= SMALL
        frames.push(h2Frame(FrameType.headers, FrameFlag.endHeaders, filler, STATUS_200))
        for (let left = Math.min(connectionWindow, INITIAL_WINDOW); left > 0; left -= 16_384) {
          const bytes = Math.min(16_384, left)
          frames.push(h2Frame(FrameType.data, 0, filler, Buffer.alloc(bytes, 0x62)))
          connectionWindow -= bytes
        }
        frames.push(connectionWindow > 0 ? endStream(small) : rstStream(small))
        socket.write(Buffer.concat(frames))
      },
      (stream, increment) => {
        if (stream === 0) connectionWindow += increment
      }
    )
    const b = await startSidecar(cleanup, sidecarConfig({ service: "inventory", app: `${LOOPBACK}:${app.port}`, appProtocol: "h2c", tracing: false }))
    const plain = startClient(cleanup, b.sidecar.inbound.port, { mesh: false })
    const small = plain.call("/small", "{}", { timeoutMs: 5000 })
    await waitFor(() => requests.length === 1, 5000, "the small answer's request at the app")
    // The filler's answer never ends: its call fails as the test's cleanup closes everything.
    plain.call("/filler", "{}", { timeoutMs: 5000 }).catch(() => {})
    const answer = await small
    expect(answer.length === SMALL ? SMALL : answer.toString()).toBe(SMALL)
  })

  describe("a gRPC app's trailers, to a grpc-js caller", () => {
    // The app is startSizedGrpcApp's: past 64 KiB of trailers node cannot send them, it resets the
    // stream with NO_ERROR instead (a frameError at the app, nothing else).

    /** A server-streaming call: the messages read, then its status. */
    const watch = (client: grpc.Client, size: number, streamed: boolean, head = 0) =>
      new Promise<{ readonly messages: number; readonly status: grpc.StatusObject }>((resolve) => {
        const metadata = new grpc.Metadata()
        metadata.set("x-size", String(size))
        metadata.set("x-head-size", String(head))
        metadata.set("x-stream", streamed ? "1" : "0")
        const stream = client.makeServerStreamRequest(PATH, identity, identity, Buffer.from("hi"), metadata, { deadline: Date.now() + 5000 })
        let messages = 0
        stream.on("data", () => messages++)
        stream.on("error", () => {})
        stream.on("status", (status: grpc.StatusObject) => resolve({ messages, status }))
      })

    /** A pair in front of the app, and a grpc-js client of A that reads large metadata (its own bound is 8 KiB), to see 30 KB trailers pass. */
    const startCaller = async () => {
      const { a, b } = await startPair(cleanup, await startSizedGrpcApp(cleanup))
      const client = new grpc.Client(`${LOOPBACK}:${a.outboundPort}`, grpc.credentials.createInsecure(), { "grpc.default_authority": "inventory", "grpc.max_metadata_size": 1 << 20 })
      cleanup.add(() => client.close())
      return { b, client }
    }
    const errors = (b: RunningSidecar, reason: string) =>
      metric(b, new RegExp(`^iip_mesh_request_errors_total\\{direction="inbound",service="inventory",code="\\d+",hop="app",reason="${reason}"\\}`))

    it("trailers the app's node could not send (past 64 KiB it resets the stream with NO_ERROR instead): INTERNAL naming the app hop, not a call ended without a status", async () => {
      const { b, client } = await startCaller()
      for (const streamed of [false, true]) {
        const fits = await watch(client, 30_000, streamed)
        expect(fits.status.code).toBe(grpc.status.OK)
        expect(String(fits.status.metadata.get("x-big")[0]).length).toBe(30_000)
        expect(fits.messages).toBe(streamed ? 2 : 1)
        const unsent = await watch(client, 66_000, streamed)
        expect([unsent.status.code, unsent.status.metadata.get("x-iip-mesh-error")[0]]).toStrictEqual([grpc.status.INTERNAL, "app; reason=app_failed"])
        expect(unsent.status.details).toContain("reset its stream (NO_ERROR)")
      }
      // One whole (502), one streamed (200: its head had gone on).
      expect(await errors(b, "answer_broke_off")).toBe(2)
    })

    it("trailers B reads but the mesh cannot carry (past its 61,440 bytes of metadata): INTERNAL naming the app hop and the bound, not the inbound hop's UNAVAILABLE", async () => {
      const { b, client } = await startCaller()
      for (const streamed of [false, true]) {
        // 62,000 bytes: node sends them and B reads them.
        const over = await watch(client, 62_000, streamed)
        expect([over.status.code, over.status.metadata.get("x-iip-mesh-error")[0]]).toStrictEqual([grpc.status.INTERNAL, "app; reason=app_failed"])
        // Held whole, head and trailers together are past the bound too: the answer streams (answer-metadata-bound.test.ts) and its trailers alone are still past it.
        expect(over.status.details).toMatch(/its trailers \(\d+ bytes\) exceed the 61440 bytes of metadata the mesh carries/)
      }
      expect(await errors(b, "app_failed")).toBe(2)
    })
  })
})
