// Send flow control of our server role (src/h2/h2Sender.ts, flowWindow.ts) against a raw peer that
// moves its windows: SETTINGS_INITIAL_WINDOW_SIZE lowered mid-stream (the stream's window goes
// negative: nothing is sent until WINDOW_UPDATEs bring it above 0, then exactly what they allow).
import { afterEach, describe, expect, it } from "vitest"
import { startEchoServer } from "../helpers/h2ConnLegs.ts"
import { connectRawH2, headerFrames, requestBlock } from "../helpers/h2RawClient.ts"
import { Flag, type Frame, frame, settings, Type, windowUpdate } from "../helpers/h2Wire.ts"
import { grpcMessage } from "../support/grpcRaw.ts"
import { Cleanup } from "../support/iipRaw.ts"

const cleanup = new Cleanup()
afterEach(() => cleanup.run())

const sent = (frames: ReadonlyArray<Frame>): number => frames.filter((f) => f.type === Type.data && f.stream === 1).reduce((n, f) => n + f.payload.length, 0)
const pings = (frames: ReadonlyArray<Frame>): number => frames.filter((f) => f.type === Type.ping && (f.flags & Flag.ack) !== 0).length
const ping = (n: number): Buffer => frame(Type.ping, 0, 0, Buffer.alloc(8, n))

describe("the peer's windows", () => {
  it("INITIAL_WINDOW_SIZE lowered mid-stream: the window goes negative, DATA waits, then goes exactly as far as the updates allow", async () => {
    const { port } = await startEchoServer(cleanup)
    const raw = await connectRawH2(cleanup, port, true)
    const message = grpcMessage(Buffer.alloc(100_000, 0x61))
    const block = requestBlock("POST", "/demo.Echo/Unary", [["content-type", "application/grpc"], ["te", "trailers"]])
    raw.socket.write(Buffer.concat([headerFrames(1, block, false), ...Array.from({ length: Math.ceil(message.length / 16_384) }, (_, i) =>
      frame(Type.data, i === Math.ceil(message.length / 16_384) - 1 ? Flag.endStream : 0, 1, message.subarray(i * 16_384, (i + 1) * 16_384)))]))
    // The echo stops at the default windows (65,535 each).
    await raw.until((f) => sent(f) === 65_535, "the first window's DATA")
    // Lowered to 16,384: the stream's window is 16,384 - 65,535 < 0; the connection's is opened wide.
    raw.socket.write(Buffer.concat([settings([[4, 16_384]]), windowUpdate(0, 1 << 20), windowUpdate(1, 49_151), ping(1)]))
    await raw.until((f) => pings(f) === 1, "the first PING's answer")
    expect(sent(raw.frames)).toBe(65_535)
    raw.socket.write(Buffer.concat([windowUpdate(1, 10_000), ping(2)]))
    await raw.until((f) => pings(f) === 2, "the second PING's answer")
    expect(sent(raw.frames)).toBe(75_535)
    raw.socket.write(windowUpdate(1, 1 << 20))
    await raw.until((f) => f.some((x) => x.type === Type.headers && x.stream === 1 && (x.flags & Flag.endStream) !== 0), "the trailers")
    expect(sent(raw.frames)).toBe(message.length)
  })
})
