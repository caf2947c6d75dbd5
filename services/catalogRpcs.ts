// The catalog's Effect RPC API (effect/rpc), shared by the catalog service that serves it and the
// storefront that calls it over the mesh: Schema-typed requests, typed errors and a streaming RPC.
// StreamProducts streams the products priced by pricing (when catalog prices, PRICES_FROM), each
// naming the catalog and pricing instance (and version) that served it, so a page shows where its
// request went: a canary's entries say v2 at both hops.
import * as Rpc from "effect/rpc/Rpc"
import * as RpcGroup from "effect/rpc/RpcGroup"
import * as Schema from "effect/Schema"

export class Product extends Schema.Class<Product>("Product")({
  id: Schema.Int,
  name: Schema.String,
  category: Schema.String
}) {}

/** Which instance of a service answered, and its version (v1, or the canary's v2). */
export class Served extends Schema.Class<Served>("Served")({
  instance: Schema.String,
  version: Schema.String
}) {}

/** One product as StreamProducts streams it: its price and who listed and priced it. */
export class PricedProduct extends Schema.Class<PricedProduct>("PricedProduct")({
  product: Product,
  /** null when catalog does not price (no PRICES_FROM, as on Kubernetes) or pricing has no price for it. */
  price: Schema.NullOr(Schema.Number),
  catalog: Served,
  /** null when catalog does not price: the caller prices the list itself. */
  pricing: Schema.NullOr(Served)
}) {}

export class ProductNotFound extends Schema.TaggedError<ProductNotFound>()("ProductNotFound", { id: Schema.Int }) {}

/** Catalog's call to pricing failed or answered something that is not a price list. */
export class PricingFailed extends Schema.TaggedError<PricingFailed>()("PricingFailed", { message: Schema.String }) {}

export class CatalogRpcs extends RpcGroup.make(
  Rpc.make("ListProducts", { success: Schema.Array(Product) }),
  Rpc.make("GetProduct", { payload: { id: Schema.Int }, success: Product, error: ProductNotFound }),
  /** The products one by one, of one category or of all, priced with the caller's context (trace, baggage, x-canary). */
  Rpc.make("StreamProducts", { payload: { category: Schema.optionalKey(Schema.String) }, success: PricedProduct, error: PricingFailed, stream: true })
) {}

/** Where the catalog serves its RPCs (HTTP POST, NDJSON). */
export const catalogRpcPath = "/rpc"
