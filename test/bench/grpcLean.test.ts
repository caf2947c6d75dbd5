// The gRPC bench's lean load generator (bench/grpcLean.ts): the length-prefixed frame it sends, how
// it checks an answer chunk by chunk, and its calls against a real grpc-js server (the bench's far
// app is one): an echo is right, a status error, a wrong answer and a lost session are each told.
import * as grpc from "@grpc/grpc-js"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { answerError, connectLean, grpcFrame, leanUnarySend, noteChunk, type Received } from "../../bench/grpcLean.ts"
import { rawMethod } from "../support/grpcRaw.ts"

describe("grpcFrame", () => {
  it("prefixes the message with flag 0 and its length, big-endian", () => {
    const frame = grpcFrame(Buffer.from("hello"))
    expect([...frame]).toStrictEqual([0, 0, 0, 0, 5, ...Buffer.from("hello")])
    expect([...grpcFrame(Buffer.alloc(0))]).toStrictEqual([0, 0, 0, 0, 0])
    expect(grpcFrame(Buffer.alloc(70_000)).readUInt32BE(1)).toBe(70_000)
  })
})

describe("noteChunk and answerError", () => {
  const expected = grpcFrame(Buffer.from("abcdef"))
  const receive = (...chunks: ReadonlyArray<Buffer>): Received => {
    const received: Received = { bytes: 0, same: true }
    for (const chunk of chunks) noteChunk(received, expected, chunk)
    return received
  }

  it("takes the expected frame in any chunks as right", () => {
    expect(answerError("0", undefined, receive(expected), expected)).toBeUndefined()
    expect(answerError("0", undefined, receive(expected.subarray(0, 3), expected.subarray(3, 8), expected.subarray(8)), expected)).toBeUndefined()
  })

  it("tells a short, a long and a different answer apart", () => {
    expect(answerError("0", undefined, receive(expected.subarray(0, 7)), expected)).toBe("answered 7 bytes of 11")
    expect(answerError("0", undefined, receive(expected, Buffer.from("x")), expected)).toBe("answered 12 bytes of 11")
    const changed = Buffer.from(expected)
    changed[9] = 0x7a
    expect(answerError("0", undefined, receive(changed.subarray(0, 6), changed.subarray(6)), expected)).toBe("answer's bytes differ")
  })

  it("names a status other than OK, and a missing one", () => {
    expect(answerError("14", "no endpoint", receive(), expected)).toBe("grpc-status 14: no endpoint")
    expect(answerError("2", undefined, receive(expected), expected)).toBe("grpc-status 2")
    expect(answerError(undefined, undefined, receive(expected), expected)).toBe("no grpc-status")
  })
})

describe("leanUnarySend against a grpc-js server", () => {
  const echo = rawMethod("bench.Echo", "Echo", false, false)
  const methods = { echo, fail: rawMethod("bench.Echo", "Fail", false, false), mangle: rawMethod("bench.Echo", "Mangle", false, false) }
  const server = new grpc.Server()
  let port = 0

  beforeAll(async () => {
    server.addService(methods, {
      echo: (call: grpc.ServerUnaryCall<Buffer, Buffer>, callback: grpc.sendUnaryData<Buffer>) => callback(null, call.request),
      fail: (_call: grpc.ServerUnaryCall<Buffer, Buffer>, callback: grpc.sendUnaryData<Buffer>) => callback({ code: grpc.status.NOT_FOUND, details: "missing" }),
      mangle: (call: grpc.ServerUnaryCall<Buffer, Buffer>, callback: grpc.sendUnaryData<Buffer>) => callback(null, Buffer.from(call.request).reverse())
    })
    port = await new Promise<number>((resolve, reject) =>
      server.bindAsync("127.0.0.1:0", grpc.ServerCredentials.createInsecure(), (error, bound) => (error === null ? resolve(bound) : reject(error)))
    )
  })
  afterAll(() => server.forceShutdown())

  const call = (send: ReturnType<typeof leanUnarySend>) => new Promise<string | undefined>((resolve) => send(resolve))

  it("calls Echo, again and again on one session, and checks the answer", async () => {
    const session = await connectLean("127.0.0.1", port, () => {})
    try {
      const message = Buffer.alloc(1024, 0x63)
      message.write("first bytes")
      const send = leanUnarySend(session, echo.path, `127.0.0.1:${port}`, message)
      const results = await Promise.all(Array.from({ length: 20 }, () => call(send)))
      expect(results).toStrictEqual(Array.from({ length: 20 }, () => undefined))
    } finally {
      session.close()
    }
  })

  it("reports a status error, a wrong answer and a closed session", async () => {
    const session = await connectLean("127.0.0.1", port, () => {})
    const message = Buffer.from("ab")
    expect(await call(leanUnarySend(session, methods.fail.path, "x", message))).toBe("grpc-status 5: missing")
    expect(await call(leanUnarySend(session, methods.mangle.path, "x", message))).toBe("answer's bytes differ")
    session.close()
    expect(await call(leanUnarySend(session, echo.path, "x", message))).toMatch(/GOAWAY|destroyed/)
  })
})
