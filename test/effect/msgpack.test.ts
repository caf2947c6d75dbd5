// MessagePack as an RpcSerialization (src/effect/msgpack.ts).
// - A message and an array of messages round-trip; an empty batch encodes to nothing; the Dates
//   msgpackr packs (timestamps, a Schema.Any value's) are read back.
// - A frame that is not an rpc message (a bare number, a map without _tag, truncated bytes)
//   throws a clear error instead of handing the RPC server garbage.
// - Over IIP (real sockets): a request whose frame is garbage gets a Defect answer naming the
//   problem, and the same RPC server answers the next, well-formed request.
import { assert, describe, expect, it } from "@effect/vitest"
import { Context, Effect, Layer } from "effect"
import { RpcClient } from "effect/rpc"
import { pack } from "msgpackr"
import { IipClient } from "../../src/effect/client.ts"
import { layerMsgPack, msgPack } from "../../src/effect/msgpack.ts"
import { layerClientProtocol } from "../../src/effect/rpc.ts"
import { EchoRpcs, framed, quiet, serveEcho } from "../support/echoRpcServer.ts"

describe("MessagePack RpcSerialization", () => {
  it("round-trips a message and a batch; an empty batch encodes to nothing", () => {
    const parser = msgPack.makeUnsafe()
    const request = { _tag: "Request", id: "1", tag: "Echo", payload: { text: "é", n: 2 ** 40, f: 0.5 }, headers: [["a", "b"]] }
    assert.deepStrictEqual(parser.decode(parser.encode(request)!), [request])
    const exit = { _tag: "Exit", requestId: "1", exit: { _tag: "Success", value: null } }
    assert.deepStrictEqual(parser.decode(parser.encode([request, exit])!), [request, exit])
    assert.strictEqual(parser.encode([]), undefined)
    assert.strictEqual(msgPack.includesFraming, false)
  })

  it("reads the Dates it packs (a Schema.Any value keeps them as Dates): msgpackr's timestamps in all four forms", () => {
    const parser = msgPack.makeUnsafe()
    const dates = [new Date(0), new Date(1500), new Date(-1000), new Date(Number.NaN)]
    const exit = { _tag: "Exit", requestId: "1", exit: { _tag: "Success", value: dates } }
    const bytes = parser.encode(exit) as Uint8Array
    // fixext 4, fixext 8, ext 8 of 12 bytes and fixext 1 (an invalid Date), each of type -1.
    for (const form of ["d6ff", "d7ff", "c70cff", "d4ff"]) expect(Buffer.from(bytes).toString("hex")).toContain(form)
    const [decoded] = parser.decode(bytes) as Array<typeof exit>
    assert.deepStrictEqual((decoded!.exit.value as Array<Date>).map((d) => d.getTime()), dates.map((d) => d.getTime()))
  })

  it("refuses a frame that is not an rpc message", () => {
    const parser = msgPack.makeUnsafe()
    expect(() => parser.decode(pack(42))).toThrow(/not an rpc message/)
    expect(() => parser.decode(pack({ id: "1" }))).toThrow(/not an rpc message/)
    expect(() => parser.decode(pack([{ _tag: "Eof" }, 3]))).toThrow(/other than rpc messages/)
    expect(() => parser.decode(Buffer.from([0x82, 0xa1]))).toThrow()
  })

  it.live("over IIP: a garbage frame is answered with a defect, and the server keeps serving", () =>
    Effect.gen(function*() {
      const port = yield* serveEcho
      const iip = yield* Layer.build(IipClient.layer({ host: "127.0.0.1", port, requestTimeoutMs: 5000, ...quiet }))
      const answer = yield* Context.get(iip, IipClient).request("/rpc", framed(pack({ not: "a message" })))
      assert.strictEqual(answer.readUInt32BE(0), answer.length - 4)
      const [defect] = msgPack.makeUnsafe().decode(answer.subarray(4)) as ReadonlyArray<{ _tag: string; defect: unknown }>
      assert.strictEqual(defect!._tag, "Defect")
      expect(String(defect!.defect)).toMatch(/not an rpc message/)
      const protocol = yield* Layer.build(layerClientProtocol().pipe(Layer.provide([Layer.succeedContext(iip), layerMsgPack])))
      const client = yield* RpcClient.make(EchoRpcs).pipe(Effect.provide(protocol))
      assert.strictEqual(yield* client.Echo({ text: "after" }), "after")
    })
  )
})
