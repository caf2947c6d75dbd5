// An Effect RPC server with one method, Echo, on a real IIP server (127.0.0.1, port 0), speaking
// MessagePack (src/effect/msgpack.ts, rpc.ts), for the tests that send it raw frames: how one
// message is framed for the IIP RPC protocols, and the server stood up in the current scope.
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Schema from "effect/Schema"
import { Rpc, RpcGroup, RpcServer } from "effect/rpc"
import { layerMsgPack } from "../../src/effect/msgpack.ts"
import { layerServerProtocol } from "../../src/effect/rpc.ts"
import { IipServer } from "../../src/effect/server.ts"

export class EchoRpcs extends RpcGroup.make(Rpc.make("Echo", { payload: { text: Schema.String }, success: Schema.String })) {}

export const quiet = { log: () => {} }

/** One message as the IIP RPC protocols frame it: a 4-byte big-endian length, then the message. */
export const framed = (message: Uint8Array): Uint8Array => {
  const out = Buffer.alloc(4 + message.length)
  out.writeUInt32BE(message.length, 0)
  out.set(message, 4)
  return out
}

/** The Echo RPC server over MessagePack, in the current scope; its IIP port. */
export const serveEcho = Effect.gen(function*() {
  const server = yield* Layer.build(IipServer.layer({ host: "127.0.0.1", port: 0, ...quiet }))
  yield* Layer.build(
    RpcServer.layer(EchoRpcs).pipe(
      Layer.provide([EchoRpcs.toLayer({ Echo: ({ text }) => Effect.succeed(text) }), layerServerProtocol()]),
      Layer.provide([Layer.succeedContext(server), layerMsgPack])
    )
  )
  return Context.get(server, IipServer).address.port
})
