// Seeded fuzzing of the MessagePack rpc serialization (src/effect/msgpack.ts) and of the RPC server
// behind it (src/effect/rpc.ts): thousands of frames from a fixed seed, each random bytes, a
// valid message mutated (bytes flipped, cut, inserted, a length header lied about) or a random
// MessagePack value built token by token (deep nesting, huge declared lengths, extension types,
// `__proto__` and `constructor` keys, non-string keys). The seed is printed in every failure, so
// a failing frame is reproduced by running the same test again.
// - Decoder: every frame either decodes to rpc messages (objects with a string `_tag`, every
//   object in them with the prototype it should have) or throws an Error; Object.prototype gains
//   nothing.
// - Over IIP (real sockets, plain and mesh): a thousand of those frames sent to one RPC server,
//   one after another, each answered (a Defect, or the Exit of a well-formed request); the same
//   server then answers a method it does not have with a failed Exit naming it, and a well-formed
//   Echo.
import { assert, describe, expect, it } from "@effect/vitest"
import { Context, Effect, Layer } from "effect"
import { pack } from "msgpackr"
import { IipClient } from "../../src/effect/client.ts"
import { maxMessagePackDepth, msgPack } from "../../src/effect/msgpack.ts"
import { framed, quiet, serveEcho } from "../support/echoRpcServer.ts"

