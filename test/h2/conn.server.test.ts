// Our server role (src/h2/h2Connection.ts) against peers nobody here wrote: @grpc/grpc-js clients
// (the four call kinds, metadata and trailers byte-exact, a status error, cancel, deadline, messages
// past the windows, many concurrent calls), a node:http2 client, and curl --http2-prior-knowledge.
import * as grpc from "@grpc/grpc-js"
import { spawn } from "node:child_process"
import * as http2 from "node:http2"
import * as net from "node:net"
import { afterEach, describe, expect, it } from "vitest"
import { ErrorCode } from "../../src/h2/frames.ts"
import { H2Connection, type H2ServerHandler } from "../../src/h2/h2Connection.ts"
import { grpcClient, methods, startEchoServer, unary } from "../helpers/h2ConnLegs.ts"
import { grpcMessage, identity } from "../support/grpcRaw.ts"
import { Cleanup, untilTurn, withTimeout } from "../support/iipRaw.ts"

const cleanup = new Cleanup()
afterEach(() => cleanup.run())

/** Bytes whose every position shows (a lost, repeated or reordered piece fails the comparison). */
const body = (length: number, seed: number): Buffer => {
  const out = Buffer.allocUnsafe(length)
  for (let i = 0; i < length; i++) out[i] = (i * 31 + seed + (i >> 8)) & 0xff
  return out
}

describe("server role with a grpc-js client", () => {
  it("answers a unary call with metadata and trailers byte-exact", async () => {
    const { port } = await startEchoServer(cleanup)
    const client = grpcClient(cleanup, port)
    const metadata = new grpc.Metadata()
    metadata.set("x-one", "uno")
    metadata.set("x-raw-bin", Buffer.from([9, 8, 0, 255]))
    const result = await unary(client, "Unary", Buffer.from("hello"), metadata)
    expect(result.error).toBeNull()
    expect(result.answer!.toString()).toBe("hello")
    expect(result.head!.get("x-one")).toStrictEqual(["uno"])
    expect(result.head!.get("x-raw-bin")).toStrictEqual([Buffer.from([9, 8, 0, 255])])
    expect(result.trailers!.get("x-trailer")).toStrictEqual(["done"])
    expect(result.trailers!.get("x-trailer-bin")).toStrictEqual([Buffer.from([0, 1, 2, 255])])
  })

  it("serves client-streaming, server-streaming and bidi calls", async () => {
    const { port } = await startEchoServer(cleanup)
    const client = grpcClient(cleanup, port)
    const collected = await new Promise<Buffer>((resolve, reject) => {
      const call = client.makeClientStreamRequest(methods.Collect.path, identity, identity, new grpc.Metadata(), {}, (e, a) => (e ? reject(e) : resolve(a!)))
      for (const part of ["a", "bb", "ccc"]) call.write(Buffer.from(part))
      call.end()
    })
    expect(collected.toString()).toBe("abbccc")
    const fanned: Array<string> = []
    await new Promise<void>((resolve, reject) => {
      const call = client.makeServerStreamRequest(methods.Fan.path, identity, identity, Buffer.from("x"), new grpc.Metadata(), {})
      call.on("data", (m: Buffer) => fanned.push(m.toString()))
      call.on("error", reject)
      call.on("status", () => resolve())
    })
    expect(fanned).toStrictEqual(["x", "x", "x"])
    const echoed: Array<string> = []
    await new Promise<void>((resolve, reject) => {
      const call = client.makeBidiStreamRequest(methods.Chat.path, identity, identity, new grpc.Metadata(), {})
      call.on("data", (m: Buffer) => {
        echoed.push(m.toString())
        if (echoed.length < 5) call.write(Buffer.from(`m${echoed.length}`))
        else call.end()
      })
      call.on("error", reject)
      call.on("status", () => resolve())
      call.write(Buffer.from("m0"))
    })
    expect(echoed).toStrictEqual(["m0", "m1", "m2", "m3", "m4"])
  })

  it("passes a status error with its metadata", async () => {
    const { port } = await startEchoServer(cleanup)
    const result = await unary(grpcClient(cleanup, port), "Fail", Buffer.from("?"))
    expect(result.error!.code).toBe(grpc.status.NOT_FOUND)
    expect(result.error!.details).toBe("no such thing")
    expect(result.error!.metadata.get("x-why")).toStrictEqual(["missing"])
  })

  it("sees a cancel and a deadline as the client's RST_STREAM(CANCEL)", async () => {
    const { port, stats } = await startEchoServer(cleanup)
    const client = grpcClient(cleanup, port)
    const expired = await unary(client, "Hang", Buffer.from("slow"), new grpc.Metadata(), 100)
    expect(expired.error!.code).toBe(grpc.status.DEADLINE_EXCEEDED)
    const call = client.makeUnaryRequest(methods.Hang.path, identity, identity, Buffer.from("x"), () => {})
    await untilTurn(() => stats.requests === 2, "the second call")
    call.cancel()
    await untilTurn(() => stats.resets.length === 2, "both resets")
    expect(stats.resets).toStrictEqual([ErrorCode.CANCEL, ErrorCode.CANCEL])
    expect(stats.connections[0]!.streamCount).toBe(0)
  })

  it("carries messages past the stream and connection windows both ways", async () => {
    const { port } = await startEchoServer(cleanup)
    const client = grpcClient(cleanup, port)
    const big = body(3 << 20, 7)
    const result = await new Promise<Buffer>((resolve, reject) => {
      const Client = client
      Client.makeUnaryRequest(methods.Unary.path, identity, identity, big, new grpc.Metadata(), { deadline: Date.now() + 20_000 }, (e, a) => (e ? reject(e) : resolve(a!)))
    })
    expect(result.equals(big)).toBe(true)
  })

  it("serves 500 concurrent calls on one connection", async () => {
    const { port, stats } = await startEchoServer(cleanup)
    const client = grpcClient(cleanup, port)
    const answers = await Promise.all(Array.from({ length: 500 }, (_, i) => unary(client, "Unary", Buffer.from(`call-${i}`))))
    expect(answers.map((a) => a.answer?.toString())).toStrictEqual(Array.from({ length: 500 }, (_, i) => `call-${i}`))
    expect(stats.connections).toHaveLength(1)
    expect(stats.connections[0]!.streamCount).toBe(0)
  })
})

