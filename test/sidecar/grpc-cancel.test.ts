// Cancellation and deadlines of gRPC calls through two sidecars (issue 17, PROTOCOL.md §14,
// §17.5), measured by events, not sleeps: a grpc-js client's cancel (RST_STREAM) reaches the far
// grpc-js handler as `cancelled` within 100 ms, before its answer began and while it streams; a
// call's deadline ends it with DEADLINE_EXCEEDED within 100 ms of the deadline and the far handler
// sees the cancellation within 100 ms of it. The mesh enforces the deadline itself, not only the
// apps: a raw HTTP/2 caller and a raw HTTP/2 far app, neither of which keeps time, still see the
// call end at its `grpc-timeout`: the caller with grpc-status 4 in the trailers (and a message saying the deadline
// passed while the answer streamed), the far app with its stream reset.
// Robust under load (the whole suite on two cores) without a looser bound: each measured call runs
// on a warm path (an answered call first: the client's channel, A's connection to B and its TLS,
// B's session to the app are up, so a deadline is not spent on them), and the time bounds leave
// out only the time the test process waited for a core (OffCore): its own work and any wait of the
// code under test still count.
import * as grpc from "@grpc/grpc-js"
import * as http2 from "node:http2"
import type * as net from "node:net"
import { afterEach, beforeEach, describe, expect, it } from "vitest"
import { identity, rawMethod } from "../support/grpcRaw.ts"
import { Cleanup, withTimeout } from "../support/iipRaw.ts"
import { OffCore } from "../support/offCore.ts"
import { LOOPBACK, sidecarConfig, startSidecar } from "../support/sidecarHarness.ts"

const method = (name: string, requestStream: boolean, responseStream: boolean) => rawMethod("demo.Inventory", name, requestStream, responseStream)
/** Hang never answers; Watch sends one message, then nothing; Chat echoes one message, then nothing; Echo answers (warms the path). */
const METHODS = { hang: method("Hang", false, false), watch: method("Watch", false, true), chat: method("Chat", true, true), echo: method("Echo", false, false) }
const InventoryClient = grpc.makeGenericClientConstructor(METHODS, "Inventory")

/** The far handlers' lives: one promise when a call starts, one when grpc-js tells it the call was cancelled (with the time). */
class FarCalls {
  private started: Array<() => void> = []
  private cancelled: Array<(at: number) => void> = []
  readonly startedAll: Array<Promise<void>> = []
  readonly cancelledAt: Array<Promise<number>> = []

  expect(count: number): void {
    for (let i = 0; i < count; i++) {
      this.startedAll.push(new Promise((resolve) => this.started.push(resolve)))
      this.cancelledAt.push(new Promise((resolve) => this.cancelled.push(resolve)))
    }
  }

  track(call: { on(event: "cancelled", listener: () => void): unknown }): void {
    const started = this.started.shift()
    const cancelled = this.cancelled.shift()
    call.on("cancelled", () => cancelled?.(performance.now()))
    started?.()
  }
}

const startFarApp = async (cleanup: Cleanup, far: FarCalls): Promise<number> => {
  const server = new grpc.Server()
  server.addService(METHODS, {
    hang: (call: grpc.ServerUnaryCall<Buffer, Buffer>) => far.track(call),
    watch: (call: grpc.ServerWritableStream<Buffer, Buffer>) => {
      far.track(call)
      call.write(Buffer.from("first"))
    },
    chat: (call: grpc.ServerDuplexStream<Buffer, Buffer>) => {
      far.track(call)
      call.once("data", (message: Buffer) => call.write(message))
    },
    echo: (call: grpc.ServerUnaryCall<Buffer, Buffer>, callback: grpc.sendUnaryData<Buffer>) => callback(null, call.request)
  })
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync(`${LOOPBACK}:0`, grpc.ServerCredentials.createInsecure(), (error, bound) => (error === null ? resolve(bound) : reject(error)))
  )
  cleanup.add(() => server.forceShutdown())
  return port
}

const mesh = async (cleanup: Cleanup, appPort: number): Promise<number> => {
  const b = await startSidecar(cleanup, sidecarConfig({ service: "inventory", app: `${LOOPBACK}:${appPort}`, appProtocol: "h2c" }))
  const a = await startSidecar(cleanup, sidecarConfig({ service: "store", endpoints: { inventory: [{ address: b.inboundAddress, weight: 1 }] } }))
  return a.outboundPort
}

