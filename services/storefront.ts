// Demo service "storefront": the page a person opens. It gets its products from catalog's Effect
// RPC service (CatalogRpcs, the streaming StreamProducts) through its sidecar (the service named
// by Host), priced by pricing behind catalog (or, when catalog does not price its list, as on
// Kubernetes, by pricing called from here), and shows which instances answered, of which version,
// and the trace the page's calls belong to. A request with `x-canary: yes` (or `?canary=yes`, for
// a browser) passes that header on to its calls, where the demo's routes send it, and everything
// it leads to, to the v2 instances (locally the routes file, demo.ts; on Kubernetes the pricing
// canary's HTTPRoute). The RPC client speaks effect/rpc's HTTP protocol (NDJSON) over node:http;
// each call's HTTP request carries the page's context (x-canary, baggage, deadline) and the RPC's
// span as traceparent, a child of the page's trace context, so the sidecars' spans join that trace.
// Stock comes from inventory, a gRPC service (grpc-js over cleartext HTTP/2 to the sidecar, the
// service named by :authority); the page's live counter is a WebSocket relayed through the mesh
// to pricing (liveRelay.ts).
// Deep imports, not the barrels: the app's resident memory stays within its pod's limit.
import * as NodeHttpClient from "@effect/platform-node/NodeHttpClient"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as HttpClient from "effect/http/HttpClient"
import * as HttpClientRequest from "effect/http/HttpClientRequest"
import * as Layer from "effect/Layer"
import * as RpcClient from "effect/rpc/RpcClient"
import * as RpcSerialization from "effect/rpc/RpcSerialization"
import * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import * as Tracer from "effect/Tracer"
import * as grpc from "@grpc/grpc-js"
import type { IncomingMessage } from "node:http"
import { CatalogRpcs, catalogRpcPath, type PricedProduct } from "./catalogRpcs.ts"
import { GetStock, type StockAnswer } from "./inventoryGrpc.ts"
import { acceptLive } from "./liveRelay.ts"
import { callService, contextOf, currentSidecar, serve, traceIdOf } from "./serve.ts"

/** The page request's headers its catalog call carries, set around each call (the client is shared). */
const CallHeaders = Context.Reference<Record<string, string>>("storefront/CallHeaders", { defaultValue: () => ({}) })

/** The catalog's RPC client, made once, for the process's life. */
const catalog = Effect.runPromise(
  Effect.gen(function*() {
    // Each HTTP request goes to the sidecar, names catalog in Host and carries its call's headers;
    // the HTTP client then sets traceparent to its own span's.
    const viaSidecar = HttpClient.mapRequestEffect((request: HttpClientRequest.HttpClientRequest) =>
      Effect.map(CallHeaders, (headers) => request.pipe(HttpClientRequest.prependUrl(currentSidecar()), HttpClientRequest.setHeaders({ ...headers, host: "catalog" })))
    )
    const protocol = yield* Layer.build(
      RpcClient.layerProtocolHttp({ url: catalogRpcPath, transformClient: viaSidecar }).pipe(Layer.provide([NodeHttpClient.layerNodeHttp, RpcSerialization.layerNdjson]))
    )
    return yield* RpcClient.make(CatalogRpcs).pipe(Effect.provide(protocol))
  }).pipe(Scope.provide(Scope.makeUnsafe()))
)

/** Runs `effect` as a child of the trace context `traceparent` ("00-<trace>-<span>-<flags>") names. */
const inTrace = <A, E>(effect: Effect.Effect<A, E>, traceparent: string | undefined): Effect.Effect<A, E> => {
  const match = /^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$/.exec(traceparent ?? "")
  if (match === null) return effect
  return Effect.withParentSpan(effect, Tracer.externalSpan({ traceId: match[1]!, spanId: match[2]!, sampled: (parseInt(match[3]!, 16) & 1) === 1 }))
}

/** The gRPC channel to the sidecar, for calls to inventory (one HTTP/2 connection; the sidecar spreads its calls). */
let inventoryChannel: { readonly sidecar: string; readonly client: grpc.Client } | undefined
const inventoryClient = (): grpc.Client => {
  const sidecar = new URL(currentSidecar()).host
  if (inventoryChannel?.sidecar !== sidecar) {
    inventoryChannel?.client.close()
    inventoryChannel = { sidecar, client: new grpc.Client(sidecar, grpc.credentials.createInsecure(), { "grpc.default_authority": "inventory" }) }
  }
  return inventoryChannel.client
}

/** Stock of `ids` from inventory over gRPC, in the page's trace; an error (inventory down, deadline) is the page's to show, not a failed page. */
const stockOf = (ids: ReadonlyArray<number>, context: Record<string, string>): Promise<StockAnswer | { readonly error: string }> =>
  new Promise((resolve) => {
    const metadata = new grpc.Metadata()
    for (const [name, value] of Object.entries(context)) metadata.set(name, value)
    inventoryClient().makeUnaryRequest(GetStock.path, GetStock.requestSerialize, GetStock.responseDeserialize, { ids }, metadata, { deadline: Date.now() + 2000 }, (error, answer) =>
      resolve(error !== null ? { error: `${grpc.status[error.code] ?? error.code}: ${error.details}` } : answer ?? { error: "inventory sent no answer" }))
  })

