// All four gRPC call kinds through two sidecars (issue 17, PROTOCOL.md §13, §17.5), with
// @grpc/grpc-js as the calling app's client and the far app's server: unary, server streaming,
// client streaming and bidirectional calls carry request metadata, the answer's header metadata
// and its trailers byte for byte (text and -bin values, repeated keys: each call is made through
// the mesh and directly, and grpc-js must see the same both ways); a server stream that fails
// after some messages ends with its status and trailers; 10,000 messages stream each way on one
// bidirectional call in order under the mesh's per-channel flow control.
import * as grpc from "@grpc/grpc-js"
import { afterEach, beforeEach, describe, expect, it } from "vitest"
import { identity, rawMethod } from "../support/grpcRaw.ts"
import { Cleanup, withTimeout } from "../support/iipRaw.ts"
import { LOOPBACK, type RunningSidecar, sidecarConfig, startSidecar } from "../support/sidecarHarness.ts"

const method = (name: string, requestStream: boolean, responseStream: boolean) => rawMethod("demo.Inventory", name, requestStream, responseStream)
const METHODS = { echo: method("Echo", false, false), list: method("List", false, true), sum: method("Sum", true, false), chat: method("Chat", true, true) }
const InventoryClient = grpc.makeGenericClientConstructor(METHODS, "Inventory")

/** What a test compares: the metadata a call sent and got, as grpc-js reads it (text and binary values, repeated keys). */
const CUSTOM = ["x-user", "x-multi", "x-trace-bin"]
const requestMetadata = (): grpc.Metadata => {
  const m = new grpc.Metadata()
  m.set("x-user", "alice")
  m.add("x-multi", "one")
  m.add("x-multi", "two")
  m.set("x-trace-bin", Buffer.from([0, 1, 2, 255, 10, 13]))
  return m
}
const answerHeader = (): grpc.Metadata => {
  const m = new grpc.Metadata()
  m.set("x-served-by", "far")
  m.set("x-h-bin", Buffer.from([255, 0, 128]))
  return m
}
const answerTrailer = (): grpc.Metadata => {
  const m = new grpc.Metadata()
  m.set("x-trailer", "done")
  m.add("x-count", "1")
  m.add("x-count", "2")
  m.set("x-t-bin", Buffer.from([7, 0, 7]))
  return m
}
const pick = (m: grpc.Metadata | undefined, keys: ReadonlyArray<string>): Record<string, Array<grpc.MetadataValue>> =>
  Object.fromEntries(keys.map((key) => [key, m?.get(key) ?? []]))
const HEADER_KEYS = ["x-served-by", "x-h-bin"]
const TRAILER_KEYS = ["x-trailer", "x-count", "x-t-bin"]

/** Request metadata each handler saw. */
const seen: Array<grpc.Metadata> = []

/**
 * The far app. Echo answers its request; List streams as many messages as the request says (then
 * "fail" fails after 3); Sum counts what the client streams; Chat echoes each message as it comes.
 * Every one sends the header metadata and the trailers above.
 */
const startFarApp = async (cleanup: Cleanup): Promise<number> => {
  const server = new grpc.Server()
  server.addService(METHODS, {
    echo: (call: grpc.ServerUnaryCall<Buffer, Buffer>, callback: grpc.sendUnaryData<Buffer>) => {
      seen.push(call.metadata)
      call.sendMetadata(answerHeader())
      callback(null, Buffer.from(`echo:${call.request.toString()}`), answerTrailer())
    },
    list: (call: grpc.ServerWritableStream<Buffer, Buffer>) => {
      seen.push(call.metadata)
      call.sendMetadata(answerHeader())
      const asked = call.request.toString()
      if (asked === "fail") {
        for (let i = 0; i < 3; i++) call.write(Buffer.from(`s${i}`))
        const trailer = answerTrailer()
        trailer.set("x-reason", "out-of-stock")
        return void call.emit("error", { code: grpc.status.FAILED_PRECONDITION, details: "sku 42 is out of stock", metadata: trailer })
      }
      for (let i = 0; i < Number(asked); i++) call.write(Buffer.from(`s${i}`))
      call.end(answerTrailer())
    },
    sum: (call: grpc.ServerReadableStream<Buffer, Buffer>, callback: grpc.sendUnaryData<Buffer>) => {
      seen.push(call.metadata)
      call.sendMetadata(answerHeader())
      let count = 0
      let inOrder = true
      call.on("data", (message: Buffer) => {
        if (message.toString() !== `c${count}`) inOrder = false
        count++
      })
      call.on("end", () => callback(null, Buffer.from(`${count}:${inOrder}`), answerTrailer()))
    },
    chat: (call: grpc.ServerDuplexStream<Buffer, Buffer>) => {
      seen.push(call.metadata)
      call.sendMetadata(answerHeader())
      call.on("data", (message: Buffer) => call.write(Buffer.concat([Buffer.from("re:"), message])))
      call.on("end", () => call.end(answerTrailer()))
    }
  })
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync(`${LOOPBACK}:0`, grpc.ServerCredentials.createInsecure(), (error, bound) => (error === null ? resolve(bound) : reject(error)))
  )
  cleanup.add(() => server.forceShutdown())
  return port
}