describe("server role with other clients", () => {
  it("answers a node:http2 client, trailers included", async () => {
    const { port } = await startEchoServer(cleanup)
    const session = http2.connect(`http://127.0.0.1:${port}`)
    session.on("error", () => {})
    cleanup.add(() => session.close())
    const stream = session.request({ ":method": "POST", ":path": "/demo.Echo/Unary", "content-type": "application/grpc", te: "trailers", "x-k": "v" })
    const chunks: Array<Buffer> = []
    const answer = new Promise<{ head: http2.IncomingHttpHeaders; trailers: http2.IncomingHttpHeaders }>((resolve) => {
      let head: http2.IncomingHttpHeaders = {}
      stream.on("response", (h) => (head = h))
      stream.on("data", (c: Buffer) => chunks.push(c))
      stream.on("trailers", (t) => resolve({ head, trailers: t }))
    })
    stream.end(grpcMessage(Buffer.from("hi")))
    const got = await withTimeout(answer, 5000, "the answer")
    expect(got.head[":status"]).toBe(200)
    expect(got.head["x-k"]).toBe("v")
    expect(got.trailers["grpc-status"]).toBe("0")
    expect(Buffer.concat(chunks).equals(grpcMessage(Buffer.from("hi")))).toBe(true)
  })

  it("answers curl --http2-prior-knowledge", async () => {
    const { port } = await startEchoServer(cleanup)
    const out = await new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) => {
      const curl = spawn("curl", ["-sS", "-i", "--http2-prior-knowledge", "--max-time", "10", "-X", "POST", "-H", "content-type: application/grpc", "--data-binary", "@-", `http://127.0.0.1:${port}/demo.Echo/Unary`])
      let stdout = ""
      let stderr = ""
      curl.stdout.on("data", (c: Buffer) => (stdout += c.toString("latin1")))
      curl.stderr.on("data", (c: Buffer) => (stderr += c.toString()))
      curl.on("close", (code) => resolve({ code, stdout, stderr }))
      curl.stdin.end(grpcMessage(Buffer.from("curl!")))
    })
    expect(out.code, out.stderr).toBe(0)
    expect(out.stdout).toMatch(/^HTTP\/2 200 ?\r\ncontent-type: application\/grpc\r\n/)
    // curl -i prints the body after the head, then the trailers.
    const afterHead = out.stdout.slice(out.stdout.indexOf("\r\n\r\n") + 4)
    expect(afterHead.startsWith(grpcMessage(Buffer.from("curl!")).toString("latin1"))).toBe(true)
    expect(afterHead).toMatch(/grpc-status: 0\r\nx-trailer: done\r\n/)
  })
})

describe("receive flow control", () => {
  it("a stream whose leg does not consume stops at its window while other streams go on", async () => {
    let slowBytes = 0
    const server = net.createServer((socket) => {
      const handler: H2ServerHandler = {
        onRequest: (stream, fields, endStream) => {
          stream.user = fields[fields.indexOf(":path") + 1]
          connection.respond(stream, [":status", "200"], endStream)
        },
        onData: (stream, chunk, endStream) => {
          // /slow: its leg never consumes; the others consume and end with the request.
          if (stream.user === "/slow") slowBytes += chunk.length
          else connection.consumed(stream, chunk.length)
          if (endStream) connection.write(stream, Buffer.from("ok"), true)
        },
        onTrailers: () => {},
        onReset: () => {},
        onEnd: () => {},
        onWritable: () => {},
        onClose: () => {}
      }
      const connection = new H2Connection(socket, "server", handler, { streamWindow: 1 << 20 })
      cleanup.add(() => connection.destroy("test-over"))
    })
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve))
    cleanup.add(() => new Promise<void>((resolve) => server.close(() => resolve())))
    const session = http2.connect(`http://127.0.0.1:${(server.address() as net.AddressInfo).port}`)
    session.on("error", () => {})
    cleanup.add(() => session.destroy())
    const slow = session.request({ ":method": "POST", ":path": "/slow" })
    slow.on("error", () => {})
    slow.write(Buffer.alloc(3 << 20, 1))
    await untilTurn(() => slowBytes === 1 << 20, "the slow stream's window to fill", 10_000)
    // 2 MiB through other streams while the slow one holds its 1 MiB.
    for (let i = 0; i < 2; i++) {
      const other = session.request({ ":method": "POST", ":path": "/other" })
      const answer = await withTimeout(new Promise<string>((resolve) => {
        let text = ""
        other.on("data", (c: Buffer) => (text += c.toString()))
        other.on("end", () => resolve(text))
        other.end(Buffer.alloc(1 << 20, 2))
      }), 5000, "another stream's answer")
      expect(answer).toBe("ok")
    }
    expect(slowBytes).toBe(1 << 20)
  })
})
