// Effect RPC (effect/rpc) over IIP mesh mode: an RpcClient Protocol and an RpcServer Protocol.
// Each RPC is one IIP request on a channel: the client sends the Request message as the body;
// the server answers a unary RPC with its Exit in one whole answer, and a streaming RPC with a
// streamed answer (its chunks go out under the channel's window, so a slow consumer slows the
// server's stream; the Exit ends it). Interrupting the caller cancels the IIP request, which
// interrupts the server's handler fiber. Messages are encoded by the RpcSerialization in context
// (JSON, NDJSON, JSON-RPC, Effect's binary SchemaBinary, MessagePack from msgpack.ts) and framed
// by a 4-byte length each (a streamed answer's chunks are cut by the window, not per message), so
// serializations without framing of their own work too; a frame larger than `maxFrameBytes` fails the exchange before
// it is buffered. The limits are checked as a protocol is built: one out of range dies with OptionInvalid. Whole bodies are decoded with plain loops (a Stream pipeline per RPC cost more
// than the RPC). The Request's trace context travels in the message (the server's span is its
// child) and as a `traceparent` in the IIP metadata, where the sidecars read it.
import type * as Cause from "effect/Cause"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Queue from "effect/Queue"
import * as Schema from "effect/Schema"
import * as Stream from "effect/Stream"
import { RpcClient, RpcClientError, RpcMessage, RpcSerialization, RpcServer } from "effect/rpc"
import type { FromClientEncoded, FromServerEncoded } from "effect/rpc/RpcMessage"
import { checkOptions, count, type Limits } from "../iip/optionLimits.ts"
import { reply } from "../iip/server.ts"
import { type CancelSignal, Cancellation } from "../mux/cancellation.ts"
import { atEndOfRead } from "../mux/connection.ts"
import { type IncomingRequest, type Outcome, PendingOutcome } from "../mux/request.ts"
import { StreamFailed } from "../mux/streams.ts"
import { Refused } from "../iip/dispatch.ts"
import { type LbCallError, NoBackend } from "../toolkit/loadBalanceClient.ts"
import { asStreamError, IipClient, IipLoadBalancer, type StreamError } from "./client.ts"
import { plainJsonProblem } from "./jsonFrame.ts"
import { maxKeyNamesBound } from "./keyNames.ts"
import { decodeMsgPackRequests, type FrameCheck, maxRequestHeaderPairs, msgPack } from "./msgpack.ts"
import { IipServer } from "./server.ts"
import { fromIncoming, toOutgoing } from "./streams.ts"

export interface RpcOverIipOptions {
  /** The IIP path RPCs go to (default "/rpc"). */
  readonly path?: string
  /** The largest message either side accepts (default 16 MiB). */
  readonly maxFrameBytes?: number
  /**
   * The most values (array items, object or map keys and values) a Request the server reads may
   * hold, its payload's included (default 1,000,000): counted before it is decoded, since decoding
   * costs by the value as much as by the byte (1.5 million keys in 15 MB took seconds).
   */
  readonly maxRequestValues?: number
  /**
   * The most keys one object (or MessagePack map) of a Request the server reads may hold (default
   * 50,000): counted in the same scan. Decoding makes an object of many keys a dictionary, ~0.7 µs
   * a key (JSON.parse or msgpackr) against ~20 ns an array item, so one object of 499,990 keys,
   * within `maxRequestValues`, held the event loop 0.5-1.5 s; records that share their keys cost
   * ~60 ns a key and are bounded by `maxRequestValues` alone.
   */
  readonly maxObjectKeys?: number
  /**
   * The most distinct key names a Request the server reads may hold in all its payload's objects
   * (default 55,000, or `maxObjectKeys` and 5,000 if that is more, so that raising `maxObjectKeys`
   * alone still serves an object that large; at most 1,048,576). Outside its payload a Request
   * holds 3,032 keys at most, by the values bound there; JSON-RPC, whose envelope the scan does not
   * know, counts all keys. Counted in the same scan, by a keyed hash of each key's bytes
   * (keyNames.ts). Decoding pays per new name wherever it is (a new string and hidden class): 4,900
   * objects of 100 distinct keys each, within both bounds above, held the event loop 1.2-2.0 s
   * (JSON) and 0.4-0.6 s (MessagePack). The default is the trade: 55,000 new names held it 0-91 ms
   * however they were spread (50,000: 12-120 ms, 100,000: 120-200 ms, measured before the bound); a
   * `Record<string, X>` of `maxObjectKeys` ids and 5,000 other names still passes, and records
   * sharing their keys count each name once.
   */
  readonly maxDistinctKeys?: number
  /**
   * The most object shapes a Request the server reads may hold in its payload's objects, each a
   * hidden class decoding builds: as MessagePack, every distinct sequence of keys an object begins
   * with, up to its 1,020th key (past it V8 makes the object a dictionary); as JSON, each prefix of
   * an object's named keys under its count of them (JSON.parse starts each count from a map of its
   * own), for objects of at most 127 (more: a dictionary) (default `maxDistinctKeys` and 5,000,
   * 60,000 when neither is set; at most 1,048,576). Counted in the same scan (keyNames.ts), records
   * in one order without hashing. Shared names in orders of their own pass both bounds above:
   * 30,000 records of the same 16 names, each shuffled (384,000 shapes), cost 50-124 ms to decode
   * against 20 ms in one order. The default lets no Request build more hidden classes than
   * `maxDistinctKeys` new names spread one to an object already do, with room for 5,000 shapes of
   * shared names (a union of 40 struct types of 20 fields is 800; 10,000 maps of 5 tags of 50,
   * each in its own order, ~32,000); a `Record<string, X>` is one shape per key up to 1,020.
   */
  readonly maxObjectShapes?: number
}

