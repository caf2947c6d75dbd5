// grpc-js method definitions over raw bytes (no protobuf): what the gRPC tests' clients and
// servers use, so the bytes a test sends are exactly the bytes compared at the far end.
import type * as grpc from "@grpc/grpc-js"
import * as http2 from "node:http2"
import type * as net from "node:net"
import type { Cleanup } from "./iipRaw.ts"
/** Messages as they are: serializer and deserializer alike. */
export const identity = (value: Buffer): Buffer => value

/** One method of `service` (e.g. "demo.Inventory") whose messages are the Buffers as sent. */
export const rawMethod = (service: string, name: string, requestStream: boolean, responseStream: boolean) => ({
  path: `/${service}/${name}`,
  requestStream,
  responseStream,
  requestSerialize: identity,
  requestDeserialize: identity,
  responseSerialize: identity,
  responseDeserialize: identity
})

/** A unary call of `path` on `client` with `text` (20 s deadline): the answer's text, or "<code> <details>". */
export const unaryText = (client: grpc.Client, path: string, text: string, metadata: grpc.Metadata): Promise<string> =>
  new Promise((resolve) =>
    client.makeUnaryRequest(path, identity, identity, Buffer.from(text), metadata, { deadline: Date.now() + 20_000 }, (error, answer) =>
      resolve(error === null ? answer!.toString() : `${error.code} ${error.details}`)))

/** A gRPC message on the wire (length-prefixed, uncompressed): flag byte 0, 4-byte length, the bytes. */
export const grpcMessage = (body: Buffer): Buffer => {
  const out = Buffer.alloc(5 + body.length)
  out.writeUInt32BE(body.length, 1)
  body.copy(out, 5)
  return out
}

/**
 * A node:http2 gRPC app on 127.0.0.1 port 0, for answers of a chosen metadata size: a head with
 * `x-head` of `x-head-size` bytes, one message (a second of 70 KB when `x-stream` is set: past a
 * sidecar's 64 KiB, so the answer streams), trailers with `x-big` of `x-size` bytes (default 1).
 * Its port.
 */
export const startSizedGrpcApp = async (cleanup: Cleanup): Promise<number> => {
  const app = http2.createServer()
  app.on("stream", (stream, headers) => {
    stream.on("error", () => {})
    const head: http2.OutgoingHttpHeaders = { ":status": 200, "content-type": "application/grpc" }
    const headSize = Number(headers["x-head-size"] ?? 0)
    if (headSize > 0) head["x-head"] = "h".repeat(headSize)
    stream.respond(head, { waitForTrailers: true })
    stream.on("wantTrailers", () => stream.sendTrailers({ "grpc-status": "0", "x-big": "b".repeat(Number(headers["x-size"] ?? 1)) }))
    stream.write(grpcMessage(Buffer.from("first")))
    if (headers["x-stream"] === "1") stream.write(grpcMessage(Buffer.alloc(70_000, 0x61)))
    stream.end()
  })
  await new Promise<void>((resolve) => app.listen(0, "127.0.0.1", resolve))
  cleanup.add(() => new Promise<void>((resolve) => app.close(() => resolve())))
  return (app.address() as net.AddressInfo).port
}
