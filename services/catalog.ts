// Demo service "catalog": the products on sale, as an Effect RPC service (CatalogRpcs in
// catalogRpcs.ts) served over HTTP at /rpc with NDJSON, so its sidecar carries the storefront's
// calls like any HTTP request; GET /products (and /products/ID) stay for curl, in plain JSON.
// With PRICES_FROM (the local demo: `pricing`) it prices its list through its own sidecar with
// the caller's context: the RPC handler reads the HTTP request's headers (effect/rpc's HTTP
// protocol puts them in front of the RPC's own) and passes traceparent, baggage and x-canary on,
// so a request crosses three sidecars (storefront -> catalog -> pricing) in one trace and a canary
// (the baggage the storefront's sidecar set) follows it to pricing v2. HttpMiddleware.tracer
// continues the sidecar's trace (the RPC's own spans are not exported by this demo app).
// Knows nothing of the mesh. Prints the "listening" line as the other services (serve.ts) do, and
// stops on SIGTERM/SIGINT or when stdin closes.
// Deep imports, not the barrels: the app's resident memory stays within its pod's limit.
import * as NodeHttpServer from "@effect/platform-node/NodeHttpServer"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import * as HttpMiddleware from "effect/http/HttpMiddleware"
import * as HttpRouter from "effect/http/HttpRouter"
import * as HttpServer from "effect/http/HttpServer"
import * as HttpServerRequest from "effect/http/HttpServerRequest"
import * as HttpServerResponse from "effect/http/HttpServerResponse"
import * as Layer from "effect/Layer"
import * as RpcSerialization from "effect/rpc/RpcSerialization"
import * as RpcServer from "effect/rpc/RpcServer"
import * as Schema from "effect/Schema"
import * as Stream from "effect/Stream"
import * as http from "node:http"
import { CatalogRpcs, catalogRpcPath, PricedProduct, PricingFailed, Product, ProductNotFound, Served } from "./catalogRpcs.ts"
import { callService, contextOf, followStdin, type IncomingHeaders, version } from "./serve.ts"

const served = new Served({ instance: process.env.INSTANCE ?? "catalog", version })
const pricesFrom = process.env.PRICES_FROM

const products = [
  new Product({ id: 1, name: "Espresso cup", category: "kitchen" }),
  new Product({ id: 2, name: "Linen towel", category: "kitchen" }),
  new Product({ id: 3, name: "Desk lamp", category: "office" }),
  new Product({ id: 4, name: "Notebook", category: "office" })
]

/** What pricing answers (services/pricing.ts), checked: a bad answer is a PricingFailed, not a crash. */
const Prices = Schema.Struct({ instance: Schema.String, version: Schema.String, prices: Schema.Record(Schema.String, Schema.Number) })
const decodePrices = Schema.decodeUnknownEffect(Prices)

/**
 * The products priced through pricing, the call carrying the context of the request `headers` came
 * with (trace, baggage, x-canary, deadline), as an instrumented app's does; unpriced without
 * PRICES_FROM.
 */
const priced = (headers: IncomingHeaders): Effect.Effect<ReadonlyArray<PricedProduct>, PricingFailed> => {
  if (pricesFrom === undefined) return Effect.succeed(products.map((product) => new PricedProduct({ product, price: null, catalog: served, pricing: null })))
  const path = `/prices?ids=${products.map((p) => p.id).join(",")}`
  return Effect.tryPromise({
    try: () => callService(pricesFrom, path, contextOf(headers)),
    catch: (error) => new PricingFailed({ message: error instanceof Error ? error.message : String(error) })
  }).pipe(
    Effect.flatMap((answer) => Effect.mapError(decodePrices(answer), (error) => new PricingFailed({ message: `${pricesFrom}${path}: ${error.message}` }))),
    Effect.map(({ instance, prices, version }) => {
      const pricing = new Served({ instance, version })
      return products.map((product) => new PricedProduct({ product, price: prices[product.id] ?? null, catalog: served, pricing }))
    })
  )
}

const handlers = CatalogRpcs.toLayer({
  ListProducts: () => Effect.succeed(products),
  GetProduct: ({ id }) => {
    const product = products.find((p) => p.id === id)
    return product === undefined ? Effect.fail(new ProductNotFound({ id })) : Effect.succeed(product)
  },
  StreamProducts: ({ category }, { headers }) =>
    Stream.unwrap(Effect.map(priced(headers), (list) => Stream.fromIterable(category === undefined ? list : list.filter((p) => p.product.category === category))))
})

const Rpcs = RpcServer.layerHttp({ group: CatalogRpcs, path: catalogRpcPath, protocol: "http" }).pipe(Layer.provide([handlers, RpcSerialization.layerNdjson]))

/** GET /products for curl: the list as before (priced, with who served it, when catalog prices). */
const listProducts = Effect.gen(function*() {
  const request = yield* HttpServerRequest.HttpServerRequest
  if (pricesFrom === undefined) return HttpServerResponse.jsonUnsafe(products)
  return yield* priced(request.headers).pipe(
    Effect.map((list) =>
      HttpServerResponse.jsonUnsafe({
        catalog: served,
        pricing: list[0]?.pricing ?? null,
        products: list.map(({ price, product }) => ({ id: product.id, name: product.name, category: product.category, price }))
      })
    ),
    Effect.catchTag("PricingFailed", (error) => Effect.succeed(HttpServerResponse.jsonUnsafe({ error: error.message }, { status: 502 })))
  )
})

const getProduct = Effect.gen(function*() {
  const { id } = yield* HttpRouter.params
  const product = products.find((p) => String(p.id) === id)
  return product === undefined ? HttpServerResponse.jsonUnsafe({ error: "no such product" }, { status: 404 }) : HttpServerResponse.jsonUnsafe(product)
})

const Rest = Layer.mergeAll(HttpRouter.add("GET", "/products", listProducts), HttpRouter.add("GET", "/products/:id", getProduct))

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
followStdin(stop)