const defaultPath = "/rpc"
const defaultMaxFrameBytes = 16 * 1024 * 1024
const defaultMaxRequestValues = 1_000_000
const defaultMaxObjectKeys = 50_000
// Names besides one object of `maxObjectKeys` keys that the default names bound leaves room for.
const otherNames = 5_000
/** The names bound when not set: 55,000, and one object at a raised `maxObjectKeys` with other names still passes. */
const defaultMaxDistinctKeys = (maxObjectKeys: number): number => Math.min(maxKeyNamesBound, Math.max(defaultMaxObjectKeys, maxObjectKeys) + otherNames)
// Shapes of shared names besides one for each name the names bound lets through.
const otherShapes = 5_000
/** The shapes bound when not set: every name the names bound allows a new shape, and room for shared names' orders. */
const defaultMaxObjectShapes = (maxDistinctKeys: number): number => Math.min(maxKeyNamesBound, maxDistinctKeys + otherShapes)

/** What each numeric option takes (src/iip/optionLimits.ts); a frame's length is 4 bytes. */
const rpcLimits: Limits<RpcOverIipOptions> = { maxFrameBytes: count(1, 0xffff_ffff), maxRequestValues: count(1), maxObjectKeys: count(1), maxDistinctKeys: count(1, maxKeyNamesBound), maxObjectShapes: count(1, maxKeyNamesBound) }
/** Dies with OptionInvalid for an option out of range: run once, as a protocol is built. */
const checkRpcOptions = (options: RpcOverIipOptions) => Effect.sync(() => checkOptions("RPC over IIP", rpcLimits, options))
const textDecoder = new TextDecoder()
const newline = 0x0a

/** One message as a frame: its length (4 bytes, big-endian), then its bytes (a string encoded in place). */
const frame = (encoded: Uint8Array | string): Uint8Array => {
  const length = typeof encoded === "string" ? Buffer.byteLength(encoded) : encoded.length
  const out = Buffer.allocUnsafe(4 + length)
  out.writeUInt32BE(length, 0)
  if (typeof encoded === "string") out.write(encoded, 4)
  else out.set(encoded, 4)
  return out
}

/**
 * How a whole frame is decoded: a JSON serialization's parser is handed the frame as a string
 * (decoded by one shared TextDecoder; a parser given bytes makes a TextDecoder of its own, per
 * RPC here since each exchange has its parser), any other its bytes.
 */
type Decode = (parser: RpcSerialization.Parser, bytes: Uint8Array) => ReadonlyArray<unknown>
const decoderOf = (serialization: RpcSerialization.RpcSerialization["Service"]): Decode =>
  /json/i.test(serialization.contentType) ? (parser, bytes) => parser.decode(textDecoder.decode(bytes)) : (parser, bytes) => parser.decode(bytes)

/**
 * As `decoderOf`, for the Requests the server reads: MessagePack's and JSON's are bounded as their
 * frame is checked, before they are decoded (see requestProblem); the fields of JSON's (and
 * NDJSON's) envelope are known, any other JSON serialization's (JSON-RPC) is bounded in depth and
 * values (and keys per object, distinct key names, object shapes) only. The refusal throws, as the parser's own would.
 */
const requestDecoderOf = (serialization: RpcSerialization.RpcSerialization["Service"], bounds: Omit<FrameCheck, "request">): Decode => {
  if (serialization === msgPack) {
    const packCheck = { ...bounds, request: true }
    return (_parser, bytes) => decodeMsgPackRequests(bytes, packCheck)
  }
  if (!/json/i.test(serialization.contentType)) return decoderOf(serialization)
  const check = { ...bounds, request: serialization === RpcSerialization.json || serialization === RpcSerialization.ndjson }
  // A line-framed parser (NDJSON, NDJSON-RPC) keeps an unfinished line for the next frame, where
  // it reaches JSON.parse whole though each frame was scanned alone: the scan covers a line only
  // if it is whole in its frame. The client protocols write each message, newline and all, as one
  // frame.
  const wholeLines = serialization.includesFraming
  return (parser, bytes) => {
    const problem = plainJsonProblem(bytes, check) ?? (wholeLines && bytes.length > 0 && bytes[bytes.length - 1] !== newline ? "ends inside a line" : undefined)
    if (problem !== undefined) throw new Error(`a JSON rpc frame ${problem}`)
    return parser.decode(textDecoder.decode(bytes))
  }
}

