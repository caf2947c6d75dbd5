// Legs made of src/h2's H2Connection for the conn tests and bench/h2Conn.ts: a gRPC echo app on the
// server role (the four call kinds by path), a relay of both roles (server role in, client role out,
// as the sidecar's legs will be), and a grpc-js service and client of the same methods over raw bytes.
import * as grpc from "@grpc/grpc-js"
import * as net from "node:net"
import { H2Connection, type H2ClientHandler, type H2ServerHandler } from "../../src/h2/h2Connection.ts"
import { type H2ConnectionEnded, H2RequestRefused, type H2Stream, type H2StreamEnded } from "../../src/h2/h2Streams.ts"
import { grpcTimeoutMs } from "../../src/sidecar/grpcStatus.ts"
import { grpcMessage, identity, rawMethod } from "../support/grpcRaw.ts"
import type { Cleanup } from "../support/iipRaw.ts"

export const SERVICE = "demo.Echo"
export const methods = {
  Unary: rawMethod(SERVICE, "Unary", false, false),
  Collect: rawMethod(SERVICE, "Collect", true, false),
  Fan: rawMethod(SERVICE, "Fan", false, true),
  Chat: rawMethod(SERVICE, "Chat", true, true),
  Fail: rawMethod(SERVICE, "Fail", false, false),
  Hang: rawMethod(SERVICE, "Hang", false, false)
}

/** Splits a gRPC body into messages (uncompressed, length-prefixed) as its chunks come. */
export class MessageSplitter {
  private buffer = Buffer.alloc(0)
  push(chunk: Buffer): Array<Buffer> {
    this.buffer = this.buffer.length === 0 ? Buffer.from(chunk) : Buffer.concat([this.buffer, chunk])
    const out: Array<Buffer> = []
    while (this.buffer.length >= 5) {
      const length = this.buffer.readUInt32BE(1)
      if (this.buffer.length < 5 + length) break
      out.push(this.buffer.subarray(5, 5 + length))
      this.buffer = this.buffer.subarray(5 + length)
    }
    return out
  }
}

/** The request's `x-` fields, echoed in the response head (`-bin` ones too, as the same base64). */
const echoed = (fields: ReadonlyArray<string>): Array<string> => {
  const out: Array<string> = []
  for (let i = 0; i < fields.length; i += 2) if (fields[i]!.startsWith("x-")) out.push(fields[i]!, fields[i + 1]!)
  return out
}

export interface EchoStats {
  requests: number
  /** Every stream handed to onRequest, in order. */
  streams: Array<H2Stream>
  resets: Array<number>
  ends: Array<H2StreamEnded>
  closed: Array<H2ConnectionEnded>
  connections: Array<H2Connection>
}

/**
 * The echo app on our server role: Unary echoes its message, Fan answers it three times, Collect
 * answers all its messages joined at the end, Chat echoes each, Fail answers status 5 with
 * metadata, Hang never answers. Heads echo the request's `x-` fields; trailers carry x-trailer.
 */
export const startEchoServer = async (cleanup: Cleanup, limits: ConstructorParameters<typeof H2Connection>[3] = {}): Promise<{ port: number; stats: EchoStats }> => {
  const stats: EchoStats = { requests: 0, streams: [], resets: [], ends: [], closed: [], connections: [] }
  interface Call { path: string; splitter: MessageSplitter; collected: Array<Buffer> }
  const server = net.createServer((socket) => {
    const handler: H2ServerHandler = {
      onRequest(stream, fields, endStream) {
        stats.requests++
        stats.streams.push(stream)
        const path = fields[fields.indexOf(":path") + 1]!
        // As the sidecar's leg will: the caller's own deadline, past which its reset is not premature.
        const at = fields.indexOf("grpc-timeout")
        const timeout = at % 2 === 0 ? grpcTimeoutMs(fields[at + 1]) : undefined
        if (timeout !== undefined) stream.deadlineAt = stream.startedAt + timeout
        stream.user = { path, splitter: new MessageSplitter(), collected: [] } satisfies Call
        if (path.endsWith("/Hang")) return
        if (path.endsWith("/Fail")) {
          connection.respond(stream, [":status", "200", "content-type", "application/grpc", "grpc-status", "5", "grpc-message", "no such thing", "x-why", "missing"], true)
          return
        }
        connection.respond(stream, [":status", "200", "content-type", "application/grpc", ...echoed(fields)], false)
        if (endStream) this.onTrailers(stream, [])
      },
      onData(stream, chunk, endStream) {
        const call = stream.user as Call
        connection.consumed(stream, chunk.length)
        for (const message of call.splitter.push(chunk)) {
          if (call.path.endsWith("/Collect")) call.collected.push(Buffer.from(message))
          else if (call.path.endsWith("/Fan")) for (let i = 0; i < 3; i++) connection.write(stream, grpcMessage(message), false)
          else if (!call.path.endsWith("/Hang") && !call.path.endsWith("/Fail")) connection.write(stream, grpcMessage(message), false)
        }
        if (endStream) this.onTrailers(stream, [])
      },
      onTrailers(stream) {
        const call = stream.user as Call
        if (call.path.endsWith("/Hang") || call.path.endsWith("/Fail")) return
        if (call.path.endsWith("/Collect")) connection.write(stream, grpcMessage(Buffer.concat(call.collected)), false)
        connection.trailers(stream, ["grpc-status", "0", "x-trailer", "done", "x-trailer-bin", Buffer.from([0, 1, 2, 255]).toString("base64")])
      },
      onReset: (_stream, code) => void stats.resets.push(code),
      onEnd: (_stream, ended) => void stats.ends.push(ended),
      onWritable: () => {},
      onClose: (ended) => void stats.closed.push(ended)
    }
    const connection = new H2Connection(socket, "server", handler, limits)
    stats.connections.push(connection)
  })
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve))
  cleanup.add(() => new Promise<void>((resolve) => {
    for (const c of stats.connections) c.destroy("test-over", 0)
    server.close(() => resolve())
  }))
  return { port: (server.address() as net.AddressInfo).port, stats }
}

