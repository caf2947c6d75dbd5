// Demo service "inventory": stock per product id, as a gRPC service served with @grpc/grpc-js
// (cleartext HTTP/2: its sidecar runs with `--app-protocol h2c`). The storefront calls
// `demo.Inventory/GetStock` through its own sidecar, so the mesh balances, traces and carries the
// call as gRPC (trailers, grpc-status, deadline). Its messages are JSON in gRPC's framing, which
// grpc-js takes as any other codec: the demo needs no protobuf compiler, and the sidecars carry
// the frames without reading them. Knows nothing of the mesh. Prints the "listening" line as the
// other services (serve.ts) do, and stops on SIGTERM/SIGINT or when stdin closes.
import * as grpc from "@grpc/grpc-js"
import { followStdin, version } from "./serve.ts"
import { GetStock, InventoryService, type StockAnswer, type StockQuestion } from "./inventoryGrpc.ts"

const instance = process.env.INSTANCE ?? "inventory"
const stock: Record<number, number> = { 1: 12, 2: 0, 3: 4, 4: 57 }

/** The question is the caller's: a bad one is INVALID_ARGUMENT, never a crash. */
const answer = (question: StockQuestion | undefined): StockAnswer | grpc.ServiceError => {
  const ids = question?.ids
  if (!Array.isArray(ids) || ids.length > 100 || !ids.every((id) => Number.isSafeInteger(id))) {
    return Object.assign(new Error("ids must be a list of at most 100 integers"), { code: grpc.status.INVALID_ARGUMENT, details: "ids must be a list of at most 100 integers", metadata: new grpc.Metadata() })
  }
  return { instance, version, stock: Object.fromEntries(ids.filter((id) => id in stock).map((id) => [id, stock[id]!])) }
}

const server = new grpc.Server()
server.addService(InventoryService, {
  [GetStock.originalName]: (call: grpc.ServerUnaryCall<StockQuestion | undefined, StockAnswer>, callback: grpc.sendUnaryData<StockAnswer>) => {
    const result = answer(call.request)
    if (result instanceof Error) callback(result)
    else callback(null, result)
  }
})
server.bindAsync(`${process.env.HOST ?? "127.0.0.1"}:${Number(process.env.PORT ?? 0)}`, grpc.ServerCredentials.createInsecure(), (error, port) => {
  if (error !== null) {
    process.stderr.write(`inventory: ${error.message}\n`)
    process.exit(1)
  }
  process.stdout.write(`${JSON.stringify({ event: "listening", service: "inventory", port })}\n`)
})
const stop = () => server.tryShutdown(() => process.exit(0))
process.once("SIGTERM", stop)
process.once("SIGINT", stop)
followStdin(stop)
