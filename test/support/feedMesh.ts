// The mesh the h2c body-share tests send gRPC calls through: a grpc-js app ("feed": Watch, a bidi
// call that echoes its messages and ends when its caller does; Echo, a unary echo) behind sidecar B,
// and sidecar A with a given --outbound-h2-max-held-body-bytes (h2c-body-connection-share,
// h2c-body-evict-idle).
import * as grpc from "@grpc/grpc-js"
import { rawMethod } from "./grpcRaw.ts"
import type { Cleanup } from "./iipRaw.ts"
import { LOOPBACK, type RunningSidecar, sidecarConfig, startSidecar } from "./sidecarHarness.ts"

export const WATCH = rawMethod("demo.Feed", "Watch", true, true)
export const ECHO = rawMethod("demo.Feed", "Echo", false, false)
export const FEED_METHODS = { watch: WATCH, echo: ECHO }

/** The feed app behind B and A before it, A's h2c request bodies' budget `budget`; `onWatch` told of each bidi call the app takes, `onWatchCancelled` of each its caller cancelled. Sidecar A. */
export const startFeedMesh = async (cleanup: Cleanup, budget: number, onWatch: () => void = () => {}, onWatchCancelled: () => void = () => {}): Promise<RunningSidecar> => {
  const server = new grpc.Server()
  server.addService(FEED_METHODS, {
    watch: (call: grpc.ServerDuplexStream<Buffer, Buffer>) => {
      onWatch()
      call.on("data", (message: Buffer) => call.write(message))
      call.on("end", () => call.end())
      call.on("error", () => {})
      call.on("cancelled", onWatchCancelled)
    },
    echo: (call: grpc.ServerUnaryCall<Buffer, Buffer>, callback: grpc.sendUnaryData<Buffer>) => callback(null, call.request)
  })
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync(`${LOOPBACK}:0`, grpc.ServerCredentials.createInsecure(), (error, bound) => (error === null ? resolve(bound) : reject(error))))
  cleanup.add(() => server.forceShutdown())
  const b = await startSidecar(cleanup, sidecarConfig({ service: "feed", app: `${LOOPBACK}:${port}`, appProtocol: "h2c", tracing: false }))
  return startSidecar(cleanup, sidecarConfig({ service: "shop", tracing: false, outboundH2MaxHeldBodyBytes: budget, requestTimeoutMs: 60_000, endpoints: { feed: [{ address: b.inboundAddress, weight: 1 }] } }))
}