const lengthAt = (bytes: Uint8Array, at: number): number => new DataView(bytes.buffer, bytes.byteOffset + at, 4).getUint32(0)
const noBytes = new Uint8Array(0)

/**
 * Cuts a byte stream into frames, whatever its chunk boundaries; a frame over `max` is refused as
 * soon as its length can be read. A frame whole in a chunk is a view of it; one under way is
 * copied into a buffer of its own, grown by doubling and, once a quarter of it came, to the size
 * it announced (never past `max` and its length, nor four times what came). Its cost is linear in
 * its bytes, and so is what it holds, however it is cut: joined anew at every chunk, a frame was
 * copied again per chunk (quadratic: a peer sending 16 MiB in pieces of a few bytes held the event
 * loop for minutes); kept as a list of its chunks, each piece held an object and the read slab it
 * lay in (empty pieces, which bring a frame no closer to its end, without bound).
 */
const unframe = (max: number) => {
  // The frame under way: its first `used` bytes in `held`; `needed` of them make it whole (4 until
  // its length is read).
  let held: Uint8Array = noBytes
  let used = 0
  let needed = 4
  const hold = (bytes: Uint8Array) => {
    const want = used + bytes.length
    if (want > held.length) {
      // A quarter of the frame in: its whole size at once (one copy of what came), else doubled.
      const grown = Buffer.allocUnsafe(want * 4 >= needed ? needed : Math.max(2 * held.length, want, 256))
      grown.set(held.subarray(0, used))
      held = grown
    }
    held.set(bytes, used)
    used = want
  }
  const tooLarge = (length: number) => new StreamFailed({ message: `rpc message of ${length} bytes exceeds ${max}` })
  const cut = (chunk: Uint8Array): Array<Uint8Array> | StreamFailed => {
    const frames: Array<Uint8Array> = []
    let at = 0
    // The frame under way first, taking from the chunk only what it still needs.
    while (used > 0 && at < chunk.length) {
      const take = Math.min(needed - used, chunk.length - at)
      hold(chunk.subarray(at, at + take))
      at += take
      if (used < needed) return frames
      if (needed === 4) {
        const length = lengthAt(held, 0)
        if (length > max) return tooLarge(length)
        needed = 4 + length
        if (length > 0) continue
      }
      // Its own buffer: the frame's decoded values may be views of it, it is never written again.
      frames.push(held.subarray(4, needed))
      held = noBytes
      used = 0
      needed = 4
    }
    while (chunk.length - at >= 4) {
      const length = lengthAt(chunk, at)
      if (length > max) return tooLarge(length)
      if (chunk.length - at - 4 < length) {
        needed = 4 + length
        break
      }
      frames.push(chunk.subarray(at + 4, at + 4 + length))
      at += 4 + length
    }
    // The start of the next frame: a view of the chunk, copied only if more of the frame comes
    // (a whole body's unfinished end costs nothing).
    if (at < chunk.length) {
      held = chunk.subarray(at)
      used = held.length
    }
    return frames
  }
  // At the end of the bytes: a frame begun and not finished is a message the peer sent and the
  // exchange never saw, so it fails the exchange rather than leave it a message short.
  const unfinished = (): StreamFailed | undefined =>
    used === 0 ? undefined : new StreamFailed({ message: `the rpc body ends inside a message (${used} of ${needed === 4 ? "at least 4" : needed} bytes)` })
  return Object.assign(cut, { unfinished })
}

/**
 * The messages of a whole body of frames (most answers: one frame, one message); throws
 * StreamFailed (a frame too large, or the body ending inside one) or the parser's error.
 */
const decodeWhole = (bytes: Uint8Array, decode: Decode, parser: RpcSerialization.Parser, max: number): ReadonlyArray<unknown> => {
  if (bytes.length >= 4) {
    const length = new DataView(bytes.buffer, bytes.byteOffset, 4).getUint32(0)
    if (length > max) throw new StreamFailed({ message: `rpc message of ${length} bytes exceeds ${max}` })
    if (length === bytes.length - 4) return decode(parser, bytes.subarray(4))
  }
  const cut = unframe(max)
  const frames = cut(bytes)
  if (frames instanceof StreamFailed) throw frames
  const unfinished = cut.unfinished()
  if (unfinished !== undefined) throw unfinished
  return frames.flatMap((f) => decode(parser, f))
}

/**
 * Where an exchange gets its parser. JSON and MessagePack parsers keep no state, so one serves
 * every exchange; any other gets a parser per exchange (an NDJSON parser keeps an unfinished line
 * for the next bytes, JSON-RPC maps ids, SchemaBinary keeps an unfinished message), so what one
 * request leaves never reaches another's.
 */
const parserSource = (serialization: RpcSerialization.RpcSerialization["Service"]): (() => RpcSerialization.Parser) => {
  if (serialization !== RpcSerialization.json && serialization !== msgPack) return () => serialization.makeUnsafe()
  const shared = serialization.makeUnsafe()
  return () => shared
}

