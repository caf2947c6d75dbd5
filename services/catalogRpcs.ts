// The catalog's Effect RPC API (effect/rpc), shared by the catalog service that serves it and the
// storefront that calls it over the mesh: Schema-typed requests, a typed error and a streaming RPC.
import * as Rpc from "effect/rpc/Rpc"
import * as RpcGroup from "effect/rpc/RpcGroup"
import * as Schema from "effect/Schema"

export class Product extends Schema.Class<Product>("Product")({
  id: Schema.Int,
  name: Schema.String,
  category: Schema.String
}) {}

export class ProductNotFound extends Schema.TaggedError<ProductNotFound>()("ProductNotFound", { id: Schema.Int }) {}

export class CatalogRpcs extends RpcGroup.make(
  Rpc.make("ListProducts", { success: Schema.Array(Product) }),
  Rpc.make("GetProduct", { payload: { id: Schema.Int }, success: Product, error: ProductNotFound }),
  /** The products one by one, of one category or of all. */
  Rpc.make("StreamProducts", { payload: { category: Schema.optionalKey(Schema.String) }, success: Product, stream: true })
) {}

/** Where the catalog serves its RPCs (HTTP POST, NDJSON). */
export const catalogRpcPath = "/rpc"
