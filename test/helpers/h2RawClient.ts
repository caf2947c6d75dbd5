// A caller that speaks HTTP/2 byte by byte to the outbound listener (the hostile-h2 frames,
// head-size and held-reset tests): it writes what it is given, reads frames back (h2Wire.ts's reader) and
// answers nothing by itself, not even the sidecar's SETTINGS unless told to (`ack`), so a test
// decides whether its frames come before or after the sidecar's settings take effect.
import * as net from "node:net"
import { Flag, type Frame, FrameReader, frame, hpackString, PREFACE, settingsAck, Type } from "./h2Wire.ts"
import { type Cleanup, withTimeout } from "../support/iipRaw.ts"

/** The largest frame payload a peer may send before the other side allows more (RFC 9113 §4.2). */
const MAX_FRAME = 16_384

/** HPACK: a literal field without indexing, new name, no Huffman coding (RFC 7541 §6.2.2). */
export const literal = (name: string, value: string): Buffer => Buffer.from([0x00, ...hpackString(name, false), ...hpackString(value, false)])

/** A request's pseudo-headers for `authority` and `path`, then `extra`, as literals. */
export const requestBlock = (method: string, path: string, extra: ReadonlyArray<readonly [string, string]> = [], authority = "catalog"): Buffer =>
  Buffer.concat([literal(":method", method), literal(":scheme", "http"), literal(":authority", authority), literal(":path", path), ...extra.map(([n, v]) => literal(n, v))])

/** A header block as HEADERS and as many CONTINUATION frames as it takes, `part` bytes each (at most a frame). */
export const headerFrames = (stream: number, block: Buffer, endStream: boolean, part = MAX_FRAME): Buffer => {
  const frames: Array<Buffer> = []
  for (let at = 0; at === 0 || at < block.length; at += part) {
    const last = at + part >= block.length
    frames.push(frame(at === 0 ? Type.headers : Type.continuation, (at === 0 && endStream ? Flag.endStream : 0) | (last ? Flag.endHeaders : 0), stream, block.subarray(at, at + part)))
  }
  return Buffer.concat(frames)
}

export interface RawH2 {
  readonly socket: net.Socket
  readonly frames: ReadonlyArray<Frame>
  /** Resolves once `done` holds of the frames received (or the connection closed); fails after 5 s. */
  readonly until: (done: (frames: ReadonlyArray<Frame>) => boolean, what: string) => Promise<void>
  readonly isClosed: () => boolean
}

/**
 * Opens a connection with the preface and an empty SETTINGS, and `first` in the same write (the
 * sidecar reads them together: node's session takes that first read whole before any stream's event);
 * `ack`: the sidecar's SETTINGS are acknowledged once they come (and awaited).
 */
export const connectRawH2 = async (cleanup: Cleanup, port: number, ack: boolean, first: Buffer = Buffer.alloc(0)): Promise<RawH2> => {
  const socket = net.connect(port, "127.0.0.1")
  cleanup.add(() => socket.destroy())
  socket.on("error", () => {})
  const frames: Array<Frame> = []
  const reader = new FrameReader()
  let waiters: Array<() => void> = []
  let closed = false
  const wake = (): void => {
    const current = waiters
    waiters = []
    for (const waiter of current) waiter()
  }
  socket.on("data", (chunk: Buffer) => {
    reader.push(chunk, (f) => {
      frames.push(f)
      if (ack && f.type === Type.settings && (f.flags & Flag.ack) === 0) socket.write(settingsAck())
    })
    wake()
  })
  socket.on("close", () => {
    closed = true
    wake()
  })
  await withTimeout(new Promise<void>((resolve) => socket.once("connect", () => resolve())), 2000, "the connection")
  socket.write(Buffer.concat([PREFACE, frame(Type.settings, 0, 0), first]))
  const until = (done: (frames: ReadonlyArray<Frame>) => boolean, what: string): Promise<void> =>
    withTimeout(
      new Promise<void>((resolve) => {
        const check = (): void => (done(frames) || closed ? resolve() : void waiters.push(check))
        check()
      }),
      5000,
      what
    )
  const raw = { socket, frames, until, isClosed: () => closed }
  // Acknowledged, the sidecar's settings hold for every frame written from now on (it reads the ACK first).
  if (ack) await until((all) => all.some((f) => f.type === Type.settings && (f.flags & Flag.ack) === 0), "the sidecar's SETTINGS")
  return raw
}

/** The stream ended for the caller: reset, or answered to its end. */
export const streamOver = (stream: number) => (frames: ReadonlyArray<Frame>): boolean =>
  frames.some((f) => f.stream === stream && (f.type === Type.rst || ((f.type === Type.headers || f.type === Type.data) && (f.flags & Flag.endStream) !== 0)))

/** The RST_STREAM error code the stream got, if it got one. */
export const resetCode = (frames: ReadonlyArray<Frame>, stream: number): number | undefined =>
  frames.find((f) => f.type === Type.rst && f.stream === stream)?.payload.readUInt32BE(0)
