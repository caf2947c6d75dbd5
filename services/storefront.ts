// Demo service "storefront": the page a person opens. It calls catalog's Effect RPC service
// (CatalogRpcs, its streaming StreamProducts) and pricing's HTTP API through its sidecar
// (SIDECAR_URL, the service named by Host), both in the request's trace, and shows which pricing
// instance answered. The RPC client speaks effect/rpc's HTTP protocol (NDJSON) over node:http,
// which lets it name the service in Host; its HTTP requests carry the RPC's span as traceparent,
// a child of the request's trace context, so the sidecars' spans join that trace.
// Deep imports, not the barrels: the app's resident memory stays within its pod's limit.
import * as NodeHttpClient from "@effect/platform-node/NodeHttpClient"
import * as Effect from "effect/Effect"
import * as HttpClient from "effect/http/HttpClient"
import * as HttpClientRequest from "effect/http/HttpClientRequest"
import * as Layer from "effect/Layer"
import * as RpcClient from "effect/rpc/RpcClient"
import * as RpcSerialization from "effect/rpc/RpcSerialization"
import * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import * as Tracer from "effect/Tracer"
import type { IncomingMessage } from "node:http"
import { CatalogRpcs, catalogRpcPath, type Product } from "./catalogRpcs.ts"
import { callService, contextOf, serve } from "./serve.ts"

const sidecarUrl = process.env.SIDECAR_URL ?? "http://127.0.0.1:4140"

/** The catalog's RPC client, made once, for the process's life. */
const catalog = Effect.runPromise(
  Effect.gen(function*() {
    const viaSidecar = Layer.effect(HttpClient.HttpClient, Effect.map(HttpClient.HttpClient, HttpClient.mapRequest(HttpClientRequest.setHeader("host", "catalog")))).pipe(
      Layer.provide(NodeHttpClient.layerNodeHttp)
    )
    const protocol = yield* Layer.build(RpcClient.layerProtocolHttp({ url: `${sidecarUrl}${catalogRpcPath}` }).pipe(Layer.provide([viaSidecar, RpcSerialization.layerNdjson])))
    return yield* RpcClient.make(CatalogRpcs).pipe(Effect.provide(protocol))
  }).pipe(Scope.provide(Scope.makeUnsafe()))
)

/** Runs `effect` as a child of the trace context `traceparent` ("00-<trace>-<span>-<flags>") names. */
const inTrace = <A, E>(effect: Effect.Effect<A, E>, traceparent: string | undefined): Effect.Effect<A, E> => {
  const match = /^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$/.exec(traceparent ?? "")
  if (match === null) return effect
  return Effect.withParentSpan(effect, Tracer.externalSpan({ traceId: match[1]!, spanId: match[2]!, sampled: (parseInt(match[3]!, 16) & 1) === 1 }))
}

const products = async (req: IncomingMessage) => {
  // Both calls in one trace: the request's context, or a new one.
  const context = contextOf(req)
  const client = await catalog
  const list: ReadonlyArray<Product> = await Effect.runPromise(inTrace(Stream.runCollect(client.StreamProducts({})), context.traceparent))
  const priced = (await callService("pricing", `/prices?ids=${list.map((p) => p.id).join(",")}`, context)) as {
    readonly instance: string
    readonly prices: Record<string, number>
  }
  return { pricedBy: priced.instance, products: list.map((p) => ({ id: p.id, name: p.name, category: p.category, price: priced.prices[p.id] ?? null })) }
}

const escape = (text: string) => text.replace(/[&<>"]/g, (c) => `&#${c.charCodeAt(0)};`)

serve("storefront", async (req, url) => {
  if (url.pathname === "/api/products") return { body: JSON.stringify(await products(req)) }
  if (url.pathname !== "/") return { status: 404, body: JSON.stringify({ error: "not found" }) }
  const { pricedBy, products: rows } = await products(req)
  const items = rows.map((p) => `<tr><td>${escape(p.name)}</td><td>${escape(p.category)}</td><td>${p.price ?? "-"}</td></tr>`).join("")
  const html = `<!doctype html><meta charset="utf-8"><title>iip-mesh demo store</title>
<h1>iip-mesh demo store</h1><p>Products from <b>catalog</b> (an Effect RPC service, streamed), prices from <b>${escape(pricedBy)}</b> (reload to see the weights at work).</p>
<table border="1" cellpadding="4"><tr><th>product</th><th>category</th><th>price</th></tr>${items}</table>`
  return { type: "text/html; charset=utf-8", body: html }
})
