// A seeded mutation fuzz of the HTTP/2 frame reader (src/h2/frameReader.ts): valid and hostile
// frame sequences with bytes flipped, lengths changed, bytes cut and inserted, fed whole and one
// byte at a time. Asserts only what must always hold: `feed` never throws, every report is a
// handler call or a typed H2FrameError with an HTTP/2 error code, nothing is delivered after a
// connection error, any split gives the same calls as the whole, and time and memory stay bounded.
import { describe, expect, it } from "vitest"
import { FrameReader } from "../../src/h2/frameReader.ts"
import { CLIENT_PREFACE, ErrorCode, Flag, FrameType, H2FrameError, SettingId } from "../../src/h2/frames.ts"
import { FrameWriter } from "../../src/h2/frameWriter.ts"
import { type Recorder, recorder } from "../helpers/h2FrameRecorder.ts"
import { type Prng, prng, randomSplit } from "../helpers/prng.ts"
import { h2Frame as frame } from "../support/h2Raw.ts"

/** A plausible client turn: preface, SETTINGS, requests with bodies, control frames, odd frames. */
const seedStream = (rng: Prng): Buffer => {
  const writer = new FrameWriter({ copyBelow: rng.int(1, 4000) })
  writer.preface()
  writer.settings([[SettingId.ENABLE_PUSH, 0], [SettingId.INITIAL_WINDOW_SIZE, rng.int(0, 2 ** 31 - 1)], [SettingId.MAX_FRAME_SIZE, rng.int(16_384, 20_000)]])
  const parts: Array<Buffer> = []
  for (let i = rng.int(1, 6); i > 0; i--) {
    const id = rng.int(1, 20) * 2 + 1
    switch (rng.int(0, 9)) {
      case 0:
        writer.headers(id, rng.bytes(rng.int(0, 18_000)), rng.next() < 0.5)
        break
      case 1:
        writer.data(id, rng.bytes(rng.int(0, 6000)), rng.next() < 0.5)
        break
      case 2:
        writer.ping(rng.bytes(8), rng.next() < 0.5)
        break
      case 3:
        writer.windowUpdate(rng.int(0, 5), rng.int(0, 2 ** 31 - 1))
        break
      case 4:
        writer.rstStream(id, rng.int(0, 13))
        break
      case 5:
        writer.goAway(id, rng.int(0, 13), rng.bytes(rng.int(0, 300)))
        break
      case 6: {
        const pad = rng.int(0, 255)
        parts.push(frame(FrameType.DATA, Flag.PADDED | rng.int(0, 1), id, Buffer.concat([Buffer.from([pad]), rng.bytes(rng.int(0, 300)), Buffer.alloc(pad)])))
        break
      }
      case 7:
        parts.push(frame(FrameType.HEADERS, Flag.PADDED | Flag.PRIORITY, id, Buffer.concat([Buffer.from([2, 0, 0, 0, 1, 9]), rng.bytes(10), Buffer.alloc(2)])))
        for (let c = rng.int(0, 12); c > 0; c--) parts.push(frame(FrameType.CONTINUATION, 0, id, rng.bytes(rng.int(0, 30))))
        parts.push(frame(FrameType.CONTINUATION, Flag.END_HEADERS, id, rng.bytes(5)))
        break
      case 8:
        parts.push(frame(rng.int(0, 255), rng.int(0, 255), rng.int(0, 2 ** 32 - 1), rng.bytes(rng.int(0, 64))))
        break
      default:
        parts.push(frame(FrameType.PRIORITY, 0, id, rng.bytes(rng.int(4, 6))))
    }
  }
  return Buffer.concat([...(writer.take() ?? []), ...parts])
}

const mutate = (rng: Prng, input: Buffer): Buffer => {
  let bytes = Buffer.from(input)
  for (let n = rng.int(0, 4); n > 0 && bytes.length > 0; n--) {
    const at = rng.int(0, bytes.length - 1)
    switch (rng.int(0, 4)) {
      case 0:
        bytes[at] = rng.int(0, 255)
        break
      case 1:
        bytes[at] = bytes[at]! ^ (1 << rng.int(0, 7))
        break
      case 2:
        bytes = Buffer.concat([bytes.subarray(0, at), bytes.subarray(Math.min(bytes.length, at + rng.int(1, 40)))])
        break
      case 3:
        bytes = Buffer.concat([bytes.subarray(0, at), rng.bytes(rng.int(1, 20)), bytes.subarray(at)])
        break
      default:
        // A frame length byte: the first byte after the preface is the first frame's length.
        bytes[Math.min(bytes.length - 1, CLIENT_PREFACE.length + rng.int(0, 2))] = rng.int(0, 255)
    }
  }
  return bytes
}

const codes = new Set<number>(Object.values(ErrorCode))

/** Feeds `chunks`; returns the calls with consecutive DATA pieces of a stream joined, and the errors. */
const run = (chunks: ReadonlyArray<Buffer>) => {
  const calls: Array<unknown> = []
  let afterConnectionError = 0
  let failed = false
  const rec: Recorder = recorder((event) => {
    if (failed) afterConnectionError++
    const last = calls.at(-1) as Array<unknown> | undefined
    if (event[0] === "data" && last?.[0] === "data" && last[1] === event[1] && last[4] === false) {
      last[2] = Buffer.concat([last[2] as Buffer, event[2]])
      last[3] = (last[3] as number) + event[3]
      last[4] = event[4]
    } else calls.push([...event])
  })
  const onError = rec.onError
  rec.onError = (error) => {
    if (failed) afterConnectionError++
    if (error.scope === "connection") failed = true
    onError(error)
  }
  const reader = new FrameReader(rec, { role: "server", maxHeaderBlockBytes: 32_768 })
  for (const chunk of chunks) reader.feed(chunk)
  // As strings: vitest compares buffers element by element, which would dominate the run.
  const text = calls.map((call) => (call as Array<unknown>).map((part) => (Buffer.isBuffer(part) ? part.toString("hex") : String(part))).join(" "))
  return { calls: text, errors: rec.errors.map((e) => [e.code, e.scope, e.streamId, e.reason]), typed: rec.errors.every((e) => e instanceof H2FrameError && codes.has(e.code)), afterConnectionError }
}

describe("frame reader fuzz", () => {
  it("3,000 mutated inputs, whole, byte by byte and in random splits: typed errors only, the same calls every way", () => {
    const rng = prng(20_26)
    const started = performance.now()
    const memoryBefore = process.memoryUsage().arrayBuffers
    let errors = 0
    for (let i = 0; i < 3000; i++) {
      const input = mutate(rng, seedStream(rng))
      const whole = run([input])
      expect(whole.typed).toBe(true)
      expect(whole.afterConnectionError).toBe(0)
      const split = i % 20 === 0 ? run([...input].map((b) => Buffer.from([b]))) : run(randomSplit(rng, input, 700))
      expect(split, `input ${i}`).toStrictEqual(whole)
      errors += whole.errors.length
    }
    expect(errors).toBeGreaterThan(500)
    expect(performance.now() - started).toBeLessThan(60_000)
    expect(process.memoryUsage().arrayBuffers - memoryBefore).toBeLessThan(256 * 1024 * 1024)
  }, 90_000)
})