/** The status of a call and when it came. */
const statusOf = (call: NodeJS.EventEmitter): Promise<{ readonly status: grpc.StatusObject; readonly at: number }> =>
  new Promise((resolve) => {
    // A failed call also emits "error": the status event says the same.
    call.on("error", () => {})
    call.on("status", (status: grpc.StatusObject) => resolve({ status, at: performance.now() }))
  })

/** How late `at` came after `dueAt`, leaving out the time the process waited for a core; how early, if it came before. */
const lateness = (offCore: OffCore, at: number, dueAt: number): number => (at < dueAt ? dueAt - at : offCore.onCore(dueAt, at))

describe("gRPC cancel and deadline through two sidecars", () => {
  let cleanup: Cleanup
  let far: FarCalls
  let client: grpc.Client
  let offCore: OffCore
  beforeEach(async () => {
    cleanup = new Cleanup()
    offCore = new OffCore()
    cleanup.add(() => offCore.stop())
    far = new FarCalls()
    const outboundPort = await mesh(cleanup, await startFarApp(cleanup, far))
    client = new InventoryClient(`${LOOPBACK}:${outboundPort}`, grpc.credentials.createInsecure(), { "grpc.default_authority": "inventory" })
    cleanup.add(() => client.close())
    // The path warm: one answered call.
    const echoed = new Promise<Buffer | undefined>((resolve, reject) =>
      client.makeUnaryRequest(METHODS.echo.path, identity, identity, Buffer.from("warm"), (error, answer) => (error === null ? resolve(answer) : reject(error)))
    )
    expect((await withTimeout(echoed, 10_000, "the warm-up call"))?.toString()).toBe("warm")
  })
  afterEach(() => cleanup.run())

  it("a client cancel before the answer reaches the far handler within 100 ms", async () => {
    far.expect(1)
    const call = client.makeUnaryRequest(METHODS.hang.path, identity, identity, Buffer.from("x"), new grpc.Metadata(), {}, () => {})
    const status = statusOf(call)
    await withTimeout(far.startedAll[0]!, 5000, "the far handler to start")
    const cancelledAt = performance.now()
    call.cancel()
    const seen = await withTimeout(far.cancelledAt[0]!, 2000, "the far handler to see the cancel")
    expect(offCore.onCore(cancelledAt, seen)).toBeLessThan(100)
    expect((await status).status.code).toBe(grpc.status.CANCELLED)
  })

  it("a client cancel while the answer streams reaches the far handler within 100 ms", async () => {
    far.expect(1)
    const call = client.makeBidiStreamRequest(METHODS.chat.path, identity, identity, new grpc.Metadata(), {})
    const status = statusOf(call)
    const first = new Promise<string>((resolve) => call.once("data", (message: Buffer) => resolve(message.toString())))
    call.write(Buffer.from("hello"))
    expect(await withTimeout(first, 5000, "the echoed message")).toBe("hello")
    const cancelledAt = performance.now()
    call.cancel()
    const seen = await withTimeout(far.cancelledAt[0]!, 2000, "the far handler to see the cancel")
    expect(offCore.onCore(cancelledAt, seen)).toBeLessThan(100)
    expect((await status).status.code).toBe(grpc.status.CANCELLED)
  })

  it("a deadline ends a streaming call with DEADLINE_EXCEEDED within 100 ms, and the far handler sees it cancelled", async () => {
    far.expect(1)
    const deadline = Date.now() + 400
    const deadlineAt = performance.now() + 400
    const call = client.makeServerStreamRequest(METHODS.watch.path, identity, identity, Buffer.from("x"), new grpc.Metadata(), { deadline })
    const status = statusOf(call)
    const first = new Promise<string>((resolve) => call.once("data", (message: Buffer) => resolve(message.toString())))
    expect(await withTimeout(first, 5000, "the first message")).toBe("first")
    const ended = await withTimeout(status, 5000, "the call's status")
    expect(ended.status.code).toBe(grpc.status.DEADLINE_EXCEEDED)
    expect(lateness(offCore, ended.at, deadlineAt)).toBeLessThan(100)
    const seen = await withTimeout(far.cancelledAt[0]!, 2000, "the far handler to see the cancellation")
    expect(lateness(offCore, seen, deadlineAt)).toBeLessThan(100)
  })
})

