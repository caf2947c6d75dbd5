// A relay between sidecar B and an HTTP/2 app (node:http2, the real peer) that hands B each of the
// app's answers in one write: its head, its DATA and its trailers together. node's server sends an
// answer's trailers a turn or more of its event loop after its message (waitForTrailers), so
// whether B read such an answer whole, within the 1 ms it waits after the turn its head came in
// (appH2Exchange.ts), depended on the test process being scheduled within that millisecond: under
// load (the full suite on 2 cores) the wait ran out first, the answer streamed, and a test of what B
// does with a whole answer saw what it does with a streamed one. Read in one read, the answer is
// over within its head's turn and B never waits: whole, however loaded the machine.
// What B sends goes to the app as it comes; its RST_STREAMs are read, as the end of an answer the
// app will not finish.
import * as net from "node:net"
import { type Cleanup, startRawServer } from "./iipRaw.ts"

const DATA = 0
const HEADERS = 1
const RST_STREAM = 3
const CONTINUATION = 9
const END_STREAM = 1
const END_HEADERS = 4
/**
 * DATA held at most: past it, what is held goes on (an answer of that much is not one a test needs
 * whole). The app may wait for a WINDOW_UPDATE, which B sends only for DATA it has taken, once half
 * a window of it was (nghttp2's rule): this is under half the initial 65,535 bytes, so an app that
 * waits on its window waits on B, never on DATA this relay holds.
 */
const MAX_HELD_DATA = 16 * 1024
/** Held at most of header blocks and all (a budget: a test's heads and trailers are well within it). */
const MAX_HELD = 1024 * 1024

/** The RST_STREAMs in what B sends (after its 24-byte preface), each stream's to `onReset`. */
class ResetReader {
  private read: Buffer = Buffer.alloc(0)
  private at = 24
  private readonly onReset: (stream: number) => void

  constructor(onReset: (stream: number) => void) {
    this.onReset = onReset
  }

  push(data: Buffer): void {
    this.read = Buffer.concat([this.read, data])
    for (let length = 0; this.at + 9 <= this.read.length && this.at + 9 + (length = this.read.readUIntBE(this.at, 3)) <= this.read.length; this.at += 9 + length) {
      if (this.read[this.at + 3] === RST_STREAM) this.onReset(this.read.readUInt32BE(this.at + 5) & 0x7fffffff)
    }
    // What was read whole goes: only a frame's start is kept (or the preface's rest is counted).
    const consumed = Math.min(this.at, this.read.length)
    this.read = this.read.subarray(consumed)
    this.at -= consumed
  }
}

/** Frames from the app, handed on once no stream's answer is under way (begun and not ended, by the app or by B's reset). */
class WholeAnswers {
  private held: Buffer = Buffer.alloc(0)
  /** Of `held`, the bytes of whole frames already looked at, and of those, DATA payload's. */
  private parsed = 0
  private parsedData = 0
  /** Streams whose answer's head went by and whose end did not. */
  private readonly open = new Set<number>()
  /** A header block not yet ended (by END_HEADERS): its stream, and whether it ends the stream. */
  private block: { readonly stream: number; readonly endsStream: boolean } | undefined = undefined
  private readonly send: (bytes: Buffer) => void

  constructor(send: (bytes: Buffer) => void) {
    this.send = send
  }

  push(data: Buffer): void {
    this.held = this.held.length === 0 ? data : Buffer.concat([this.held, data])
    const held = this.held
    for (let length = 0; this.parsed + 9 <= held.length && this.parsed + 9 + (length = held.readUIntBE(this.parsed, 3)) <= held.length; this.parsed += 9 + length) {
      const type = held[this.parsed + 3]!
      const flags = held[this.parsed + 4]!
      const stream = held.readUInt32BE(this.parsed + 5) & 0x7fffffff
      if (type === HEADERS) this.block = { stream, endsStream: (flags & END_STREAM) !== 0 }
      if ((type === HEADERS || type === CONTINUATION) && (flags & END_HEADERS) !== 0 && this.block !== undefined) {
        if (this.block.endsStream) this.open.delete(this.block.stream)
        else this.open.add(this.block.stream)
        this.block = undefined
      }
      if (type === DATA) this.parsedData += length
      if ((type === DATA && (flags & END_STREAM) !== 0) || type === RST_STREAM) this.open.delete(stream)
    }
    this.handOn()
  }

  /** B reset `stream`: the app sends no more of its answer. */
  reset(stream: number): void {
    if (this.open.delete(stream)) this.handOn()
  }

  /** The whole frames held go on once no answer is under way (or past what is held at most). */
  private handOn(): void {
    const held = this.held
    if (this.parsed === 0 || ((this.open.size > 0 || this.block !== undefined) && this.parsedData <= MAX_HELD_DATA && held.length <= MAX_HELD)) return
    this.send(held.subarray(0, this.parsed))
    this.held = held.subarray(this.parsed)
    this.parsed = 0
    this.parsedData = 0
  }
}

/** A relay on 127.0.0.1 port 0 to the HTTP/2 app at `appPort` (see above): its port, for B's `app`. */
export const relayWholeAnswers = async (cleanup: Cleanup, appPort: number): Promise<number> => {
  const { port } = await startRawServer(cleanup, (socket) => {
    const app = net.connect(appPort, "127.0.0.1")
    const answers = new WholeAnswers((bytes) => socket.write(bytes))
    const resets = new ResetReader((stream) => answers.reset(stream))
    app.on("data", (data: Buffer) => answers.push(data))
    socket.on("data", (data: Buffer) => resets.push(data))
    socket.pipe(app)
    app.on("error", () => {})
    app.once("close", () => socket.destroy())
    socket.once("close", () => app.destroy())
  })
  return port
}