/** Decoded messages of a framed byte stream. */
const decodeFrames = <E>(bytes: Stream.Stream<Uint8Array, E>, decode: Decode, parser: RpcSerialization.Parser, max: number): Stream.Stream<unknown, E | StreamFailed> => {
  const cut = unframe(max)
  return bytes.pipe(
    Stream.mapEffect((chunk) => {
      const frames = cut(chunk)
      if (frames instanceof StreamFailed) return Effect.fail(frames)
      return Effect.try({ try: () => frames.flatMap((f) => decode(parser, f)), catch: (cause) => new StreamFailed({ message: `undecodable rpc message: ${String(cause)}` }) })
    }),
    Stream.flatMap((messages) => Stream.fromIterable(messages)),
    Stream.concat(Stream.suspend(() => {
      const unfinished = cut.unfinished()
      return unfinished === undefined ? Stream.empty : Stream.fail(unfinished)
    }))
  )
}

/**
 * Why `messages` (what one IIP request carried) are not one Request as the client protocols send
 * it, or undefined. More would run RPCs the exchange cannot answer or cancel (its answer is the
 * first RPC's; a second RPC would run on past it, beyond the reach of the cancel, the deadline and
 * the connection's close); headers that are not string pairs throw in the RPC server or, with a
 * `__proto__` key, replace the prototype of the handler's headers (past maxRequestHeaderPairs, cost
 * it seconds); an id or tag that is an object throws where the RPC server writes it into its
 * defect's text, out of the IIP handler. A MessagePack or JSON frame holding more headers (or more
 * values outside its payload) is refused before it is decoded: decoding 1.5 million pairs cost
 * 0.5 s (MessagePack), 900,000 cost JSON.parse 1 s.
 */
const notOneRequest = "an rpc exchange carries one Request, and only that"
const requestProblem = (messages: ReadonlyArray<unknown>): string | undefined => {
  if (messages.length !== 1 || (messages[0] as { _tag?: unknown })._tag !== "Request") return notOneRequest
  const { id, tag, headers } = messages[0] as { id?: unknown; tag?: unknown; headers?: unknown }
  if ((typeof id !== "string" && typeof id !== "number") || typeof tag !== "string") return "the rpc request's id or tag is not a string"
  if (headers === undefined) return undefined
  if (!Array.isArray(headers)) return "the rpc request's headers are not a list of string pairs"
  if (headers.length > maxRequestHeaderPairs) return `the rpc request has more than ${maxRequestHeaderPairs} headers`
  for (const pair of headers) {
    if (!Array.isArray(pair) || pair.length !== 2 || typeof pair[0] !== "string" || typeof pair[1] !== "string") return "the rpc request's headers are not a list of string pairs"
  }
  return undefined
}

const traceparentOf = (request: RpcMessage.RequestEncoded): Map<string, string> | undefined =>
  request.traceId !== undefined && request.spanId !== undefined && /^[0-9a-f]{32}$/.test(request.traceId) && /^[0-9a-f]{16}$/.test(request.spanId)
    ? new Map([["traceparent", `00-${request.traceId}-${request.spanId}-0${request.sampled === false ? 0 : 1}`]])
    : undefined

/**
 * `messages`, the answer to `request`, when none names another RPC; else throws StreamFailed. A
 * Chunk or Exit of another id (a hostile or confused server) would settle that RPC, or none, and
 * leave this one waiting for good.
 */
const ownAnswers = (request: RpcMessage.RequestEncoded, messages: ReadonlyArray<unknown>): ReadonlyArray<FromServerEncoded> => {
  for (const message of messages) {
    const requestId = (message as { requestId?: unknown }).requestId
    if (requestId !== undefined && String(requestId) !== String(request.id)) throw new StreamFailed({ message: "an answer names another rpc" })
  }
  return messages as ReadonlyArray<FromServerEncoded>
}

const clientDefect = (message: string, cause: unknown) => new RpcClientError.RpcClientError({ reason: new RpcClientError.RpcClientDefect({ message, cause }) })

/** An IIP exchange as the client protocols start one; `onReply` gets the answer, whole or its body streaming. */
type StartExchange = (
  path: string,
  body: Uint8Array,
  options: { readonly meta?: Map<string, string>; readonly signal: CancelSignal },
  onReply: (error: unknown, reply: { readonly data: Uint8Array; readonly stream: AsyncIterable<Uint8Array> | undefined } | undefined) => void
) => void

/**
 * The RpcClient Protocol over `start`: each Request one IIP exchange run by the calling fiber
 * (interrupting it cancels the exchange, so the Interrupt message itself needs no sending; acks
 * are not needed, the window paces streams). A whole answer is decoded with plain code in the
 * exchange's one callback: the Effect machinery (or a Promise) per exchange costed more than the
 * exchange.
 */
