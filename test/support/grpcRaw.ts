// grpc-js method definitions over raw bytes (no protobuf): what the gRPC tests' clients and
// servers use, so the bytes a test sends are exactly the bytes compared at the far end.
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

/** A gRPC message on the wire (length-prefixed, uncompressed): flag byte 0, 4-byte length, the bytes. */
export const grpcMessage = (body: Buffer): Buffer => {
  const out = Buffer.alloc(5 + body.length)
  out.writeUInt32BE(body.length, 1)
  body.copy(out, 5)
  return out
}
