// A complete Effect program on iip-mesh: an IIP server and client as layers, a plain Effect route
// whose requirement (Greeter) the layer provides, a streamed call, and an Effect RPC group (unary,
// streaming, failing) served and called over IIP mesh mode. Run it: `node examples/effectRpc.ts`
// (test/effect/examples.test.ts does, and checks what it prints).
import { Context, Effect, Layer, Schema, Stream } from "effect"
import { Rpc, RpcClient, RpcGroup, RpcSerialization, RpcServer } from "effect/rpc"
import { IipClient } from "../src/effect/client.ts"
import { layerClientProtocol, layerServerProtocol } from "../src/effect/rpc.ts"
import { IipServer } from "../src/effect/server.ts"

// --- The contract: an RpcGroup with Schema-typed payloads, successes and errors -------------------
class UnknownCity extends Schema.TaggedError<UnknownCity>()("UnknownCity", { city: Schema.String }) {}

class WeatherRpcs extends RpcGroup.make(
  Rpc.make("Temperature", { payload: { city: Schema.String }, success: Schema.Number, error: UnknownCity }),
  Rpc.make("Forecast", { payload: { city: Schema.String, days: Schema.Int }, success: Schema.Number, stream: true })
) {}

const temperatures: Record<string, number> = { paris: 14, oslo: 3 }

const WeatherHandlers = WeatherRpcs.toLayer({
  Temperature: ({ city }) => (city in temperatures ? Effect.succeed(temperatures[city]!) : Effect.fail(new UnknownCity({ city }))),
  Forecast: ({ city, days }) => Stream.range(1, days).pipe(Stream.map((day) => (temperatures[city] ?? 0) + day))
})

// --- A plain IIP route as an Effect, its requirement provided by the layer that adds it ----------
class Greeter extends Context.Service<Greeter, { readonly greet: (name: string) => string }>()("example/Greeter") {
  static readonly layer = Layer.succeed(Greeter, { greet: (name) => `hello ${name}` })
}

const Routes = IipServer.routes((server) =>
  Effect.all([
    server.handle("/greet", (request) => Greeter.use((g) => Effect.succeed(g.greet(request.data.toString())))),
    server.handleStream("/upper", (_request, body) => body.pipe(Stream.map((chunk) => Buffer.from(Buffer.from(chunk).toString().toUpperCase()))))
  ])
).pipe(Layer.provide(Greeter.layer))

// --- The server side: IIP server, routes, RPC server over IIP --------------------------------------
const ServerLive = Layer.mergeAll(
  Routes,
  RpcServer.layer(WeatherRpcs).pipe(Layer.provide([WeatherHandlers, layerServerProtocol()]))
).pipe(Layer.provideMerge(IipServer.layer({ host: "127.0.0.1", port: 0 })), Layer.provide(RpcSerialization.layerNdjson))

// --- The client side, given the server's port --------------------------------------------------------
const ClientLive = (port: number) =>
  layerClientProtocol().pipe(
    Layer.provideMerge(IipClient.layer({ host: "127.0.0.1", port })),
    Layer.provide(RpcSerialization.layerNdjson)
  )

const program = Effect.gen(function*() {
  const { port } = (yield* IipServer).address
  const clientContext = yield* Layer.build(ClientLive(port))
  const iip = Context.get(clientContext, IipClient)
  const weather = yield* RpcClient.make(WeatherRpcs).pipe(Effect.provide(clientContext))

  const greeting = yield* iip.request("/greet", "effect", { deadline: "1 second" })
  yield* Effect.log(`greet: ${greeting.toString()}`)

  const upper = yield* iip.stream("/upper", Stream.make(Buffer.from("streamed "), Buffer.from("both ways"))).pipe(
    Stream.decodeText,
    Stream.mkString
  )
  yield* Effect.log(`upper: ${upper}`)

  yield* Effect.log(`temperature paris: ${yield* weather.Temperature({ city: "paris" })}`)
  const forecast = yield* Stream.runCollect(weather.Forecast({ city: "oslo", days: 3 }))
  yield* Effect.log(`forecast oslo: ${forecast.join(",")}`)
  const failed = yield* Effect.flip(weather.Temperature({ city: "atlantis" }))
  yield* Effect.log(`temperature atlantis: ${failed._tag} ${failed instanceof UnknownCity ? failed.city : ""}`)
})

// The client (built in the program's scope) closes before the server (provided around it).
Effect.runPromise(program.pipe(Effect.scoped, Effect.provide(ServerLive))).then(
  () => process.exit(0),
  (error: unknown) => {
    console.error(error)
    process.exit(1)
  }
)