const clientProtocolOver = (start: StartExchange, options: RpcOverIipOptions) =>
  Effect.andThen(checkRpcOptions(options), RpcClient.Protocol.make(Effect.fnUntraced(function*(writeResponse) {
    const serialization = yield* RpcSerialization.RpcSerialization
    const path = options.path ?? defaultPath
    const max = options.maxFrameBytes ?? defaultMaxFrameBytes
    const decode = decoderOf(serialization)
    const parserFor = parserSource(serialization)
    const failed = (error: StreamError | LbCallError) => clientDefect(`rpc over iip: ${error.message}`, error)
    const endedEarly = (request: RpcMessage.RequestEncoded) => clientDefect("rpc over iip: the answer ended before the rpc's exit", request.tag)
    const undecodable = (cause: unknown) => (cause instanceof StreamFailed ? failed(cause) : clientDefect("rpc over iip: undecodable answer", cause))
    const isEnd = (response: FromServerEncoded) => response._tag === "Exit" || RpcMessage.isTerminalResponse(response)
    // Answers are handed on by fibers run with the protocol's context, as effect/rpc's own
    // protocols do from their read loop (the RpcClient decodes each with its request's context).
    const runFork = Effect.runForkWith(yield* Effect.context<never>())
    const hand = (clientId: number, messages: ReadonlyArray<FromServerEncoded>) =>
      messages.length === 1 ? writeResponse(clientId, messages[0]!) : Effect.forEach(messages, (response) => writeResponse(clientId, response), { discard: true })
    // The whole answers of one read go on together, from one fiber at the end of the read (still
    // within it, so the requests their callers make next leave in the read's write): a fiber per
    // answer cost more than the rest of the protocol's work on it. Outside a read (the balancer's
    // answers), each at once. Pairs of client id and messages, flat.
    let waiting: Array<number | ReadonlyArray<FromServerEncoded>> = []
    const handWaiting = () => {
      const answers = waiting
      waiting = []
      let i = 0
      runFork(
        answers.length === 2
          ? hand(answers[0] as number, answers[1] as ReadonlyArray<FromServerEncoded>)
          : Effect.whileLoop({
            while: () => i < answers.length,
            body: () => hand(answers[i++] as number, answers[i++] as ReadonlyArray<FromServerEncoded>),
            step: () => {}
          })
      )
    }
    const handOn = (clientId: number, messages: ReadonlyArray<FromServerEncoded>) => {
      waiting.push(clientId, messages)
      if (waiting.length === 2 && !atEndOfRead(handWaiting)) handWaiting()
    }
    /** A streamed answer: read as delivered, so the server sends only as fast as the caller takes. */
    const streamed = (clientId: number, request: RpcMessage.RequestEncoded, parser: RpcSerialization.Parser, body: AsyncIterable<Uint8Array>, cancel: Cancellation) => {
      // The messages of the piece that holds the RPC's end wait for the body's end: handed on at
      // once, the RpcClient took the call as over, and a frame begun after the end (the body ending
      // inside a message, which fails the same bytes whole) failed nothing. Messages past the end
      // are not handed on (the RpcClient ignores them).
      let ending: ReadonlyArray<FromServerEncoded> | undefined
      const cut = unframe(max)
      const messagesOf = (bytes: Uint8Array): ReadonlyArray<FromServerEncoded> => {
        const frames = cut(bytes)
        if (frames instanceof StreamFailed) throw frames
        if (ending !== undefined) return []
        const messages = ownAnswers(request, frames.flatMap((f) => decode(parser, f)))
        if (!messages.some(isEnd)) return messages
        ending = messages
        return []
      }
      return fromIncoming(body, asStreamError).pipe(
        Stream.runForEach((bytes) => Effect.suspend(() => hand(clientId, messagesOf(bytes)))),
        // The body broke (connection lost, stream reset) after the whole Exit, with no frame begun
        // after it: the RPC ended and its end came whole; what was waited for did not come, and no
        // call fails for it (a failure here made a completed RPC read as failed, retried maybe).
        Effect.catch((error) => (ending !== undefined && cut.unfinished() === undefined ? Effect.void : Effect.fail(error))),
        Effect.andThen(Effect.suspend(() => {
          const unfinished = cut.unfinished()
          if (unfinished !== undefined) return Effect.fail(unfinished)
          return ending === undefined ? Effect.void : hand(clientId, ending)
        })),
        Effect.ensuring(Effect.sync(() => cancel.abort())),
        Effect.mapError(failed),
        Effect.catchDefect((cause) => Effect.fail(undecodable(cause))),
        Effect.andThen(Effect.suspend(() => (ending !== undefined || request.isNotification === true ? Effect.void : Effect.fail(endedEarly(request)))))
      )
    }
    /**
     * A whole answer: its messages handed on, then the RPC must have ended. When it has (most),
     * the exchange's fiber (the RpcClient's send fiber) ends first, then the messages go to the
     * RpcClient with the read's other answers (handOn): handed on from the send fiber, they would
     * resume the caller while that fiber still runs, and the RpcClient then schedules the fiber's
     * interruption, a task on the event loop per RPC.
     */
    const whole = (clientId: number, request: RpcMessage.RequestEncoded, parser: RpcSerialization.Parser, bytes: Uint8Array, resume: (effect: Effect.Effect<void, RpcClientError.RpcClientError>) => void): void => {
      let messages: ReadonlyArray<FromServerEncoded>
      try {
        messages = ownAnswers(request, decodeWhole(bytes, decode, parser, max))
      } catch (cause) {
        return resume(Effect.fail(undecodable(cause)))
      }
      if (request.isNotification === true) return resume(hand(clientId, messages))
      if (!messages.some(isEnd)) return resume(Effect.andThen(hand(clientId, messages), Effect.fail(endedEarly(request))))
      resume(Effect.void)
      handOn(clientId, messages)
    }
    const exchange = (clientId: number, request: RpcMessage.RequestEncoded): Effect.Effect<void, RpcClientError.RpcClientError> => {
      const parser = parserFor()
      const encoded = parser.encode(request)
      if (encoded === undefined) return Effect.void
      const body = frame(encoded)
      const meta = traceparentOf(request)
      // Interrupting the caller cancels the IIP request.
      return Effect.callback<void, RpcClientError.RpcClientError>((resume) => {
        const cancel = new Cancellation()
        start(path, body, meta === undefined ? { signal: cancel } : { meta, signal: cancel }, (error, answer) => {
          if (answer === undefined) return resume(Effect.fail(failed(asCallError(error))))
          if (answer.stream === undefined) return whole(clientId, request, parser, answer.data, resume)
          resume(streamed(clientId, request, parser, answer.stream, cancel))
        })
        return Effect.sync(() => cancel.abort())
      })
    }
    return {
      send: (clientId: number, request: FromClientEncoded) => (request._tag === "Request" ? exchange(clientId, request) : Effect.void),
      supportsAck: false,
      supportsTransferables: false,
      codecFor: serialization.codecFor
    }
  })))