/** A grpc-js server of the same methods (the client role's and the relay's far end). */
export const startGrpcServer = async (cleanup: Cleanup): Promise<number> => {
  const server = new grpc.Server()
  const trailer = (): grpc.Metadata => {
    const m = new grpc.Metadata()
    m.set("x-trailer", "done")
    m.set("x-trailer-bin", Buffer.from([0, 1, 2, 255]))
    return m
  }
  const head = (call: { metadata: grpc.Metadata; sendMetadata(m: grpc.Metadata): void }) => {
    const m = new grpc.Metadata()
    for (const [key, value] of Object.entries(call.metadata.getMap())) if (key.startsWith("x-")) m.set(key, value as string)
    call.sendMetadata(m)
  }
  server.addService(methods as unknown as grpc.ServiceDefinition, {
    Unary: (call: grpc.ServerUnaryCall<Buffer, Buffer>, done: grpc.sendUnaryData<Buffer>) => {
      head(call)
      done(null, call.request, trailer())
    },
    Collect: (call: grpc.ServerReadableStream<Buffer, Buffer>, done: grpc.sendUnaryData<Buffer>) => {
      head(call)
      const parts: Array<Buffer> = []
      call.on("data", (m: Buffer) => parts.push(m))
      call.on("end", () => done(null, Buffer.concat(parts), trailer()))
    },
    Fan: (call: grpc.ServerWritableStream<Buffer, Buffer>) => {
      head(call)
      for (let i = 0; i < 3; i++) call.write(call.request)
      call.end(trailer())
    },
    Chat: (call: grpc.ServerDuplexStream<Buffer, Buffer>) => {
      head(call)
      call.on("data", (m: Buffer) => call.write(m))
      call.on("end", () => call.end(trailer()))
    },
    Fail: (_call: grpc.ServerUnaryCall<Buffer, Buffer>, done: grpc.sendUnaryData<Buffer>) => {
      const m = new grpc.Metadata()
      m.set("x-why", "missing")
      done({ code: grpc.status.NOT_FOUND, details: "no such thing", metadata: m })
    },
    Hang: () => {}
  })
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync("127.0.0.1:0", grpc.ServerCredentials.createInsecure(), (error, p) => (error ? reject(error) : resolve(p))))
  cleanup.add(() => server.forceShutdown())
  return port
}

export const grpcClient = (cleanup: Cleanup, port: number): grpc.Client => {
  const Client = grpc.makeGenericClientConstructor(methods as unknown as grpc.ServiceDefinition, SERVICE)
  const client = new Client(`127.0.0.1:${port}`, grpc.credentials.createInsecure())
  cleanup.add(() => client.close())
  return client
}

export const unary = (client: grpc.Client, method: "Unary" | "Fail" | "Hang", body: Buffer, metadata = new grpc.Metadata(), deadlineMs = 10_000) =>
  new Promise<{ error: grpc.ServiceError | null; answer: Buffer | undefined; head: grpc.Metadata | undefined; trailers: grpc.Metadata | undefined }>((resolve) => {
    let head: grpc.Metadata | undefined
    let trailers: grpc.Metadata | undefined
    const call = client.makeUnaryRequest(methods[method].path, identity, identity, body, metadata, { deadline: Date.now() + deadlineMs }, (error, answer) =>
      setImmediate(() => resolve({ error, answer, head, trailers })))
    call.on("metadata", (m) => (head = m))
    call.on("status", (s) => (trailers = s.metadata))
  })