/** mulberry32: a small seeded PRNG, so every run sends the same frames. */
const prng = (seed: number) => {
  let state = seed >>> 0
  return (): number => {
    state = (state + 0x6d2b79f5) >>> 0
    let t = state
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

type Random = () => number
const below = (random: Random, n: number) => Math.floor(random() * n)
const pick = <A>(random: Random, items: ReadonlyArray<A>): A => items[below(random, items.length)]!

const keys = ["_tag", "id", "tag", "payload", "headers", "text", "__proto__", "constructor", "prototype", "toString", "polluted", "requestId", "exit"]
const tags = ["Request", "Ack", "Interrupt", "Eof", "Ping", "Exit", "Chunk", "Defect", ""]
const u32 = (n: number) => [(n >>> 24) & 0xff, (n >>> 16) & 0xff, (n >>> 8) & 0xff, n & 0xff]

/** One random MessagePack value, token by token, sometimes lying about a length or count. */
const randomValue = (random: Random, out: Array<number>, depth: number): void => {
  const roll = below(random, depth > 6 ? 10 : 16)
  switch (roll) {
    case 0: out.push(pick(random, [0xc0, 0xc2, 0xc3, 0x00, 0x7f, 0xe0, 0xff])); return
    case 1: out.push(pick(random, [0xcc, 0xd0]), below(random, 256)); return
    case 2: out.push(pick(random, [0xcf, 0xd3, 0xcb]), ...Array.from({ length: 8 }, () => below(random, 256))); return
    case 3: out.push(...pack(pick(random, keys))); return
    case 4: out.push(...pack(pick(random, tags))); return
    case 5: out.push(0xc4, 3, 1, 2, 3); return
    // An extension: the two msgpackr forms a frame may hold (undefined, a timestamp) or any other.
    case 6: out.push(...pick(random, [[0xd4, 0, 0], [0xd4, 0xff, 7], [0xd6, 0xff, 0, 0, 0, 1], [0xd6, 0x69, 0, 0, 0, 1], [0xd4, 0x72, 0x40], [0xc7, 1, 0x73, 0], [0xc1]])); return
    // A declared length or count far past the frame's end.
    case 7: out.push(pick(random, [0xc6, 0xdb, 0xdd, 0xdf]), ...u32(below(random, 2) === 0 ? 0xffffffff : 1 + below(random, 1 << 20))); return
    // Deep nesting, past the bound or just within it.
    case 8: {
      const levels = pick(random, [maxMessagePackDepth - 2, maxMessagePackDepth + 1, 20_000])
      for (let i = 0; i < levels; i++) out.push(0x91)
      out.push(0xc0)
      return
    }
    case 9: out.push(0xd9, 200, ...new Array(below(random, 250)).fill(0x61)); return
    default: {
      const count = below(random, 5)
      if (below(random, 2) === 0) {
        out.push(0x90 | count)
        for (let i = 0; i < count; i++) randomValue(random, out, depth + 1)
      } else {
        out.push(0x80 | count)
        for (let i = 0; i < count; i++) {
          if (below(random, 4) === 0) randomValue(random, out, depth + 1)
          else out.push(...pack(pick(random, keys)))
          randomValue(random, out, depth + 1)
        }
      }
    }
  }
}

const wellFormed = [
  { _tag: "Request", id: "1", tag: "Echo", payload: { text: "x" }, headers: [["a", "b"]] },
  { _tag: "Request", id: 7, tag: "Echo", payload: { text: "é".repeat(40) }, headers: [] },
  [{ _tag: "Ack", requestId: "1" }, { _tag: "Interrupt", requestId: "1" }],
  { _tag: "Exit", requestId: "1", exit: { _tag: "Success", value: [new Date(0), null, 1.5, -3, 2 ** 40] } }
].map((message) => Uint8Array.from(pack(message)))

/** A valid message with a few bytes flipped, cut, inserted, or a length byte raised. */
const mutated = (random: Random): Uint8Array => {
  let bytes = Array.from(pick(random, wellFormed))
  for (let n = 1 + below(random, 4); n > 0 && bytes.length > 0; n--) {
    const at = below(random, bytes.length)
    const op = below(random, 4)
    if (op === 0) bytes[at] = below(random, 256)
    else if (op === 1) bytes = bytes.slice(0, at)
    else if (op === 2) bytes.splice(at, 0, below(random, 256))
    else bytes[at] = (bytes[at]! | 0x0f) & 0xff
  }
  return Uint8Array.from(bytes)
}

/** Frame `i` of the run: random bytes, a mutated message, or a random value (a third each). */
const frameFrom = (random: Random): Uint8Array => {
  const kind = below(random, 3)
  if (kind === 0) return Uint8Array.from({ length: below(random, 64) }, () => below(random, 256))
  if (kind === 1) return mutated(random)
  const out: Array<number> = []
  if (below(random, 2) === 0) {
    // An envelope around the random value, so it gets past the `_tag` check and into the server.
    out.push(0x85, ...pack("_tag"), ...pack("Request"), ...pack("id"), ...pack("1"), ...pack("tag"), ...pack("Echo"), ...pack("headers"), 0x90, ...pack("payload"))
  }
  randomValue(random, out, 0)
  return Uint8Array.from(out)
}

const prototypes = new Set<unknown>([Object.prototype, Array.prototype, Date.prototype, Buffer.prototype, Uint8Array.prototype])

/** Every object in `value` has one of the prototypes a decoder builds; none was replaced. */
const prototypesIntact = (value: unknown): boolean => {
  const stack: Array<unknown> = [value]
  while (stack.length > 0) {
    const item = stack.pop()
    if (typeof item !== "object" || item === null) continue
    if (!prototypes.has(Object.getPrototypeOf(item))) return false
    if (Array.isArray(item)) stack.push(...item)
    else if (Object.getPrototypeOf(item) === Object.prototype) stack.push(...Object.values(item))
  }
  return true
}

const seed = 0x1e1f2
const decoderFrames = 5_000

describe("MessagePack rpc serialization, fuzzed (seed 0x1e1f2)", () => {
  it("every frame decodes to rpc messages or throws an Error; no prototype is replaced or polluted", () => {
    const random = prng(seed)
    const parser = msgPack.makeUnsafe()
    const prototypeKeys = Object.getOwnPropertyNames(Object.prototype).length
    let decoded = 0
    let refused = 0
    for (let i = 0; i < decoderFrames; i++) {
      const frame = frameFrom(random)
      let messages: ReadonlyArray<unknown>
      try {
        messages = parser.decode(frame)
      } catch (error) {
        assert.instanceOf(error, Error, `frame ${i} (${Buffer.from(frame).toString("hex").slice(0, 200)})`)
        refused++
        continue
      }
      decoded++
      for (const message of messages) {
        assert.isTrue(typeof message === "object" && message !== null && typeof (message as { _tag?: unknown })._tag === "string", `frame ${i}`)
      }
      assert.isTrue(prototypesIntact(messages), `frame ${i} (${Buffer.from(frame).toString("hex").slice(0, 200)}) decoded with a replaced prototype`)
    }
    assert.strictEqual(Object.getOwnPropertyNames(Object.prototype).length, prototypeKeys)
    assert.isUndefined(({} as { polluted?: unknown }).polluted)
    // The run exercised both sides: some frames decode, most are refused.
    expect(decoded).toBeGreaterThan(decoderFrames / 50)
    expect(refused).toBeGreaterThan(decoderFrames / 2)
  })
})

const serverFrames = 1_000

describe.each([false, true])("an RPC server over IIP fed fuzzed MessagePack frames (mesh %s, seed 0x1e1f2)", (mesh) => {
  it.live(`answers each of ${serverFrames} frames and then serves a well-formed Echo`, () =>
    Effect.gen(function*() {
      const port = yield* serveEcho
      const iip = Context.get(yield* Layer.build(IipClient.layer({ host: "127.0.0.1", port, requestTimeoutMs: 30_000, mesh, ...quiet })), IipClient)
      const parser = msgPack.makeUnsafe()
      const random = prng(seed + (mesh ? 1 : 0))
      const answered = new Map<string, number>()
      for (let i = 0; i < serverFrames; i++) {
        const frame = frameFrom(random)
        const answer = yield* iip.request("/rpc", framed(frame))
        assert.strictEqual(answer.readUInt32BE(0), answer.length - 4, `frame ${i} (${Buffer.from(frame).toString("hex").slice(0, 200)})`)
        const [message] = parser.decode(answer.subarray(4)) as ReadonlyArray<{ readonly _tag: string }>
        answered.set(message!._tag, (answered.get(message!._tag) ?? 0) + 1)
      }
      expect(answered.get("Defect")).toBeGreaterThan(serverFrames / 2)
      // A method the server does not have is answered too, and names the method.
      const unknown = yield* iip.request("/rpc", framed(Uint8Array.from(pack({ _tag: "Request", id: "2", tag: "NoSuchMethod", payload: {}, headers: [] }))))
      const [refusal] = parser.decode(unknown.subarray(4))
      expect(refusal).toMatchObject({ _tag: "Exit", requestId: "2", exit: { _tag: "Failure", cause: [{ _tag: "Die", defect: expect.stringMatching(/NoSuchMethod/) }] } })
      const answer = yield* iip.request("/rpc", framed(wellFormed[0]!))
      const [exit] = parser.decode(answer.subarray(4)) as ReadonlyArray<{ readonly exit: unknown }>
      assert.deepStrictEqual(exit!.exit, { _tag: "Success", value: "x" })
    }), 120_000)
})
