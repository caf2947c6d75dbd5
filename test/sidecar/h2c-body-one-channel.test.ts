// One honest grpc-js channel (ONE connection to A carrying all of an app's calls, the usual case)
// under A's default request-body budget (src/sidecar/h2BodyCredit.ts): a connection's bodies hold
// at most a quarter of it, so the channel's own calls are the ones it can refuse. Check a
// load of one channel within --h2-max-streams: uploads under way, their windows grown, and a burst
// of small unary calls beside them.
import * as grpc from "@grpc/grpc-js"
import { afterEach, beforeEach, describe, expect, it } from "vitest"
import { metric } from "../support/eventStreamApp.ts"
import { identity, rawMethod } from "../support/grpcRaw.ts"
import { Cleanup, readUntil } from "../support/iipRaw.ts"
import { LOOPBACK, type RunningSidecar, sidecarConfig, startSidecar } from "../support/sidecarHarness.ts"

const KiB = 1024
const MiB = 1024 * KiB
const ECHO = rawMethod("demo.Store", "Echo", false, false)
const SIZE = rawMethod("demo.Store", "Size", false, false)
const METHODS = { echo: ECHO, size: SIZE }
const StoreClient = grpc.makeGenericClientConstructor(METHODS, "Store")

describe("one grpc-js channel at A's default body budget", () => {
  let cleanup: Cleanup
  let a: RunningSidecar
  beforeEach(async () => {
    cleanup = new Cleanup()
    const server = new grpc.Server({ "grpc.max_receive_message_length": -1 })
    server.addService(METHODS, {
      echo: (call: grpc.ServerUnaryCall<Buffer, Buffer>, callback: grpc.sendUnaryData<Buffer>) => callback(null, call.request),
      size: (call: grpc.ServerUnaryCall<Buffer, Buffer>, callback: grpc.sendUnaryData<Buffer>) => callback(null, Buffer.from(String(call.request.length)))
    })
    const port = await new Promise<number>((resolve, reject) =>
      server.bindAsync(`${LOOPBACK}:0`, grpc.ServerCredentials.createInsecure(), (error, bound) => (error === null ? resolve(bound) : reject(error))))
    cleanup.add(() => server.forceShutdown())
    const b = await startSidecar(cleanup, sidecarConfig({ service: "store", app: `${LOOPBACK}:${port}`, appProtocol: "h2c", tracing: false }))
    a = await startSidecar(cleanup, sidecarConfig({ service: "shop", tracing: false, requestTimeoutMs: 60_000, endpoints: { store: [{ address: b.inboundAddress, weight: 1 }] } }))
  })
  afterEach(() => cleanup.run())

  const client = (): grpc.Client => {
    const made = new StoreClient(`${LOOPBACK}:${a.outboundPort}`, grpc.credentials.createInsecure(), { "grpc.default_authority": "store", "grpc.use_local_subchannel_pool": 1, "grpc.max_send_message_length": -1 })
    cleanup.add(() => made.close())
    return made
  }
  const call = (on: grpc.Client, path: string, body: Buffer): Promise<string> =>
    new Promise((resolve) =>
      on.makeUnaryRequest(path, identity, identity, body, new grpc.Metadata(), { deadline: Date.now() + 50_000 }, (error, answer) =>
        resolve(error === null ? answer!.toString() : `${error.code} ${error.details}`)))

  // 8 + 248 streams: --h2-max-streams (256). Before: growth counted in the share left its first
  // windows half of it (128), and ~100 calls a round ended UNAVAILABLE "Stream refused by server"
  // (grpc-js sends a refused call again once by itself, then gives up).
  it("8 uploads of 16 MiB under way, their windows grown, then 248 unary calls of 10 KiB at once on the same channel: all answered, none refused", { timeout: 120_000 }, async () => {
    const channel = client()
    const small = Buffer.alloc(10 * KiB, 0x62)
    const big = Buffer.alloc(16 * MiB, 0x61)
    for (let round = 0; round < 2; round++) {
      const uploads = Array.from({ length: 8 }, () => call(channel, SIZE.path, big))
      await readUntil(() => metric(a, /^iip_mesh_outbound_h2_body_window_bytes /), (bytes) => bytes >= 7 * MiB, 30_000)
      const smalls = Array.from({ length: 248 }, () => call(channel, SIZE.path, small))
      const answers = await Promise.all([...uploads, ...smalls])
      expect(answers).toStrictEqual([...uploads.map(() => String(16 * MiB)), ...smalls.map(() => String(10 * KiB))])
    }
    expect(await metric(a, /^iip_mesh_outbound_h2_bodies_refused_total /)).toBe(0)
    expect((await readUntil(() => metric(a, /^iip_mesh_outbound_h2_body_window_bytes /), (bytes) => bytes === 0, 10_000)).value).toBe(0)
  })
})
