// The RPC protocols' limits (src/effect/rpc.ts) checked once, when the protocol is built
// (src/iip/optionLimits.ts): a maxFrameBytes, maxRequestValues, maxObjectKeys, maxDistinctKeys or maxObjectShapes of
// NaN switched the frame size limit or the pre-decode value, key, name or shape count off (every check is
// `x > limit`); Infinity, 0, negatives, fractions, frame sizes a 4-byte length cannot state and
// more names or shapes than a table holds (2^20) are refused too. Building the protocol
// dies with OptionInvalid naming the option and the value. Real TCP on 127.0.0.1, port 0.
import { assert, describe, it } from "@effect/vitest"
import { Cause, Context, Effect, Exit, Layer } from "effect"
import { RpcSerialization } from "effect/rpc"
import { IipClient } from "../../src/effect/client.ts"
import { layerClientProtocol, layerServerProtocol, type RpcOverIipOptions } from "../../src/effect/rpc.ts"
import { IipServer } from "../../src/effect/server.ts"
import { OptionInvalid } from "../../src/iip/optionLimits.ts"

const quiet = { log: () => {} }

const refused: ReadonlyArray<[keyof RpcOverIipOptions, number]> = [
  ["maxFrameBytes", NaN],
  ["maxFrameBytes", Infinity],
  ["maxFrameBytes", 0],
  ["maxFrameBytes", -1],
  ["maxFrameBytes", 1.5],
  ["maxFrameBytes", 2 ** 32],
  ["maxRequestValues", NaN],
  ["maxRequestValues", Infinity],
  ["maxRequestValues", 0],
  ["maxObjectKeys", NaN],
  ["maxObjectKeys", -1],
  ["maxObjectKeys", 0],
  ["maxObjectKeys", 2.5],
  ["maxDistinctKeys", NaN],
  ["maxDistinctKeys", Infinity],
  ["maxDistinctKeys", 0],
  ["maxDistinctKeys", 2.5],
  ["maxDistinctKeys", 2 ** 20 + 1],
  ["maxObjectShapes", NaN],
  ["maxObjectShapes", Infinity],
  ["maxObjectShapes", 0],
  ["maxObjectShapes", 2.5],
  ["maxObjectShapes", 2 ** 20 + 1]
]

/** The defect building `layer` died with; asserts it died, and failed with nothing typed. */
const defectOf = <A, E>(layer: Layer.Layer<A, E>) =>
  Effect.gen(function*() {
    const exit = yield* Effect.exit(Layer.build(layer))
    assert.isTrue(Exit.isFailure(exit))
    const reasons = Exit.isFailure(exit) ? exit.cause.reasons : []
    assert.isFalse(reasons.some(Cause.isFailReason))
    return reasons.find(Cause.isDieReason)?.defect
  })

describe("RPC over IIP options", () => {
  it.live("a server protocol and a client protocol with a limit out of range die with OptionInvalid when built", () =>
    Effect.scoped(Effect.gen(function*() {
      const server = yield* Layer.build(IipServer.layer({ host: "127.0.0.1", port: 0, ...quiet }))
      const port = Context.get(server, IipServer).address.port
      const client = IipClient.layer({ host: "127.0.0.1", port, requestTimeoutMs: 0, ...quiet })
      for (const [option, value] of refused) {
        const options = { [option]: value }
        const served = yield* defectOf(layerServerProtocol(options).pipe(Layer.provide([Layer.succeedContext(server), RpcSerialization.layerNdjson])))
        assert.instanceOf(served, OptionInvalid)
        assert.strictEqual((served as OptionInvalid).option, `RPC over IIP ${option}`)
        assert.isTrue(Object.is((served as OptionInvalid).value, value))
        if (option === "maxRequestValues" || option === "maxObjectKeys" || option === "maxDistinctKeys" || option === "maxObjectShapes") continue // the server's only
        const called = yield* defectOf(layerClientProtocol(options).pipe(Layer.provide([client, RpcSerialization.layerNdjson])))
        assert.strictEqual((called as OptionInvalid).option, `RPC over IIP ${option}`)
      }
      // In range, they build.
      yield* Layer.build(layerServerProtocol({ maxFrameBytes: 2 ** 32 - 1, maxRequestValues: 1, maxObjectKeys: 1, maxDistinctKeys: 2 ** 20, maxObjectShapes: 2 ** 20 }).pipe(Layer.provide([Layer.succeedContext(server), RpcSerialization.layerNdjson])))
    })))
})