interface RelayCall { peer: H2Stream | undefined; unconsumed: number }

/**
 * A relay of our two roles: every connection to its port is served by a server-role connection
 * whose streams go on, field for field and byte for byte, over one client-role connection to
 * `target`. A stream's DATA is consumed once the other side took it (back-pressure end to end).
 */
export const startRelay = async (cleanup: Cleanup, target: number): Promise<{ port: number; ends: Array<H2StreamEnded> }> => {
  const ends: Array<H2StreamEnded> = []
  const outSocket = net.connect(target, "127.0.0.1")
  await new Promise<void>((resolve, reject) => outSocket.once("connect", resolve).once("error", reject))
  let inbound: H2Connection | undefined
  const conns: Array<H2Connection> = []
  const toApp: H2ClientHandler = {
    onResponse: (s, fields, end) => inbound!.respond(peerOf(s), fields, end),
    onData: (s, chunk, end) => pass(outbound, inbound!, s, chunk, end),
    onTrailers: (s, fields) => inbound!.trailers(peerOf(s), fields),
    onReset: (s, code) => inbound!.reset(peerOf(s), code),
    onEnd: (s, ended) => {
      ends.push(ended)
      if ((s.user as RelayCall | undefined)?.peer !== undefined) inbound?.reset(peerOf(s), ended.code)
    },
    onWritable: (s) => release(inbound!, peerOf(s)),
    onClose: () => {}
  }
  const outbound = new H2Connection(outSocket, "client", toApp)
  const server = net.createServer((socket) => {
    const fromCaller: H2ServerHandler = {
      onRequest: (s, fields, end) => {
        const out = outbound.request(fields, end)
        if (out instanceof H2RequestRefused) return conn.reset(s, 7)
        s.user = { peer: out, unconsumed: 0 } satisfies RelayCall
        out.user = { peer: s, unconsumed: 0 } satisfies RelayCall
      },
      onData: (s, chunk, end) => pass(conn, outbound, s, chunk, end),
      onTrailers: (s, fields) => outbound.trailers(peerOf(s), fields),
      onReset: (s, code) => outbound.reset(peerOf(s), code),
      onEnd: (s, ended) => {
        ends.push(ended)
        if ((s.user as RelayCall | undefined)?.peer !== undefined) outbound.reset(peerOf(s), ended.code)
      },
      onWritable: (s) => release(outbound, peerOf(s)),
      onClose: () => {}
    }
    const conn = new H2Connection(socket, "server", fromCaller)
    inbound = conn
    conns.push(conn)
  })
  const peerOf = (s: H2Stream): H2Stream => (s.user as RelayCall).peer!
  /**
   * Hands the view on uncopied (a net socket's reads are fresh buffers, never reused; a large chunk
   * goes to the far socket by reference) and consumes it once the far side took it.
   */
  const pass = (from: H2Connection, to: H2Connection, s: H2Stream, chunk: Buffer, end: boolean) => {
    const call = s.user as RelayCall
    if (to.write(call.peer!, chunk, end)) from.consumed(s, chunk.length)
    else call.unconsumed += chunk.length
  }
  const release = (from: H2Connection, s: H2Stream) => {
    const call = s.user as RelayCall
    from.consumed(s, call.unconsumed)
    call.unconsumed = 0
  }
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve))
  cleanup.add(() => new Promise<void>((resolve) => {
    for (const c of conns) c.destroy("test-over", 0)
    outbound.destroy("test-over", 0)
    server.close(() => resolve())
  }))
  return { port: (server.address() as net.AddressInfo).port, ends }
}

/**
 * Our H2Connection in the server role on 127.0.0.1 port 0, each accepted socket's handler made by
 * `handlerOf` (given the connection, for the handler to answer on); its port. `cleanup` destroys
 * the connections and closes the server.
 */
export const listenH2 = async (cleanup: Cleanup, handlerOf: (connection: () => H2Connection) => H2ServerHandler): Promise<number> => {
  const server = net.createServer((socket) => {
    const connection: H2Connection = new H2Connection(socket, "server", handlerOf(() => connection))
    cleanup.add(() => connection.destroy("test-over", 0))
  })
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve))
  cleanup.add(() => new Promise<void>((resolve) => server.close(() => resolve())))
  return (server.address() as net.AddressInfo).port
}
