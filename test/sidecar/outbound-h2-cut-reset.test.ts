// The reset that tells a caller still sending a request body to stop (RST_STREAM NO_ERROR, RFC 9113
// §8.1) goes only after the answer is whole on the wire: an answer that still waits for the caller's
// window (a slow reader) is not cut by it. Real listener (makeH2c: h2cListening), a raw caller on 127.0.0.1.
import { afterEach, expect, it } from "vitest"
import { h2cListening } from "../helpers/h2cListener.ts"
import { connectRawH2, requestBlock, resetCode, streamOver } from "../helpers/h2RawClient.ts"
import { Flag, frame, settings, Type, windowUpdate } from "../helpers/h2Wire.ts"
import { Cleanup, waitFor } from "../support/iipRaw.ts"

const cleanup = new Cleanup()
afterEach(() => cleanup.run())

const ANSWER = 5000

/** The caller's PING `n` and A's ACK of it: what A wrote before it read the PING is here by then. */
const roundTrip = async (raw: Awaited<ReturnType<typeof connectRawH2>>, n: number): Promise<void> => {
  const payload = Buffer.alloc(8, 0)
  payload.writeUInt32BE(0x5e1f0000 + n, 0)
  raw.socket.write(frame(Type.ping, 0, 0, payload))
  await raw.until((frames) => frames.some((f) => f.type === Type.ping && (f.flags & Flag.ack) !== 0 && f.payload.equals(payload)), `the ACK of the caller's PING ${n}`)
}

it("an answer given before the request's end, waiting for the caller's window, is not cut by the stop-sending reset", async () => {
  let answered = false
  const { port } = await h2cListening(cleanup, (call) => {
    call.writeHead(200, [])
    call.end(Buffer.alloc(ANSWER, 7))
    answered = true
  }, { idleTimeoutMs: 60_000, answerIdleMs: 60_000 })
  // A window of 1,000 bytes a stream (SETTINGS_INITIAL_WINDOW_SIZE): the answer waits for more.
  const raw = await connectRawH2(cleanup, port, true, settings([[4, 1000]]))
  raw.socket.write(Buffer.concat([frame(Type.headers, Flag.endHeaders, 1, requestBlock("POST", "/upload")), frame(Type.data, 0, 1, Buffer.alloc(10, 1))]))
  await waitFor(() => answered, 5000, "the answer given")
  // The caller reads slowly: its window comes after what would send the reset (the ACK of a PING A
  // sends with it, ahead of the 200 ms bound). A round trip of the caller's own PING: any PING A sent
  // at the answer is here before its ACK (TCP keeps order); the caller ACKs it, and a second round
  // trip has any reset that ACK set off here too, all before the window opens.
  await roundTrip(raw, 1)
  for (const ping of raw.frames.filter((f) => f.type === Type.ping && (f.flags & Flag.ack) === 0)) raw.socket.write(frame(Type.ping, Flag.ack, 0, ping.payload))
  await roundTrip(raw, 2)
  expect(resetCode(raw.frames, 1)).toBeUndefined()
  raw.socket.write(windowUpdate(1, 1_000_000))
  await raw.until(streamOver(1), "stream 1's end")
  // Then the reset, after the answer's END_STREAM: the caller stops sending.
  await raw.until((frames) => resetCode(frames, 1) !== undefined, "the stop-sending reset")
  const ofStream = raw.frames.filter((f) => f.stream === 1)
  const endAt = ofStream.findIndex((f) => f.type === Type.data && (f.flags & Flag.endStream) !== 0)
  const got = ofStream.filter((f) => f.type === Type.data).reduce((n, f) => n + f.payload.length, 0)
  expect({ got, ended: endAt >= 0, reset: resetCode(raw.frames, 1), resetAfterEnd: ofStream.findIndex((f) => f.type === Type.rst) > endAt }).toStrictEqual({ got: ANSWER, ended: true, reset: 0, resetAfterEnd: true })
})

it("the stop-sending reset goes at the caller's ACK of A's PING sent after the whole answer (node's way), well before the 200 ms bound", async () => {
  const { port } = await h2cListening(cleanup, (call) => {
    // Answered before the body's end: the rest of the body is cut off.
    call.writeHead(200, [])
    call.end(Buffer.from("done"))
  }, { idleTimeoutMs: 60_000, answerIdleMs: 60_000 })
  const raw = await connectRawH2(cleanup, port, true)
  raw.socket.write(Buffer.concat([frame(Type.headers, Flag.endHeaders, 1, requestBlock("POST", "/upload")), frame(Type.data, 0, 1, Buffer.alloc(10, 1))]))
  await raw.until(streamOver(1), "stream 1's answer")
  const answeredAt = performance.now()
  await raw.until((frames) => frames.some((f) => f.type === Type.ping && (f.flags & Flag.ack) === 0), "A's PING")
  const ofStream = (type: number) => raw.frames.findIndex((f) => f.type === type && (type !== Type.ping || (f.flags & Flag.ack) === 0) && (type === Type.ping || f.stream === 1))
  // The PING follows the answer's END_STREAM; no reset before its ACK.
  expect(ofStream(Type.ping)).toBeGreaterThan(raw.frames.findIndex((f) => f.stream === 1 && (f.flags & Flag.endStream) !== 0))
  expect(resetCode(raw.frames, 1)).toBeUndefined()
  raw.socket.write(frame(Type.ping, Flag.ack, 0, raw.frames[ofStream(Type.ping)]!.payload))
  await raw.until((frames) => resetCode(frames, 1) !== undefined, "the stop-sending reset")
  expect(resetCode(raw.frames, 1)).toBe(0)
  // At the ACK, not at the 200 ms bound (loopback: a few ms).
  expect(performance.now() - answeredAt).toBeLessThan(150)
})
