// The gRPC bench's lean load generator (bench/grpc.ts, open loop): unary calls as raw HTTP/2 on one
// node:http2 client session, beside the grpc-js client. The grpc-js client allocates enough per call
// that its own GC pauses made most of the slowest calls of a quiet run; this one sends the same
// request (a length-prefixed message encoded once, `content-type: application/grpc`,
// `te: trailers`) with one headers object for all calls and module-level listeners that find their
// call on the stream, so that what the open loop measures is mostly the path, not the generator.
// Each answer is checked: grpc-status 0 and the bytes back, the same length-prefixed message.
import * as http2 from "node:http2"
import type { Send } from "./sidecar/nodeLoad.ts"

/** gRPC's length-prefixed message: a compressed flag (0: not) and the length (4 bytes, big-endian), then the message. */
export const grpcFrame = (message: Uint8Array): Buffer => {
  const frame = Buffer.allocUnsafe(5 + message.length)
  frame[0] = 0
  frame.writeUInt32BE(message.length, 1)
  frame.set(message, 5)
  return frame
}

/** What a call received, as far as it matches the frame it must get back. */
export interface Received {
  /** Bytes received so far. */
  bytes: number
  /** Every byte so far is the expected frame's at the same offset (and none beyond its end). */
  same: boolean
}

/** Notes `chunk`, received after `received.bytes` bytes, against the `expected` answer: no copy, no allocation. */
export const noteChunk = (received: Received, expected: Buffer, chunk: Buffer): void => {
  const end = received.bytes + chunk.length
  if (received.same) received.same = end <= expected.length && expected.compare(chunk, 0, chunk.length, received.bytes, end) === 0
  received.bytes = end
}

/** Why an answer is wrong, or undefined for a right one: grpc-status 0 and exactly the expected frame. */
export const answerError = (status: string | undefined, message: string | undefined, received: Received, expected: Buffer): string | undefined =>
  status === undefined
    ? "no grpc-status"
    : status !== "0"
      ? `grpc-status ${status}${message === undefined ? "" : `: ${message}`}`
      : received.bytes !== expected.length
        ? `answered ${received.bytes} bytes of ${expected.length}`
        : received.same
          ? undefined
          : "answer's bytes differ"

/** One call's state, found on its stream by the module-level listeners below (no closure per call). */
class Call implements Received {
  bytes = 0
  same = true
  status: string | undefined = undefined
  message: string | undefined = undefined
  failure: string | undefined = undefined
  readonly expected: Buffer
  readonly done: (error: string | undefined) => void
  constructor(expected: Buffer, done: (error: string | undefined) => void) {
    this.expected = expected
    this.done = done
  }
}

const CALL = Symbol("grpcLeanCall")
type CallStream = http2.ClientHttp2Stream & { [CALL]: Call }

const headerText = (value: string | ReadonlyArray<string> | number | undefined): string | undefined =>
  value === undefined ? undefined : String(value)

/** The head; a trailers-only answer (an error, say) carries its grpc-status here. */
function onResponse(this: CallStream, headers: http2.IncomingHttpHeaders & http2.IncomingHttpStatusHeader): void {
  const call = this[CALL]
  if (headers[":status"] !== 200) call.failure ??= `HTTP status ${headers[":status"]}`
  else if (headers["grpc-status"] !== undefined) {
    call.status = headerText(headers["grpc-status"])
    call.message = headerText(headers["grpc-message"])
  }
}

function onData(this: CallStream, chunk: Buffer): void {
  noteChunk(this[CALL], this[CALL].expected, chunk)
}

function onTrailers(this: CallStream, trailers: http2.IncomingHttpHeaders): void {
  const call = this[CALL]
  call.status = headerText(trailers["grpc-status"])
  call.message = headerText(trailers["grpc-message"])
}

function onError(this: CallStream, error: Error): void {
  this[CALL].failure ??= error.message
}

/** The stream is over (answered, reset or failed): the call is judged once, here. */
function onClose(this: CallStream): void {
  const call = this[CALL]
  call.done(call.failure ?? (this.rstCode !== http2.constants.NGHTTP2_NO_ERROR && call.status === undefined ? `stream reset (code ${this.rstCode})` : answerError(call.status, call.message, call, call.expected)))
}

/**
 * The request's headers, built once for every call (node:http2 builds its header block from them per request): those the
 * grpc-js client sends for a call without metadata or deadline, so the sidecars see the same request.
 */
const requestHeaders = (path: string, authority: string): http2.OutgoingHttpHeaders => ({
  ":method": "POST",
  ":scheme": "http",
  ":path": path,
  ":authority": authority,
  "grpc-accept-encoding": "identity,deflate,gzip",
  "accept-encoding": "identity",
  "user-agent": "iip-mesh-bench-lean",
  "content-type": "application/grpc",
  te: "trailers"
})

/**
 * A unary call of `path` with `message` on `session` (h2c, prior knowledge): its answer must be the
 * same message back. `authority`: the :authority the calls carry (the mesh routes by it).
 */
export const leanUnarySend = (session: http2.ClientHttp2Session, path: string, authority: string, message: Buffer): Send => {
  const frame = grpcFrame(message)
  const headers = requestHeaders(path, authority)
  const options: http2.ClientSessionRequestOptions = { endStream: false }
  return (done) => {
    let stream: CallStream
    try {
      stream = session.request(headers, options) as CallStream
    } catch (error) {
      // The session closed or failed: node throws rather than erroring the stream.
      return done(error instanceof Error ? error.message : String(error))
    }
    stream[CALL] = new Call(frame, done)
    stream.on("response", onResponse)
    stream.on("data", onData)
    stream.on("trailers", onTrailers)
    stream.on("error", onError)
    stream.on("close", onClose)
    stream.end(frame)
  }
}

/** An h2c session to `host:port` (prior knowledge, as gRPC clients speak), ready: its errors go to `onError`. */
export const connectLean = (host: string, port: number, onError: (error: Error) => void): Promise<http2.ClientHttp2Session> =>
  new Promise((resolve, reject) => {
    const session = http2.connect(`http://${host}:${port}`)
    const failed = (error: Error) => reject(error)
    session.once("error", failed)
    session.once("connect", () => {
      session.off("error", failed)
      session.on("error", onError)
      resolve(session)
    })
  })