/** A failure of the plain client or the load-balance client, typed (NoBackend and Refused are the balancer's own). */
const asCallError = (error: unknown): StreamError | LbCallError => (error instanceof NoBackend || error instanceof Refused ? error : asStreamError(error))

/**
 * The RpcClient Protocol over the IipClient in context: RpcClient.make(group) on top of it calls
 * the server that client points at.
 */
export const makeClientProtocol = (options: RpcOverIipOptions = {}) =>
  Effect.flatMap(IipClient, (client) => clientProtocolOver((path, body, call, onReply) => client.core.streamWith(path, body, call, onReply), options))

/** `makeClientProtocol` as a layer (needs an IipClient and an RpcSerialization). */
export const layerClientProtocol = (options: RpcOverIipOptions = {}): Layer.Layer<RpcClient.Protocol, never, IipClient | RpcSerialization.RpcSerialization> =>
  Layer.effect(RpcClient.Protocol, makeClientProtocol(options))

/**
 * The RpcClient Protocol over the load-balance client in context (a caller that names a service
 * by its backends): each RPC goes to the backend its balancer picks, moved to another one when it
 * never reached one (within the call's tries); a streaming RPC streams from its backend under the
 * channel's window as over one IipClient. Each RPC is one call of the balancer, bounded by its
 * `requestTimeoutMs` (0: none), a streaming one's whole stream included. Interrupting the caller
 * cancels the call at its backend.
 */
export const makeBalancedClientProtocol = (options: RpcOverIipOptions = {}) =>
  Effect.flatMap(IipLoadBalancer, (balancer) =>
    clientProtocolOver(
      (path, body, call, onReply) => balancer.core.stream(path, body, call).then((reply) => onReply(undefined, reply), (error: unknown) => onReply(error, undefined)),
      options
    ))

/** `makeBalancedClientProtocol` as a layer (needs an IipLoadBalancer and an RpcSerialization). */
export const layerBalancedClientProtocol = (options: RpcOverIipOptions = {}): Layer.Layer<RpcClient.Protocol, never, IipLoadBalancer | RpcSerialization.RpcSerialization> =>
  Layer.effect(RpcClient.Protocol, makeBalancedClientProtocol(options))

/**
 * One IIP request being served: one client of the RPC server. A unary RPC's Exit settles
 * `answer` with its frame (the IIP answer, whole); the first Chunk turns the exchange into a
 * streamed answer fed through `queue`.
 */
interface Exchange {
  readonly parser: RpcSerialization.Parser
  answer: ((value: Outcome) => void) | undefined
  queue: Queue.Queue<Uint8Array, Cause.Done> | undefined
  readonly cancel: CancelSignal
  readonly onCancel: () => void
}

const noAnswer = new Uint8Array(0)

/**
 * The RpcServer Protocol on the IipServer in context: it serves `options.path`, each IIP request
 * there one client of the RPC server (so a defect ends only that RPC), gone (its RPCs interrupted)
 * when the request is cancelled, its deadline passes or its connection closes (the session aborts
 * the request's cancellation for all three). The IIP handler is plain: a whole request is handed
 * to the RPC server at once, in the IIP handler's call (a streamed one by a fiber of its own,
 * reading as it arrives); the RPC's handler fiber sends the Exit back here, where it settles the
 * IIP answer directly: returned by the IIP handler when the RPC ended within its call (a handler
 * that answers at once), else a PendingOutcome (no promise, no queue, no fiber waiting for it);
 * only a streamed answer goes through a bounded queue, pulled as the channel's window allows.
 */
