// A's drain racing calls a gRPC caller is opening (sidecar.ts's drain: the listener stops accepting,
// then every h2c session closes gracefully). src/h2's server role closes in two GOAWAYs (RFC 9113
// 6.8): 2^31-1 with a PING first, the last stream id at its ACK; so every call the caller sent
// before it read the first GOAWAY is taken and answered. With one GOAWAY naming the last stream
// read so far, the calls still in flight were refused, grpc-js retried them on a new connection,
// which the stopped listener refused: UNAVAILABLE (this failed so). Real peer: @grpc/grpc-js.
import * as grpc from "@grpc/grpc-js"
import * as net from "node:net"
import { afterEach, expect, it } from "vitest"
import type { OutboundCall } from "../../src/sidecar/outboundCall.ts"
import { makeH2c } from "../../src/sidecar/outboundH2.ts"
import { identity } from "../support/grpcRaw.ts"
import { Cleanup, withTimeout } from "../support/iipRaw.ts"

const cleanup = new Cleanup()
afterEach(() => cleanup.run())

const CALLS = 64

/** A gRPC answer: the request's message back, status 0. */
const answer = (call: OutboundCall): void => {
  void call.readBody(1 << 20).then(
    (body) => {
      call.writeHead(200, [["content-type", "application/grpc"]])
      call.end(body ?? Buffer.alloc(0), [["grpc-status", "0"]])
    },
    () => {}
  )
}

it("calls a grpc-js caller sent before it read the drain's GOAWAY are all answered, none refused", async () => {
  let taken = 0
  let server: net.Server | undefined = undefined
  const h2 = makeH2c(
    (call) => {
      taken++
      // The drain comes as the first call is read: the other calls are on their way, some in this very read.
      if (taken === 1) {
        server!.close()
        h2.close(10_000)
      }
      answer(call)
    },
    { idleTimeoutMs: 60_000, maxStreams: 256, answerIdleMs: 60_000, onStalled: () => {}, onEnded: () => {} }
  )
  cleanup.add(() => h2.destroyAll())
  server = net.createServer((socket) => h2.accept(socket))
  await new Promise<void>((resolve) => server!.listen(0, "127.0.0.1", resolve))
  cleanup.add(() => new Promise<void>((resolve) => (server!.listening ? server!.close(() => resolve()) : resolve())))
  const port = (server.address() as net.AddressInfo).port
  const client = new grpc.Client(`127.0.0.1:${port}`, grpc.credentials.createInsecure())
  cleanup.add(() => client.close())
  await new Promise<void>((resolve, reject) => client.waitForReady(Date.now() + 5000, (error) => (error ? reject(error) : resolve())))
  const results = await withTimeout(
    Promise.all(
      Array.from(
        { length: CALLS },
        (_, i) =>
          new Promise<string>((resolve) =>
            client.makeUnaryRequest("/demo.Echo/Unary", identity, identity, Buffer.from(`call-${i}`), new grpc.Metadata(), { deadline: Date.now() + 10_000 }, (error, got) =>
              resolve(error ? `${grpc.status[error.code]}: ${error.details}` : got!.toString()))
          )
      )
    ),
    15_000,
    "every call's end"
  )
  const failed = results.filter((r, i) => r !== `call-${i}`)
  expect({ failed, taken }).toStrictEqual({ failed: [], taken: CALLS })
})
