// The h2c leg's wait for a gRPC answer's trailers (src/sidecar/appH2.ts): an answer holding one
// whole message when the first 1 ms wait ends, of a method not seen to stream, waits longer for its
// trailers and goes back as one mesh message; once a method's answer carried a second message, its
// answers stream as soon as the first wait ends. Sidecar B alone, called in mesh mode, in front of a
// node:http2 app that sends its trailers 8 ms after the message (a paused app, say).
import * as http2 from "node:http2"
import type * as net from "node:net"
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest"
import type { IipClient } from "../../src/iip/client.ts"
import { HttpMeta } from "../../src/sidecar/httpEnvelope.ts"
import { Cleanup, withTimeout } from "../support/iipRaw.ts"
import { startClient } from "../support/meshTest.ts"
import { LOOPBACK, sidecarConfig, startSidecar } from "../support/sidecarHarness.ts"

/** When the app ends an answer after its last message: past B's first wait, well within the longer one. */
const TRAILERS_AFTER_MS = 8
/** A stream's last message to its end: longer than either wait, so B sees a second message before it. */
const STREAM_TAIL_MS = 200

/** A gRPC message: flag byte, 4-byte length, the bytes. */
const frame = (text: string): Buffer => {
  const body = Buffer.from(text)
  const out = Buffer.alloc(5 + body.length)
  out.writeUInt32BE(body.length, 1)
  body.copy(out, 5)
  return out
}

/**
 * Answers as the request's last byte says: 1, one message and the trailers 8 ms later; 2, a second
 * message 8 ms after the first and the trailers 200 ms after that; 3, one message and the trailers
 * 200 ms later; 4, the head and one message ending the stream, in one write (so in one read at B). `gaps` gets, per answer, how long after its first message the answer really ended
 * (this process, B's too, may be paused meanwhile on a loaded machine: that answer then proves nothing).
 */
const startApp = async (cleanup: Cleanup, gaps: Array<number>): Promise<number> => {
  const app = http2.createServer()
  app.on("stream", (stream) => {
    const parts: Array<Buffer> = []
    stream.on("data", (chunk: Buffer) => parts.push(chunk))
    stream.on("end", () => {
      const kind = Buffer.concat(parts).at(-1) ?? 1
      if (kind === 4) {
        stream.respond({ ":status": 200, "content-type": "application/grpc" })
        return void stream.end(frame("whole"))
      }
      stream.respond({ ":status": 200, "content-type": "application/grpc" }, { waitForTrailers: true })
      stream.on("wantTrailers", () => stream.sendTrailers({ "grpc-status": "0" }))
      stream.write(frame("first"))
      const firstAt = performance.now()
      const end = () => {
        gaps.push(performance.now() - firstAt)
        stream.end()
      }
      if (kind === 1) return void setTimeout(end, TRAILERS_AFTER_MS)
      if (kind === 3) return void setTimeout(end, STREAM_TAIL_MS)
      setTimeout(() => {
        stream.write(frame("more"))
        setTimeout(end, STREAM_TAIL_MS)
      }, TRAILERS_AFTER_MS)
    })
    stream.on("error", () => {})
  })
  await new Promise<void>((resolve) => app.listen(0, LOOPBACK, resolve))
  cleanup.add(() => new Promise<void>((resolve) => app.close(() => resolve())))
  return (app.address() as net.AddressInfo).port
}

/** A call of `path` answered as `kind` says (startApp): whether its answer came whole, and its body. */
const call = async (client: IipClient, path: string, kind: number): Promise<{ readonly whole: boolean; readonly body: Buffer }> => {
  const meta = new Map<string, string>()
    .set(HttpMeta.method, "POST")
    .set(HttpMeta.authority, "inventory")
    .set(HttpMeta.headers, JSON.stringify([["content-type", "application/grpc"]]))
  const reply = await withTimeout(client.stream(path, Buffer.from([0, 0, 0, 0, 1, kind]), { meta, timeoutMs: 5000 }), 5000, "the answer")
  if (reply.stream === undefined) return { whole: true, body: reply.data }
  const parts: Array<Buffer> = []
  for await (const chunk of reply.stream) parts.push(Buffer.from(chunk))
  return { whole: false, body: Buffer.concat(parts) }
}

describe("the h2c leg's wait for a gRPC answer's trailers", () => {
  let cleanup: Cleanup
  let client: IipClient
  const gaps: Array<number> = []

  beforeEach(async () => {
    cleanup = new Cleanup()
    gaps.length = 0
    const appPort = await startApp(cleanup, gaps)
    const b = await startSidecar(cleanup, sidecarConfig({ service: "inventory", app: `${LOOPBACK}:${appPort}`, appProtocol: "h2c" }))
    client = startClient(cleanup, b.sidecar.inbound.port)
  })
  afterEach(() => cleanup.run())

  /** The longest pause of this process (B runs in it too) from now to the returned function's call, ms: a 1 ms ticker's lateness. */
  const pausedDuring = (): (() => number) => {
    let longest = 0
    let last = performance.now()
    const ticker = setInterval(() => {
      const now = performance.now()
      longest = Math.max(longest, now - last - 1)
      last = now
    }, 1)
    return () => {
      clearInterval(ticker)
      return Math.max(longest, performance.now() - last - 1)
    }
  }

  /**
   * A call whose answer ends 8 ms after its one message: whether it came whole. An answer that in
   * fact ended outside 3-15 ms after its message, or during which this process paused 4 ms or more
   * (B may then have read the message and the trailers at once), proves nothing: asked again, 20 times at most.
   */
  const lateTrailers = async (path: string): Promise<boolean> => {
    for (let tries = 0; ; tries++) {
      const paused = pausedDuring()
      const answer = await call(client, path, 1)
      expect(answer.body).toStrictEqual(frame("first"))
      const gap = gaps.at(-1)!
      if ((gap >= 3 && gap <= 15 && paused() < 4) || tries === 20) return answer.whole
    }
  }

  it("holds one whole message whose trailers come late, and streams a method once one of its answers carried a second message", async () => {
    // Trailers 8 ms after the only message: past the first wait, within the longer one.
    expect(await lateTrailers("/t.S/Get")).toBe(true)
    // A second message: the answer streams at once, and its method is known to stream from then on.
    const stream = await call(client, "/t.S/Watch", 2)
    expect(stream.whole).toBe(false)
    expect(stream.body).toStrictEqual(Buffer.concat([frame("first"), frame("more")]))
    expect(await lateTrailers("/t.S/Watch")).toBe(false)
    // Another method is not: its one late message is held still.
    expect(await lateTrailers("/t.S/Get")).toBe(true)
    // One message and a long pause: streamed once the longer wait is over too.
    const paused = await call(client, "/t.S/Tail", 3)
    expect(paused.whole).toBe(false)
    expect(paused.body).toStrictEqual(frame("first"))
  })

  it("an answer over within the turn its head came in (head and message in one read) goes back whole without arming the wait's timer", async () => {
    const timers = vi.spyOn(globalThis, "setTimeout")
    try {
      for (let i = 0; i < 5; i++) {
        const answer = await call(client, "/t.S/Once", 4)
        expect(answer).toStrictEqual({ whole: true, body: frame("whole") })
      }
      // The first wait's length (appH2.ts's WHOLE_ANSWER_WAIT_MS): armed per call when each wait began at its head.
      expect(timers.mock.calls.filter(([, ms]) => ms === 1)).toHaveLength(0)
    } finally {
      timers.mockRestore()
    }
  })
})