describe("the mesh's own gRPC deadline (callers and apps that keep no time)", () => {
  let cleanup: Cleanup
  let offCore: OffCore
  beforeEach(() => {
    cleanup = new Cleanup()
    offCore = new OffCore()
    cleanup.add(() => offCore.stop())
  })
  afterEach(() => cleanup.run())

  it("ends a call whose answer began at its grpc-timeout: grpc-status 4 to the caller, the far stream reset, both within 100 ms", async () => {
    // A far app that answers Watch with a head and one message, then waits for ever, ignoring
    // grpc-timeout (and Warm whole: the warm-up call).
    let farReset: (at: number) => void = () => {}
    const farResetAt = new Promise<number>((resolve) => (farReset = resolve))
    let farTimeout: string | undefined
    const app = http2.createServer()
    app.on("stream", (stream, headers) => {
      if (headers[":path"] === "/demo.Inventory/Warm") {
        stream.respond({ ":status": 200, "content-type": "application/grpc" }, { waitForTrailers: true })
        stream.on("wantTrailers", () => stream.sendTrailers({ "grpc-status": "0" }))
        return void stream.end(Buffer.from([0, 0, 0, 0, 1, 0x57]))
      }
      farTimeout = headers["grpc-timeout"] as string | undefined
      stream.on("close", () => farReset(performance.now()))
      stream.respond({ ":status": 200, "content-type": "application/grpc" })
      stream.write(Buffer.from([0, 0, 0, 0, 1, 0x41]))
    })
    await new Promise<void>((resolve) => app.listen(0, LOOPBACK, resolve))
    cleanup.add(() => new Promise<void>((resolve) => app.close(() => resolve())))
    cleanup.add(() => {
      for (const session of sessions) session.destroy()
    })
    const sessions = new Set<http2.ServerHttp2Session>()
    app.on("session", (session: http2.ServerHttp2Session) => sessions.add(session))
    const outboundPort = await mesh(cleanup, (app.address() as net.AddressInfo).port)

    // A caller that sends grpc-timeout and then only waits.
    const session = http2.connect(`http://${LOOPBACK}:${outboundPort}`)
    cleanup.add(() => session.destroy())
    const head = { ":method": "POST", ":authority": "inventory", "content-type": "application/grpc", te: "trailers" }
    const warm = session.request({ ...head, ":path": "/demo.Inventory/Warm" })
    warm.end(Buffer.from([0, 0, 0, 0, 0]))
    const warmed = new Promise<unknown>((resolve) => warm.on("trailers", (fields) => resolve(fields["grpc-status"])))
    expect(await withTimeout(warmed, 10_000, "the warm-up call")).toBe("0")
    const deadlineAt = performance.now() + 300
    const stream = session.request({ ...head, ":path": "/demo.Inventory/Watch", "grpc-timeout": "300m" })
    stream.end(Buffer.from([0, 0, 0, 0, 0]))
    const trailers = new Promise<{ readonly fields: http2.IncomingHttpHeaders; readonly at: number }>((resolve) => stream.on("trailers", (fields) => resolve({ fields, at: performance.now() })))
    const firstMessage = new Promise<Buffer>((resolve) => stream.once("data", resolve))
    stream.on("error", () => {})
    expect((await withTimeout(firstMessage, 5000, "the first message")).at(-1)).toBe(0x41)
    const ended = await withTimeout(trailers, 5000, "the trailers")
    expect(ended.fields["grpc-status"]).toBe("4")
    expect(ended.fields["x-iip-mesh-error"]).toBe("inbound; reason=deadline")
    // The app had answered (head and a message): the message says the call's time ran out while it streamed, not that no answer came.
    expect(decodeURIComponent(String(ended.fields["grpc-message"]))).toMatch(/^the call's deadline of \d+ ms passed while the app's answer streamed$/)
    expect(lateness(offCore, ended.at, deadlineAt)).toBeLessThan(100)
    expect(lateness(offCore, await withTimeout(farResetAt, 2000, "the far stream's reset"), deadlineAt)).toBeLessThan(100)
    // The far app was told the time left.
    expect(Number(farTimeout!.slice(0, -1))).toBeLessThanOrEqual(300)
  })
})
