// Honest gRPC uploads through A's outbound h2c listener and B, against the windows A grants a
// caller (src/h2's defaults: 1 MiB a stream, 8 MiB the connection, given back as DATA arrives while
// under 4 MiB is held, past that as it is consumed): many concurrent large client streams, one large
// message, streams whose far app waits before it reads (paused, or queued behind its
// SETTINGS_MAX_CONCURRENT_STREAMS) beside streams it reads, which must not stall behind them.
// @grpc/grpc-js at both ends, two sidecars.
import * as grpc from "@grpc/grpc-js"
import { afterEach, beforeEach, describe, expect, it } from "vitest"
import { identity, rawMethod } from "../support/grpcRaw.ts"
import { Cleanup, waitFor } from "../support/iipRaw.ts"
import { LOOPBACK, sidecarConfig, startSidecar } from "../support/sidecarHarness.ts"

const MiB = 1 << 20
const CHUNK = 64 * 1024
const METHODS = { sum: rawMethod("demo.Store", "Sum", true, false), echo: rawMethod("demo.Store", "Echo", false, false) }
const StoreClient = grpc.makeGenericClientConstructor(METHODS, "Store")

/** Sum: the bytes a client stream sent (a call with `x-wait` reads nothing until `release()`); Echo: the message's length. */
const startApp = async (cleanup: Cleanup, options: grpc.ServerOptions) => {
  const waiting: Array<() => void> = []
  const server = new grpc.Server({ "grpc.max_receive_message_length": -1, ...options })
  server.addService(METHODS, {
    sum: (call: grpc.ServerReadableStream<Buffer, Buffer>, callback: grpc.sendUnaryData<Buffer>) => {
      let bytes = 0
      call.on("data", (message: Buffer) => (bytes += message.length))
      call.on("end", () => callback(null, Buffer.from(String(bytes))))
      if (call.metadata.get("x-wait").length > 0) {
        call.pause()
        waiting.push(() => call.resume())
      }
    },
    echo: (call: grpc.ServerUnaryCall<Buffer, Buffer>, callback: grpc.sendUnaryData<Buffer>) => callback(null, Buffer.from(String(call.request.length)))
  })
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync(`${LOOPBACK}:0`, grpc.ServerCredentials.createInsecure(), (error, bound) => (error === null ? resolve(bound) : reject(error)))
  )
  cleanup.add(() => server.forceShutdown())
  return { port, waiting, release: () => waiting.splice(0).forEach((resume) => resume()) }
}

const upload = (client: grpc.Client, total: number, metadata = new grpc.Metadata()): Promise<string> =>
  new Promise((resolve) => {
    const call = client.makeClientStreamRequest(METHODS.sum.path, identity, identity, metadata, { deadline: Date.now() + 20_000 }, (error, answer) =>
      resolve(error === null ? answer!.toString() : `${error.code} ${error.details}`)
    )
    const chunk = Buffer.alloc(CHUNK, 0x61)
    let sent = 0
    const more = () => {
      while (sent < total) {
        sent += CHUNK
        if (!call.write(chunk)) return void call.once("drain", more)
      }
      call.end()
    }
    more()
  })

const echo = (client: grpc.Client, size: number): Promise<string> =>
  new Promise((resolve) =>
    client.makeUnaryRequest(METHODS.echo.path, identity, identity, Buffer.alloc(size, 0x62), new grpc.Metadata(), { deadline: Date.now() + 20_000 }, (error, answer) =>
      resolve(error === null ? answer!.toString() : `${error.code} ${error.details}`)
    )
  )

describe("honest gRPC uploads through A's h2c listener", () => {
  let cleanup: Cleanup
  beforeEach(() => {
    cleanup = new Cleanup()
  })
  afterEach(() => cleanup.run())

  const mesh = async (appPort: number) => {
    const b = await startSidecar(cleanup, sidecarConfig({ service: "store", app: `${LOOPBACK}:${appPort}`, appProtocol: "h2c", requestTimeoutMs: 30_000 }))
    const a = await startSidecar(cleanup, sidecarConfig({ service: "shop", endpoints: { store: [{ address: b.inboundAddress, weight: 1 }] }, requestTimeoutMs: 30_000 }))
    const client = new StoreClient(`${LOOPBACK}:${a.outboundPort}`, grpc.credentials.createInsecure(), { "grpc.default_authority": "store" })
    cleanup.add(() => client.close())
    return client
  }

  it("16 concurrent client streams of 4 MiB each all arrive whole", { timeout: 60_000 }, async () => {
    const app = await startApp(cleanup, {})
    const client = await mesh(app.port)
    const answers = await Promise.all(Array.from({ length: 16 }, () => upload(client, 4 * MiB)))
    expect(answers).toStrictEqual(Array.from({ length: 16 }, () => String(4 * MiB)))
  })

  it("one 16 MiB message arrives whole", { timeout: 60_000 }, async () => {
    const app = await startApp(cleanup, {})
    const client = await mesh(app.port)
    expect(await echo(client, 16 * MiB)).toBe(String(16 * MiB))
  })

  it("two client streams whose app waits before it reads: a call beside them on the same channel is answered, then they are", { timeout: 60_000 }, async () => {
    const app = await startApp(cleanup, {})
    const client = await mesh(app.port)
    const wait = new grpc.Metadata()
    wait.set("x-wait", "1")
    const held = [upload(client, 4 * MiB, wait), upload(client, 4 * MiB, wait)]
    // Both reached the app, which holds them paused: they fill their windows; a call beside them needs 256 KiB of the connection's.
    await waitFor(() => app.waiting.length === 2, 10_000, "both uploads at the app")
    expect(await echo(client, 256 * 1024)).toBe(String(256 * 1024))
    app.release()
    expect(await Promise.all(held)).toStrictEqual([String(4 * MiB), String(4 * MiB)])
  })

  it("an app taking one stream at a time (SETTINGS_MAX_CONCURRENT_STREAMS 1): three client streams of 4 MiB each arrive whole, one after another", { timeout: 60_000 }, async () => {
    const app = await startApp(cleanup, { "grpc.max_concurrent_streams": 1 })
    const client = await mesh(app.port)
    const answers = await Promise.all(Array.from({ length: 3 }, () => upload(client, 4 * MiB)))
    expect(answers).toStrictEqual(Array.from({ length: 3 }, () => String(4 * MiB)))
  })

  it("five client streams whose app waits before it reads: a 16 MiB upload beside them on the same channel arrives whole, then they do", { timeout: 60_000 }, async () => {
    const app = await startApp(cleanup, {})
    const client = await mesh(app.port)
    const wait = new grpc.Metadata()
    wait.set("x-wait", "1")
    const held = Array.from({ length: 5 }, () => upload(client, 4 * MiB, wait))
    await waitFor(() => app.waiting.length === 5, 10_000, "the five uploads at the app")
    expect(await upload(client, 16 * MiB)).toBe(String(16 * MiB))
    app.release()
    expect(await Promise.all(held)).toStrictEqual(Array.from({ length: 5 }, () => String(4 * MiB)))
  })
})
