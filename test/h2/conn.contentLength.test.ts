// The client role checks an answer's DATA against its content-length (RFC 9113 8.1.1): more, or
// less by its END_STREAM or trailers, is a malformed answer, a stream error (PROTOCOL_ERROR) the leg
// hears as onEnd; exactly as declared, or none declared, passes. Sidecar B's leg to an h2c app
// relied on node's client for it (h2-answer-fuzz's data-beyond-content-length cases).
import * as net from "node:net"
import { afterEach, describe, expect, it } from "vitest"
import { ErrorCode } from "../../src/h2/frames.ts"
import { H2Connection, type H2ClientHandler } from "../../src/h2/h2Connection.ts"
import { H2RequestRefused } from "../../src/h2/h2Streams.ts"
import { FrameFlag, FrameType, h2Frame, STATUS_200, startRawH2App } from "../support/h2Raw.ts"
import { Cleanup, untilTurn } from "../support/iipRaw.ts"

const cleanup = new Cleanup()
afterEach(() => cleanup.run())

/** :status 200 and content-length `length` (a literal field, its name content-length's static index 28). */
const headWith = (length: string): Buffer => Buffer.concat([STATUS_200, Buffer.from([0x0f, 0x0d, length.length]), Buffer.from(length, "latin1")])
const trailers = Buffer.from([0x40, 11, ...Buffer.from("grpc-status"), 1, 0x30])

/** One GET through our client to a raw app that answers with `answer(stream)`: what the leg heard. */
const answered = async (answer: (stream: number) => Buffer, method = "GET"): Promise<Array<string>> => {
  const app = await startRawH2App(cleanup, (socket, stream) => socket.write(answer(stream)))
  const events: Array<string> = []
  const handler: H2ClientHandler = {
    onResponse: (_s, _f, end) => events.push(`response${end ? " end" : ""}`),
    onData: (s, chunk, end) => {
      connection.consumed(s, chunk.length)
      events.push(`data ${chunk.length}${end ? " end" : ""}`)
    },
    onTrailers: () => events.push("trailers"),
    onReset: (_s, code) => events.push(`reset ${code}`),
    onEnd: (_s, ended) => events.push(`end ${ended.reason} ${ended.code}`),
    onWritable: () => {},
    onClose: () => {}
  }
  const connection = new H2Connection(net.connect(app.port, "127.0.0.1"), "client", handler)
  cleanup.add(() => connection.destroy("test-over"))
  const stream = connection.request([":method", method, ":scheme", "http", ":authority", "app", ":path", "/"], true)
  if (stream instanceof H2RequestRefused) throw new Error(stream.reason)
  await untilTurn(() => events.some((event) => event.includes("end") || event === "trailers"), "the answer's end")
  return events
}

const data = (stream: number, bytes: number, end: boolean) => h2Frame(FrameType.data, end ? FrameFlag.endStream : 0, stream, Buffer.alloc(bytes, 0x61))
const head = (stream: number, length: string) => h2Frame(FrameType.headers, FrameFlag.endHeaders, stream, headWith(length))

describe("client role: an answer's DATA against its content-length", () => {
  it("exactly as declared: the answer ends whole", async () => {
    expect(await answered((s) => Buffer.concat([head(s, "10"), data(s, 4, false), data(s, 6, true)]))).toStrictEqual(["response", "data 4", "data 6 end"])
  })

  it("more DATA than declared: a stream error before the DATA past it reaches the leg", async () => {
    expect(await answered((s) => Buffer.concat([head(s, "5"), data(s, 4, false), data(s, 4, true)]))).toStrictEqual(["response", "data 4", `end content-length ${ErrorCode.PROTOCOL_ERROR}`])
  })

  it("less DATA than declared at END_STREAM, or at the trailers: a stream error", async () => {
    expect(await answered((s) => Buffer.concat([head(s, "5"), data(s, 4, true)]))).toStrictEqual(["response", `end content-length ${ErrorCode.PROTOCOL_ERROR}`])
    expect(await answered((s) => Buffer.concat([head(s, "5"), data(s, 4, false), h2Frame(FrameType.headers, FrameFlag.endHeaders | FrameFlag.endStream, s, trailers)]))).toStrictEqual([
      "response",
      "data 4",
      `end content-length ${ErrorCode.PROTOCOL_ERROR}`
    ])
  })

  it("a content-length that is no length: a stream error before the head reaches the leg", async () => {
    expect(await answered((s) => Buffer.concat([head(s, "1x"), data(s, 2, true)]))).toStrictEqual([`end bad-content-length ${ErrorCode.PROTOCOL_ERROR}`])
  })

  it("a HEAD request's answer declares a length and carries no DATA: whole", async () => {
    expect(await answered((s) => Buffer.concat([head(s, "100"), data(s, 0, true)]), "HEAD")).toStrictEqual(["response", "data 0 end"])
  })
  it("a 304's or a 204's answer may declare a length and carries no DATA (RFC 9113 8.1.1): whole", async () => {
    // :status 304 and 204 (static table 11 and 9), then content-length 100.
    for (const status of [0x8b, 0x89]) {
      const noContent = (s: number) => h2Frame(FrameType.headers, FrameFlag.endHeaders, s, Buffer.concat([Buffer.from([status, 0x0f, 0x0d, 3]), Buffer.from("100", "latin1")]))
      expect(await answered((s) => Buffer.concat([noContent(s), data(s, 0, true)]))).toStrictEqual(["response", "data 0 end"])
    }
  })
})
