// Demo service "catalog": the products on sale, as an Effect RPC service (CatalogRpcs in
// catalogRpcs.ts) served over HTTP at /rpc with NDJSON, so its sidecar carries the storefront's
// calls like any HTTP request; GET /products stays for curl. HttpMiddleware.tracer continues the
// trace the sidecar's traceparent carries (the RPC's own spans are not exported by this demo app).
// Knows nothing of the mesh. Prints the "listening" line as the other services (serve.ts) do, and
// stops on SIGTERM/SIGINT or when stdin closes.
// Deep imports, not the barrels: the app's resident memory stays within its pod's limit.
import * as NodeHttpServer from "@effect/platform-node/NodeHttpServer"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import * as HttpMiddleware from "effect/http/HttpMiddleware"
import * as HttpRouter from "effect/http/HttpRouter"
import * as HttpServer from "effect/http/HttpServer"
import * as HttpServerResponse from "effect/http/HttpServerResponse"
import * as Layer from "effect/Layer"
import * as RpcSerialization from "effect/rpc/RpcSerialization"
import * as RpcServer from "effect/rpc/RpcServer"
import * as Stream from "effect/Stream"
import * as http from "node:http"
import { CatalogRpcs, catalogRpcPath, Product, ProductNotFound } from "./catalogRpcs.ts"

const products = [
  new Product({ id: 1, name: "Espresso cup", category: "kitchen" }),
  new Product({ id: 2, name: "Linen towel", category: "kitchen" }),
  new Product({ id: 3, name: "Desk lamp", category: "office" }),
  new Product({ id: 4, name: "Notebook", category: "office" })
]

const handlers = CatalogRpcs.toLayer({
  ListProducts: () => Effect.succeed(products),
  GetProduct: ({ id }) => {
    const product = products.find((p) => p.id === id)
    return product === undefined ? Effect.fail(new ProductNotFound({ id })) : Effect.succeed(product)
  },
  StreamProducts: ({ category }) => Stream.fromIterable(category === undefined ? products : products.filter((p) => p.category === category))
})

const Rpcs = RpcServer.layerHttp({ group: CatalogRpcs, path: catalogRpcPath, protocol: "http" }).pipe(Layer.provide([handlers, RpcSerialization.layerNdjson]))
const Rest = HttpRouter.add("GET", "/products", HttpServerResponse.jsonUnsafe(products))

const Listening = Layer.effectDiscard(
  Effect.gen(function*() {
    const address = (yield* HttpServer.HttpServer).address
    const port = "port" in address ? address.port : 0
    process.stdout.write(`${JSON.stringify({ event: "listening", service: "catalog", port })}\n`)
  })
)

const App = HttpRouter.serve(Layer.mergeAll(Rpcs, Rest), { disableLogger: true, disableListenLog: true, middleware: HttpMiddleware.tracer }).pipe(
  Layer.merge(Listening),
  Layer.provide(NodeHttpServer.layer(http.createServer, { host: process.env.HOST ?? "127.0.0.1", port: Number(process.env.PORT ?? 0) }))
)

const running = Effect.runFork(Layer.launch(App))
running.addObserver((exit) => {
  if (exit._tag === "Failure" && !exit.cause.reasons.every((r) => r._tag === "Interrupt")) {
    process.stderr.write(`catalog: ${String(exit.cause)}\n`)
    process.exit(1)
  }
})
const stop = () => void Effect.runPromise(Fiber.interrupt(running)).then(() => process.exit(0))
process.once("SIGTERM", stop)
process.once("SIGINT", stop)
if (process.env.EXIT_WITH_STDIN === "1") {
  process.stdin.once("end", stop)
  process.stdin.resume()
}
