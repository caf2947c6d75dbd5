// A transparent TCP tap between an HTTP/2 client and server that decodes every header block both
// ways with our HPACK decoder (one per direction), for the HPACK tests against real peers
// (test/h2/hpack.peers.test.ts) and the HPACK bench's capture of real blocks (bench/hpack.ts), with
// a grpc-js client and server on its two ends.
import * as grpc from "@grpc/grpc-js"
import type * as http2 from "node:http2"
import * as net from "node:net"
import { HpackDecoder } from "../../src/h2/hpackDecoder.ts"
import { rawMethod } from "../support/grpcRaw.ts"
import type { Cleanup } from "../support/iipRaw.ts"
import { Flag, type Frame, FrameReader, PREFACE, Type } from "./h2Wire.ts"

/** Joins HEADERS + CONTINUATION payloads into header blocks (padding and priority removed). */
class BlockJoiner {
  private parts: Array<Buffer> = []
  push(f: Frame, onBlock: (block: Buffer) => void): void {
    if (f.type === Type.headers) {
      let payload = f.payload
      const pad = (f.flags & Flag.padded) !== 0 ? payload[0]! : -1
      if (pad >= 0) payload = payload.subarray(1, payload.length - pad)
      if ((f.flags & Flag.priority) !== 0) payload = payload.subarray(5)
      this.parts = [payload]
    } else if (f.type === Type.continuation) this.parts.push(f.payload)
    else return
    if ((f.flags & Flag.endHeaders) !== 0) onBlock(Buffer.concat(this.parts))
  }
}

export const listen = async (cleanup: Cleanup, server: net.Server | http2.Http2Server): Promise<number> => {
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", () => resolve()))
  cleanup.add(() => new Promise<void>((resolve) => server.close(() => resolve())))
  return (server.address() as net.AddressInfo).port
}

/**
 * A TCP relay to `port` that decodes every header block both ways with a decoder per direction,
 * each following the SETTINGS_HEADER_TABLE_SIZE its side announced once the other side acknowledges it.
 */
export const startTap = async (cleanup: Cleanup, port: number) => {
  const decoded = {
    /** What our decoders returned for each block, client to server and server to client, in order. */
    toServer: [] as Array<unknown>,
    toClient: [] as Array<unknown>,
    /** The raw blocks client to server and server to client, in order. */
    blocksToServer: [] as Array<Buffer>,
    blocksToClient: [] as Array<Buffer>
  }
  const sockets: Array<net.Socket> = []
  const tap = net.createServer((client) => {
    const server = net.connect(port, "127.0.0.1")
    sockets.push(client, server)
    for (const s of [client, server]) {
      s.on("error", () => {})
      s.setNoDelay(true)
    }
    // Each direction's SETTINGS_HEADER_TABLE_SIZE values in the order sent (undefined: a SETTINGS
    // without one); the other direction's ACK of them sets the limit of this direction's decoder.
    const sent: [Array<number | undefined>, Array<number | undefined>] = [[], []]
    const direction = (which: 0 | 1, from: net.Socket, to: net.Socket, out: Array<unknown>, blocks: Array<Buffer>, skip: number): void => {
      const decoder = new HpackDecoder()
      const reader = new FrameReader()
      const joiner = new BlockJoiner()
      let skipped = 0
      const onFrame = (f: Frame): void => {
        if (f.type === Type.settings && (f.flags & Flag.ack) !== 0) {
          const size = sent[1 - which]!.shift()
          if (size !== undefined) decoder.setTableSizeLimit(size)
        } else if (f.type === Type.settings) {
          let size: number | undefined
          for (let at = 0; at + 6 <= f.payload.length; at += 6) if (f.payload.readUInt16BE(at) === 1) size = f.payload.readUInt32BE(at + 2)
          sent[which].push(size)
        }
        joiner.push(f, (block) => {
          blocks.push(block)
          out.push(decoder.decode(block))
        })
      }
      from.on("data", (data: Buffer) => {
        to.write(data)
        if (skipped < skip) {
          const n = Math.min(skip - skipped, data.length)
          skipped += n
          data = data.subarray(n)
        }
        if (data.length > 0) reader.push(data, onFrame)
      })
      from.on("end", () => to.end())
    }
    direction(0, client, server, decoded.toServer, decoded.blocksToServer, PREFACE.length)
    direction(1, server, client, decoded.toClient, decoded.blocksToClient, 0)
  })
  const tapPort = await listen(cleanup, tap)
  // Added after listen's close, so run before it (Cleanup runs last-added first): the server's close
  // waits for its connections, which an end that stays connected would otherwise hold open forever.
  cleanup.add(() => sockets.forEach((s) => s.destroy()))
  return { port: tapPort, decoded }
}

const ECHO = { echo: rawMethod("mesh.test.Echo", "Echo", false, false) }
export const ECHO_PATH = "/mesh.test.Echo/Echo"

/** A grpc-js Echo server and a grpc-js client that reaches it through a tap; `call` makes one unary call (5 s deadline). */
export const grpcThroughTap = async (cleanup: Cleanup) => {
  const server = new grpc.Server()
  server.addService(ECHO, { echo: (call: grpc.ServerUnaryCall<Buffer, Buffer>, callback: grpc.sendUnaryData<Buffer>) => callback(null, call.request) })
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync("127.0.0.1:0", grpc.ServerCredentials.createInsecure(), (error, bound) => (error === null ? resolve(bound) : reject(error)))
  )
  cleanup.add(() => server.forceShutdown())
  const tap = await startTap(cleanup, port)
  const client = new (grpc.makeGenericClientConstructor(ECHO, "Echo"))(`127.0.0.1:${tap.port}`, grpc.credentials.createInsecure())
  cleanup.add(() => client.close())
  const call = (message: Buffer, metadata: grpc.Metadata): Promise<void> =>
    new Promise<void>((resolve, reject) =>
      client.makeUnaryRequest(ECHO_PATH, (b: Buffer) => b, (b: Buffer) => b, message, metadata, { deadline: Date.now() + 5000 }, (error) => (error === null ? resolve() : reject(error)))
    )
  return { tap, call }
}
