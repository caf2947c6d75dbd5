// `iip-mesh echo-server --listen HOST:PORT`: the reference's example echo server (`/echo`,
// `/echo_benchmark`), for trying the CLI and for the Go interop checks. Runs until interrupted.
import * as Console from "effect/Console"
import * as Effect from "effect/Effect"
import { Command, Flag } from "effect/cli"
import * as Server from "../iip/server.ts"
import { parseHostPort, parseWith } from "./args.ts"

const listen = Flag.String("listen").pipe(
  Flag.withDescription("address to listen on, HOST:PORT; port 0 picks a free port"),
  Flag.withDefault("127.0.0.1:0")
)

export const echoServer = Command.make("echo-server", { listen }, ({ listen }) =>
  Effect.gen(function*() {
    const { host, port } = yield* parseWith(() => parseHostPort(listen))
    const server = yield* Server.make({ host, port })
    server.handle("/echo", (request) => request.data).handle("/echo_benchmark", (request) => request.data)
    const address = server.address
    yield* Console.log(`iip-mesh echo-server listening on ${address.host}:${address.port}`)
    return yield* Effect.never
  }).pipe(Effect.scoped)
).pipe(Command.withDescription("Run an IIP echo server (/echo and /echo_benchmark return the request data)"))
