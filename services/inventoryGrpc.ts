// The demo's gRPC contract between the storefront (client) and inventory (server): one unary
// method, `demo.Inventory/GetStock`, with JSON messages in gRPC's framing (grpc-js takes any codec;
// the demo needs no protobuf compiler). Both sides import it, as they would a generated stub.
import type * as grpc from "@grpc/grpc-js"

export interface StockQuestion {
  readonly ids: ReadonlyArray<number>
}

export interface StockAnswer {
  readonly instance: string
  readonly version: string
  readonly stock: Readonly<Record<string, number>>
}

const encode = (value: unknown): Buffer => Buffer.from(JSON.stringify(value))

/** A peer's bytes: anything but JSON is `undefined`, which the receiver refuses as a bad message. */
const decode = <A>(bytes: Buffer): A | undefined => {
  try {
    return JSON.parse(bytes.toString("utf8")) as A
  } catch {
    return undefined
  }
}

export const GetStock = {
  path: "/demo.Inventory/GetStock",
  originalName: "getStock",
  requestStream: false,
  responseStream: false,
  requestSerialize: encode,
  requestDeserialize: decode<StockQuestion>,
  responseSerialize: encode,
  responseDeserialize: decode<StockAnswer>
} as const

export const InventoryService: grpc.ServiceDefinition = { [GetStock.originalName]: GetStock }