interface Instance {
  readonly instance: string
  readonly version: string
}

const escape = (text: string) => text.replace(/[&<>"]/g, (c) => `&#${c.charCodeAt(0)};`)

const products = async (req: IncomingMessage, url: URL) => {
  // Every call in one trace: the request's context, or a new one.
  const context = contextOf(req.headers)
  const canary = req.headers["x-canary"] === "yes" || url.searchParams.get("canary") === "yes"
  const asked = canary ? { ...context, "x-canary": "yes" } : context
  const client = await catalog
  const streamed = Stream.runCollect(client.StreamProducts({}))
  const listed: ReadonlyArray<PricedProduct> = await Effect.runPromise(inTrace(Effect.provideService(streamed, CallHeaders, asked), context.traceparent))
  const traceId = traceIdOf(context)
  const catalogServed: Instance | undefined = listed[0]?.catalog
  const stock = await stockOf(listed.map(({ product }) => product.id), asked)
  const stocked = "stock" in stock ? stock.stock : {}
  const inventory = "stock" in stock ? { instance: stock.instance, version: stock.version } : stock
  const rows = listed.map(({ price, product }) => ({ id: product.id, name: product.name, category: product.category, price, stock: stocked[product.id] ?? null }))
  const pricedThere = listed[0]?.pricing
  if (pricedThere !== undefined && pricedThere !== null) return { canary, traceId, catalog: catalogServed, pricing: pricedThere, pricedBy: pricedThere.instance, inventory, products: rows }
  // Pricing it here (catalog does not, as on Kubernetes): the header goes on to pricing, where an HTTPRoute may route by it.
  const priced = (await callService("pricing", `/prices?ids=${rows.map((p) => p.id).join(",")}`, asked)) as Instance & { readonly prices: Record<string, number> }
  return { canary, traceId, catalog: catalogServed, pricing: { instance: priced.instance, version: priced.version }, pricedBy: priced.instance, inventory, products: rows.map((p) => ({ ...p, price: priced.prices[p.id] ?? null })) }
}

/** The page's script: the live counter over a WebSocket to /live (relayed through the mesh to pricing). */
const liveScript = `<script>
const shown = document.getElementById("live")
const socket = new WebSocket((location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/live")
socket.onmessage = (message) => {
  const { instance, version, served } = JSON.parse(message.data)
  shown.textContent = instance + " (" + version + ") has served " + served + " price lists"
}
socket.onclose = (closed) => { shown.textContent = "live socket closed (" + closed.code + (closed.reason ? ": " + closed.reason : "") + ")" }
</script>`

serve(
  "storefront",
  async (req, url) => {
    if (url.pathname === "/api/products") return { body: JSON.stringify(await products(req, url)) }
    if (url.pathname !== "/") return { status: 404, body: JSON.stringify({ error: "not found" }) }
    const { canary, traceId, catalog, pricing, inventory, products: rows } = await products(req, url)
    const items = rows.map((p) => `<tr><td>${escape(p.name)}</td><td>${escape(p.category)}</td><td>${p.price ?? "-"}</td><td>${p.stock ?? "-"}</td></tr>`).join("")
    const from = catalog === undefined ? "<b>catalog</b>" : `<b>${escape(catalog.instance)} (${escape(catalog.version)})</b>`
    const stockFrom = "error" in inventory ? `inventory failed: <b>${escape(inventory.error)}</b>` : `stock from <b>${escape(inventory.instance)}</b> (${escape(inventory.version)}, a gRPC service)`
    const html = `<!doctype html><meta charset="utf-8"><link rel="icon" href="data:,"><title>iip-mesh demo store</title>
<h1>iip-mesh demo store${canary ? " (canary)" : ""}</h1><p>Products from ${from}, prices from <b>${escape(pricing.instance)}</b> (${escape(pricing.version)}) (reload to see the weights at work), ${stockFrom}. Catalog is an Effect RPC service: the products came streamed, over the mesh.</p>
<table border="1" cellpadding="4"><tr><th>product</th><th>category</th><th>price</th><th>in stock</th></tr>${items}</table>
<p>Live, over a WebSocket through the mesh: <span id="live">connecting…</span></p>
<p>Trace <code>${escape(traceId)}</code> (the dashboard's traces show it across every sidecar). ${canary ? `<a href="/">Back to the stable versions</a>` : `<a href="/?canary=yes">See the canary</a>: the header <code>x-canary: yes</code> sends the whole page's calls to v2.`}</p>
${liveScript}`
    return { type: "text/html; charset=utf-8", body: html }
  },
  acceptLive
)
