// The gRPC bench's far app (bench/grpc.ts, grpcBeside.ts, grpcAppHeads.ts start it as a child:
// `node grpcApp.ts --serve grpc`): a grpc-js server with three methods. It imports grpc-js and
// nothing of the bench's, so its heap is an app's: run as grpc.ts itself until 2026-12 it carried
// the bench's whole module graph, 30.6 MB live against 7.1 for grpc-js alone, and each of its
// full GCs marked all of it (issue 17's tail met those pauses).
import * as grpc from "@grpc/grpc-js"
import { rawMethod } from "../test/support/grpcRaw.ts"
import { HOST } from "./sidecar/request.ts"
import { serveChild } from "./serveChild.ts"

export const METHODS = { echo: rawMethod("bench.Echo", "Echo", false, false), download: rawMethod("bench.Echo", "Download", false, true), chat: rawMethod("bench.Echo", "Chat", true, true) }

/** The far app: Echo, Download ("count size" as text: that many messages of that size), Chat. */
const startServer = (): Promise<number> => {
  const server = new grpc.Server()
  server.addService(METHODS, {
    echo: (call: grpc.ServerUnaryCall<Buffer, Buffer>, callback: grpc.sendUnaryData<Buffer>) => callback(null, call.request),
    download: (call: grpc.ServerWritableStream<Buffer, Buffer>) => {
      const [count, size] = call.request.toString().split(" ").map(Number)
      const message = Buffer.alloc(size!, 0x61)
      let sent = 0
      const more = () => {
        while (sent < count!) {
          sent++
          if (!call.write(message)) return void call.once("drain", more)
        }
        call.end()
      }
      more()
    },
    chat: (call: grpc.ServerDuplexStream<Buffer, Buffer>) => {
      call.on("data", (message: Buffer) => {
        if (!call.write(message)) {
          call.pause()
          call.once("drain", () => call.resume())
        }
      })
      call.on("end", () => call.end())
    }
  })
  return new Promise((resolve, reject) =>
    server.bindAsync(`${HOST}:0`, grpc.ServerCredentials.createInsecure(), (error, port) => (error === null ? resolve(port) : reject(error)))
  )
}

if (process.argv.includes("--serve")) await serveChild(startServer)