interface Ended {
  readonly headers: grpc.Metadata | undefined
  readonly status: grpc.StatusObject
  readonly messages: Array<string>
}

/** Reads a streaming call to its status: the header metadata, every message, the status with its trailers. */
const readToStatus = (call: grpc.ClientReadableStream<Buffer> | grpc.ClientDuplexStream<Buffer, Buffer>): Promise<Ended> =>
  new Promise((resolve) => {
    let headers: grpc.Metadata | undefined
    const messages: Array<string> = []
    call.on("metadata", (m: grpc.Metadata) => (headers = m))
    call.on("data", (message: Buffer) => messages.push(message.toString()))
    // A failed call also emits "error"; the status event carries the same and its trailers.
    call.on("error", () => {})
    call.on("status", (status: grpc.StatusObject) => resolve({ headers, status, messages }))
  })

describe("streamed gRPC calls through two sidecars", () => {
  let cleanup: Cleanup
  let client: grpc.Client
  let direct: grpc.Client
  beforeEach(async () => {
    cleanup = new Cleanup()
    seen.length = 0
    const appPort = await startFarApp(cleanup)
    // A call's deadline at the sidecars as long as the longest test's own bound on it (30 s): the
    // tests check order, counts and metadata, not speed (with 128 KiB socket buffers at load 15 the
    // 10,000-message calls were cut DEADLINE_EXCEEDED at the harness's 10 s).
    const b = await startSidecar(cleanup, sidecarConfig({ service: "inventory", app: `${LOOPBACK}:${appPort}`, appProtocol: "h2c", requestTimeoutMs: 30_000 }))
    const a: RunningSidecar = await startSidecar(
      cleanup,
      sidecarConfig({ service: "store", endpoints: { inventory: [{ address: b.inboundAddress, weight: 1 }] }, requestTimeoutMs: 30_000 })
    )
    client = new InventoryClient(`${LOOPBACK}:${a.outboundPort}`, grpc.credentials.createInsecure(), { "grpc.default_authority": "inventory" })
    direct = new InventoryClient(`${LOOPBACK}:${appPort}`, grpc.credentials.createInsecure())
    cleanup.add(() => client.close())
    cleanup.add(() => direct.close())
  })
  afterEach(() => cleanup.run())

  /** The call through the mesh (made first) and the same call made directly: grpc-js saw the same metadata both ways, at both ends. */
  const expectMetadataCarried = (viaMesh: Ended, viaDirect: Ended) => {
    expect(seen.length).toBe(2)
    expect(pick(seen[0], CUSTOM)).toStrictEqual(pick(seen[1], CUSTOM))
    expect(pick(viaMesh.headers, HEADER_KEYS)).toStrictEqual(pick(viaDirect.headers, HEADER_KEYS))
    expect(pick(viaMesh.status.metadata, TRAILER_KEYS)).toStrictEqual(pick(viaDirect.status.metadata, TRAILER_KEYS))
    // And what was sent arrived (a repeated text key as grpc-js reads it: joined).
    expect(seen[0]!.get("x-trace-bin")).toEqual([Buffer.from([0, 1, 2, 255, 10, 13])])
    expect(viaMesh.headers?.get("x-h-bin")).toEqual([Buffer.from([255, 0, 128])])
    expect(viaMesh.status.metadata.get("x-t-bin")).toEqual([Buffer.from([7, 0, 7])])
    expect(viaMesh.status.metadata.get("x-trailer")).toEqual(["done"])
  }

  it("unary: metadata, header metadata and trailers byte for byte", async () => {
    const run = (client: grpc.Client) => withTimeout(
      new Promise<Ended>((resolve) => {
        let headers: grpc.Metadata | undefined
        let value = ""
        const call = client.makeUnaryRequest(METHODS.echo.path, identity, identity, Buffer.from("hi"), requestMetadata(), {}, (_error, answer) => (value = answer?.toString() ?? ""))
        call.on("metadata", (m: grpc.Metadata) => (headers = m))
        call.on("status", (status: grpc.StatusObject) => setImmediate(() => resolve({ headers, status, messages: [value] })))
      }),
      5000,
      "the unary call"
    )
    const ended = await run(client)
    expect(ended.status.code).toBe(grpc.status.OK)
    expect(ended.messages).toEqual(["echo:hi"])
    expectMetadataCarried(ended, await run(direct))
  })

  // Each streaming test runs its call through the mesh, then directly, each under its own bound:
  // the test's own timeout is their sum and a margin, or it would cut the second (vitest's 30 s).
  it("server streaming: every message in order, then the trailers", { timeout: 2 * 20_000 + 10_000 }, async () => {
    const run = (client: grpc.Client) => withTimeout(readToStatus(client.makeServerStreamRequest(METHODS.list.path, identity, identity, Buffer.from("10000"), requestMetadata(), {})), 20_000, "10,000 streamed answers")
    const ended = await run(client)
    expect(ended.status.code).toBe(grpc.status.OK)
    expect(ended.messages.length).toBe(10_000)
    expect(ended.messages.every((m, i) => m === `s${i}`)).toBe(true)
    expectMetadataCarried(ended, await run(direct))
  })

  it("server streaming that fails: the messages before, then the status, its message and trailers", async () => {
    const run = (client: grpc.Client) => withTimeout(readToStatus(client.makeServerStreamRequest(METHODS.list.path, identity, identity, Buffer.from("fail"), requestMetadata(), {})), 5000, "the failing stream")
    const ended = await run(client)
    expect(ended.messages).toEqual(["s0", "s1", "s2"])
    expect(ended.status.code).toBe(grpc.status.FAILED_PRECONDITION)
    expect(ended.status.details).toBe("sku 42 is out of stock")
    expect(ended.status.metadata.get("x-reason")).toEqual(["out-of-stock"])
    const viaDirect = await run(direct)
    expect(viaDirect.status.details).toBe(ended.status.details)
    expectMetadataCarried(ended, viaDirect)
  })

  it("client streaming: 10,000 messages in order, one answer with its trailers", { timeout: 2 * 20_000 + 10_000 }, async () => {
    const run = (client: grpc.Client) => withTimeout(
      new Promise<Ended>((resolve) => {
        let headers: grpc.Metadata | undefined
        let value = ""
        const call = client.makeClientStreamRequest(METHODS.sum.path, identity, identity, requestMetadata(), {}, (_error, answer) => (value = answer?.toString() ?? ""))
        call.on("metadata", (m: grpc.Metadata) => (headers = m))
        call.on("status", (status: grpc.StatusObject) => setImmediate(() => resolve({ headers, status, messages: [value] })))
        for (let i = 0; i < 10_000; i++) call.write(Buffer.from(`c${i}`))
        call.end()
      }),
      20_000,
      "10,000 streamed requests"
    )
    const ended = await run(client)
    expect(ended.status.code).toBe(grpc.status.OK)
    expect(ended.messages).toEqual(["10000:true"])
    expectMetadataCarried(ended, await run(direct))
  })

  it("bidirectional: 10,000 messages each way on one call, in order, both ways at once", { timeout: 2 * 30_000 + 10_000 }, async () => {
    const run = (client: grpc.Client) => {
      const call = client.makeBidiStreamRequest(METHODS.chat.path, identity, identity, requestMetadata(), {})
      const reading = readToStatus(call)
      // Written under the client's own back-pressure: the mesh's windows throttle it end to end.
      let i = 0
      const writeMore = () => {
        while (i < 10_000) {
          const more = call.write(Buffer.from(`m${i++}`))
          if (!more) return void call.once("drain", writeMore)
        }
        call.end()
      }
      writeMore()
      return withTimeout(reading, 30_000, "10,000 messages each way")
    }
    const ended = await run(client)
    expect(ended.status.code).toBe(grpc.status.OK)
    expect(ended.messages.length).toBe(10_000)
    expect(ended.messages.every((m, n) => m === `re:m${n}`)).toBe(true)
    expectMetadataCarried(ended, await run(direct))
  })

  it("bidirectional ping-pong: each answer arrives before the next request is sent (nothing is held whole)", async () => {
    const call = client.makeBidiStreamRequest(METHODS.chat.path, identity, identity, new grpc.Metadata(), {})
    const reading = readToStatus(call)
    let round = 0
    call.on("data", (message: Buffer) => {
      expect(message.toString()).toBe(`re:p${round}`)
      if (++round === 200) call.end()
      else call.write(Buffer.from(`p${round}`))
    })
    call.write(Buffer.from("p0"))
    const ended = await withTimeout(reading, 10_000, "200 rounds")
    expect(ended.status.code).toBe(grpc.status.OK)
    expect(round).toBe(200)
  })
})