export const makeServerProtocol = (options: RpcOverIipOptions = {}) =>
  Effect.gen(function*() {
    yield* checkRpcOptions(options)
    const serialization = yield* RpcSerialization.RpcSerialization
    const server = yield* IipServer
    const maxObjectKeys = options.maxObjectKeys ?? defaultMaxObjectKeys
    const maxDistinctKeys = options.maxDistinctKeys ?? defaultMaxDistinctKeys(maxObjectKeys)
    const decode = requestDecoderOf(serialization, {
      maxValues: options.maxRequestValues ?? defaultMaxRequestValues,
      maxObjectKeys,
      maxDistinctKeys,
      maxObjectShapes: options.maxObjectShapes ?? defaultMaxObjectShapes(maxDistinctKeys)
    })
    const parserFor = parserSource(serialization)
    const context = yield* Effect.context<never>()
    const runFork = Effect.runForkWith(context)
    const max = options.maxFrameBytes ?? defaultMaxFrameBytes
    const disconnects = yield* Queue.make<number>()
    const exchanges = new Map<number, Exchange>()
    let nextClientId = 0
    let writeRequest: ((clientId: number, message: FromClientEncoded) => Effect.Effect<void>) | undefined
    /** The exchange is over for this side: forget it, stop listening for its cancel. */
    const forget = (id: number, exchange: Exchange) => {
      exchanges.delete(id)
      exchange.cancel.removeEventListener("abort", exchange.onCancel)
    }
    const protocol = yield* RpcServer.Protocol.make((write) => {
      writeRequest = write
      return Effect.succeed({
        disconnects,
        send: (clientId: number, response: FromServerEncoded) =>
          Effect.suspend(() => {
            const exchange = exchanges.get(clientId)
            if (exchange === undefined) return Effect.void
            const encoded = exchange.parser.encode(response)
            if (encoded === undefined) return Effect.void
            const terminal = response._tag === "Exit" || RpcMessage.isTerminalResponse(response)
            if (exchange.answer !== undefined) {
              const answer = exchange.answer
              exchange.answer = undefined
              // A unary RPC (most): its Exit is the whole IIP answer, in one packet.
              if (terminal) {
                forget(clientId, exchange)
                answer(frame(encoded))
                return Effect.void
              }
              // A streamed RPC: the answer streams from a few responses ahead at most; past them
              // the RPC's stream waits for the IIP window.
              return Effect.map(Queue.bounded<Uint8Array, Cause.Done>(16), (queue) => {
                exchange.queue = queue
                const rest = Stream.fromQueue(queue).pipe(
                  Stream.ensuring(Effect.sync(() => {
                    // Ended before the RPC did (the caller went away): interrupt it.
                    if (exchanges.get(clientId) !== exchange) return
                    forget(clientId, exchange)
                    Queue.offerUnsafe(disconnects, clientId)
                  }))
                )
                answer(reply(toOutgoing(Stream.concat(Stream.make(frame(encoded)), rest), Context.empty(), exchange.cancel)))
              })
            }
            if (exchange.queue === undefined) return Effect.void
            return Queue.offer(exchange.queue, frame(encoded)).pipe(Effect.asVoid)
          }),
        end: (clientId: number) =>
          Effect.suspend(() => {
            const exchange = exchanges.get(clientId)
            if (exchange === undefined) return Effect.void
            if (exchange.answer !== undefined) {
              // Ended without a response (a notification): an empty answer.
              forget(clientId, exchange)
              exchange.answer(noAnswer)
              return Effect.void
            }
            forget(clientId, exchange)
            return exchange.queue === undefined ? Effect.void : Queue.end(exchange.queue).pipe(Effect.asVoid)
          }),
        clientIds: Effect.sync(() => new Set(exchanges.keys()) as ReadonlySet<number>),
        initialMessage: Effect.succeedNone,
        supportsAck: false,
        supportsTransferables: false,
        supportsSpanPropagation: true,
        supportsNotifications: true,
        codecFor: serialization.codecFor
      })
    })
    const write = writeRequest!
    // A whole request goes to the RPC server at once, from a fiber that ends when the RPC server
    // has taken it (its `write` starts the handler's fiber and returns). The handler's fiber runs
    // at once too: an RPC that answers at once is answered within the IIP handler's call, so its
    // answer leaves with the read's other answers, in one write at the end of the read, not a
    // turn of the event loop (or two: a fiber woken by a queue runs at the next turn) later.
    const writeOne = (id: number, message: unknown) => Effect.andThen(write(id, message as FromClientEncoded), write(id, RpcMessage.constEof))
    // Past the protocol's scope the RPC server is gone: what waits and what comes is answered with
    // a defect at once (the IIP route stays with the IIP server).
    let stopped = false
    const stopping = new StreamFailed({ message: "the rpc server is not taking requests" })
    yield* Effect.addFinalizer(() =>
      Effect.sync(() => {
        stopped = true
        for (const [id, exchange] of [...exchanges]) {
          forget(id, exchange)
          exchange.answer?.(refusal(exchange.parser, stopping))
          exchange.answer = undefined
          if (exchange.queue !== undefined) Queue.shutdownUnsafe(exchange.queue)
        }
      })
    )
    // A refusal's defect goes through the serialization's defect codec, as the RPC server's own
    // defects do: SchemaBinary's message schema takes it encoded (as a string it threw).
    const encodeDefect = Schema.encodeSync(serialization.codecFor(Schema.Defect()))
    const refusal = (parser: RpcSerialization.Parser, error: StreamFailed): Uint8Array =>
      frame(parser.encode(RpcMessage.ResponseDefectEncoded(encodeDefect(error.message))) ?? "")
    /** One IIP request to the RPC path: an exchange whose answer `resolve` settles, once. */
    const serveRequest = (request: IncomingRequest, resolve: (outcome: Outcome) => void): void => {
      const cancel = request.context.cancel
      if (cancel.aborted) return resolve(noAnswer)
      const parser = parserFor()
      if (stopped) return resolve(refusal(parser, stopping))
      const id = nextClientId++
      const exchange: Exchange = {
        parser,
        answer: resolve,
        queue: undefined,
        cancel,
        onCancel: () => {
          if (exchanges.get(id) !== exchange) return
          forget(id, exchange)
          exchange.answer?.(noAnswer)
          exchange.answer = undefined
          if (exchange.queue !== undefined) Queue.shutdownUnsafe(exchange.queue)
          // The RPC server interrupts the client's handler fibers (their finalizers run).
          Queue.offerUnsafe(disconnects, id)
        }
      }
      const stream = request.context.stream
      if (stream === undefined) {
        // The whole request in hand (most RPCs): decoded with plain loops, no Stream.
        let messages: ReadonlyArray<unknown>
        try {
          messages = decodeWhole(request.data, decode, parser, max)
        } catch (cause) {
          if (cause instanceof StreamFailed) return resolve(refusal(parser, cause))
          return resolve(refusal(parser, new StreamFailed({ message: `undecodable rpc message: ${String(cause)}` })))
        }
        const problem = requestProblem(messages)
        if (problem !== undefined) return resolve(refusal(parser, new StreamFailed({ message: problem })))
        exchanges.set(id, exchange)
        cancel.addEventListener("abort", exchange.onCancel)
        runFork(writeOne(id, messages[0]))
        return
      }
      exchanges.set(id, exchange)
      cancel.addEventListener("abort", exchange.onCancel)
      // A streamed request body (a large Request): its message goes to the RPC server once the
      // body has ended whole, so a body that turns out not to be one Request (a second message, an
      // unfinished frame) starts nothing; the fiber reading it stops with the request (cancel,
      // deadline, connection close).
      let seen = 0
      let message: unknown
      const reading = runFork(
        decodeFrames(fromIncoming(stream, (error) => new StreamFailed({ message: String(error) })), decode, parser, max).pipe(
          // One Request (requestProblem): one message, and nothing after it.
          Stream.runForEach((next) => {
            const problem = seen++ === 0 ? requestProblem([next]) : notOneRequest
            if (problem !== undefined) return Effect.fail(new StreamFailed({ message: problem }))
            message = next
            return Effect.void
          }),
          Effect.andThen(Effect.suspend(() => (seen === 0 ? Effect.fail(new StreamFailed({ message: notOneRequest })) : writeOne(id, message)))),
          // Refused, or its answer (when it has begun) ended: the RPC server forgets the client
          // either way, so nothing it started outlives the exchange.
          Effect.catch((error) =>
            Effect.sync(() => {
              if (exchanges.get(id) !== exchange) return
              exchange.answer?.(refusal(parser, error))
              exchange.answer = undefined
              exchange.onCancel()
            })
          )
        )
      )
      cancel.addEventListener("abort", () => reading.interruptUnsafe())
    }
    // The answer goes back as it is when the RPC ended within the call, else as a PendingOutcome
    // (settled by the RPC's Exit), not a promise: no promise chain per request between the
    // handler fiber and the IIP session.
    server.core.handle(options.path ?? defaultPath, (request) => {
      let pending: PendingOutcome | undefined
      let answered: Outcome | undefined
      serveRequest(request, (outcome) => {
        if (pending === undefined) answered ??= outcome
        else pending.settle(outcome)
      })
      if (answered !== undefined) return answered
      pending = new PendingOutcome()
      return pending
    })
    return protocol
  })

/** `makeServerProtocol` as a layer (needs an IipServer and an RpcSerialization). */
export const layerServerProtocol = (options: RpcOverIipOptions = {}): Layer.Layer<RpcServer.Protocol, never, IipServer | RpcSerialization.RpcSerialization> =>
  Layer.effect(RpcServer.Protocol, makeServerProtocol(options))
