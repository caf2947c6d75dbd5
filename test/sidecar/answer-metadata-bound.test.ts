// An app's answer whose metadata is large, at sidecar B (appH2Exchange.ts, appExchange.ts), through
// real peers: what a mesh message carries of an answer's head and trailers is the metadata bound
// agreed with the caller (61,440 bytes between sidecars, 8 KiB by default with a library caller).
// A whole answer whose head and trailers fit apart but not together streams (head and trailers in a
// packet each); a head or trailers past the caller's bound fail as the app's (app_failed, hop app,
// naming the size and the bound; INTERNAL to a gRPC caller), counted at B. Before, all of these
// failed at the send as the inbound hop's handler_failed: UNAVAILABLE to a gRPC caller, which
// invites a retry of a call the app already processed.
// An answer these tests call whole reaches B in one read (wholeAnswerRelay.ts): node's server sends
// its trailers a turn or more after its message, and under load B's 1 ms wait for them ran out
// first (the answer streamed, and its HTTP/1.1 caller got a 200 and a reset where a 502 was meant).
import * as grpc from "@grpc/grpc-js"
import * as http2 from "node:http2"
import * as net from "node:net"
import { afterEach, beforeEach, describe, expect, it } from "vitest"
import { RemoteError } from "../../src/mux/meshChannels.ts"
import { Status } from "../../src/protocol/constants.ts"
import { decodeEnvelope, decodeErrorBody, decodeHello, encodeEnvelope, encodeHello, EnvelopeKind, MeshFeatures, MeshPath } from "../../src/protocol/mesh.ts"
import { plainRequestPath } from "../../src/sidecar/httpEnvelope.ts"
import { grpcMessage, identity, startSizedGrpcApp } from "../support/grpcRaw.ts"
import { Cleanup, frame, RawClient, waitFor } from "../support/iipRaw.ts"
import { helloOf, rejection, startClient } from "../support/meshTest.ts"
import { call, LOOPBACK, type RunningSidecar, sidecarConfig, startApp, startSidecar } from "../support/sidecarHarness.ts"
import { relayWholeAnswers } from "../support/wholeAnswerRelay.ts"

const PATH = "/demo.Inventory/Watch"


/** B's inbound errors counted as the app's, with `reason` (and the status `code`, any by default). */
const appErrors = async (b: RunningSidecar, reason: string, code = "\\d+"): Promise<number> => {
  const { body } = await b.sidecar.telemetry.metrics.text()
  const pattern = new RegExp(`^iip_mesh_request_errors_total\\{direction="inbound",service="inventory",code="${code}",hop="app",reason="${reason}"\\}`)
  return body
    .split("\n")
    .filter((line) => pattern.test(line))
    .reduce((sum, line) => sum + Number(line.slice(line.lastIndexOf(" ") + 1)), 0)
}

describe("an app's answer metadata against the bound the mesh carries, at sidecar B", () => {
  let cleanup: Cleanup
  beforeEach(() => {
    cleanup = new Cleanup()
  })
  afterEach(() => cleanup.run())


  /** B in front of the app (each answer in one read: wholeAnswerRelay.ts), A in front of B, and a grpc-js client of A that reads large metadata (its own bound is 8 KiB). */
  const startGrpcPair = async () => {
    const b = await startSidecar(cleanup, sidecarConfig({ service: "inventory", app: `${LOOPBACK}:${await relayWholeAnswers(cleanup, await startSizedGrpcApp(cleanup))}`, appProtocol: "h2c", tracing: false }))
    const a = await startSidecar(cleanup, sidecarConfig({ service: "store", tracing: false, endpoints: { inventory: [{ address: b.inboundAddress, weight: 1 }] } }))
    const client = new grpc.Client(`${LOOPBACK}:${a.outboundPort}`, grpc.credentials.createInsecure(), { "grpc.default_authority": "inventory", "grpc.max_metadata_size": 1 << 20 })
    cleanup.add(() => client.close())
    return { a, b, client }
  }

  /** A server-streaming call: the messages read, then its status and the head's metadata. */
  const watch = (client: grpc.Client, sizes: { readonly head: number; readonly trailers: number }, streamed: boolean) =>
    new Promise<{ readonly messages: number; readonly head: grpc.Metadata | undefined; readonly status: grpc.StatusObject }>((resolve) => {
      const metadata = new grpc.Metadata()
      metadata.set("x-head-size", String(sizes.head))
      metadata.set("x-size", String(sizes.trailers))
      metadata.set("x-stream", streamed ? "1" : "0")
      const stream = client.makeServerStreamRequest(PATH, identity, identity, Buffer.from("hi"), metadata, { deadline: Date.now() + 5000 })
      let messages = 0
      let head: grpc.Metadata | undefined
      stream.on("metadata", (received: grpc.Metadata) => (head = received))
      stream.on("data", () => messages++)
      stream.on("error", () => {})
      stream.on("status", (status: grpc.StatusObject) => resolve({ messages, head, status }))
    })

  it("a whole answer whose head and trailers fit apart but not together (35 KB each) streams: the call succeeds with both", async () => {
    const { client } = await startGrpcPair()
    const answer = await watch(client, { head: 35_000, trailers: 35_000 }, false)
    expect(answer.status.code).toBe(grpc.status.OK)
    expect(answer.messages).toBe(1)
    expect(String(answer.head?.get("x-head")[0]).length).toBe(35_000)
    expect(String(answer.status.metadata.get("x-big")[0]).length).toBe(35_000)
  })

  it("an answer head past the bound (62,000 bytes), whole or streamed: INTERNAL naming the app hop, the size and the bound, counted at B", async () => {
    const { b, client } = await startGrpcPair()
    for (const streamed of [false, true]) {
      const over = await watch(client, { head: 62_000, trailers: 1 }, streamed)
      expect([over.status.code, over.status.metadata.get("x-iip-mesh-error")[0]]).toStrictEqual([grpc.status.INTERNAL, "app; reason=app_failed"])
      expect(over.status.details).toMatch(/its answer head \(\d+ bytes\) exceeds the 61440 bytes of metadata the mesh carries/)
    }
    expect(await appErrors(b, "app_failed")).toBe(2)
  })

  it("a whole answer whose trailers alone are past the bound (62,000 bytes), to an HTTP/1.1 caller: a 502 naming the app hop and the bound, not a 200 that breaks off", async () => {
    const { a, b } = await startGrpcPair()
    // Before: a 200 whose chunked body broke off (the caller's "aborted").
    const answer = await call(a.outboundPort, { method: "POST", path: PATH, headers: { host: "inventory", "x-size": "62000" } })
    expect([answer.status, answer.headers["x-iip-mesh-error"]]).toStrictEqual([502, "app; reason=app_failed"])
    expect(answer.body.toString()).toMatch(/its trailers \(\d+ bytes\) exceed the 61440 bytes of metadata the mesh carries/)
    expect(await appErrors(b, "app_failed", "502")).toBe(1)
  })

  it("an answer that streamed (its trailers came after B's wait) whose trailers are past the bound, to an HTTP/1.1 caller: its 200 and message, then a reset, never a chunked end", async () => {
    // The app sends its trailers only once the caller has the message: B's wait ran out by then, the answer streamed.
    let wanted: http2.ServerHttp2Stream | undefined
    let callerHasMessage = false
    const sendTrailers = () => {
      if (wanted !== undefined && callerHasMessage) wanted.sendTrailers({ "grpc-status": "0", "x-big": "b".repeat(62_000) })
    }
    const app = http2.createServer()
    app.on("stream", (stream) => {
      stream.on("error", () => {})
      stream.respond({ ":status": 200, "content-type": "application/grpc" }, { waitForTrailers: true })
      stream.on("wantTrailers", () => {
        wanted = stream
        sendTrailers()
      })
      stream.end(grpcMessage(Buffer.from("first")))
    })
    await new Promise<void>((resolve) => app.listen(0, LOOPBACK, resolve))
    cleanup.add(() => new Promise<void>((resolve) => app.close(() => resolve())))
    const b = await startSidecar(cleanup, sidecarConfig({ service: "inventory", app: `${LOOPBACK}:${(app.address() as net.AddressInfo).port}`, appProtocol: "h2c", tracing: false }))
    const a = await startSidecar(cleanup, sidecarConfig({ service: "store", tracing: false, endpoints: { inventory: [{ address: b.inboundAddress, weight: 1 }] } }))
    // A raw caller, to see the bytes and how the connection ends.
    const caller = net.connect(a.outboundPort, LOOPBACK)
    cleanup.add(() => caller.destroy())
    let received = Buffer.alloc(0)
    let ending = ""
    caller.on("data", (data: Buffer) => {
      received = Buffer.concat([received, data])
      if (!callerHasMessage && received.includes(grpcMessage(Buffer.from("first")))) {
        callerHasMessage = true
        sendTrailers()
      }
    })
    caller.on("error", (error: NodeJS.ErrnoException) => (ending = error.code ?? error.message))
    caller.on("close", () => (ending ||= "close"))
    caller.write("POST /demo.Inventory/Watch HTTP/1.1\r\nhost: inventory\r\ncontent-length: 0\r\n\r\n")
    await waitFor(() => ending !== "", 5000, "the end of the caller's connection")
    const text = received.toString("latin1")
    expect(text).toMatch(/^HTTP\/1\.1 200 OK\r\n[^]*transfer-encoding: chunked\r\n[^]*\r\n\r\na\r\n\0\0\0\0\x05first\r\n$/)
    // Once its 200 went out, the answer can only be cut: a reset, never the last chunk (nor a FIN a caller reading to the close takes for the end).
    expect(ending).toBe("ECONNRESET")
    // A counts the 502 it could not send; B the app's failure under the status its head had gone on with.
    const { body } = await a.sidecar.telemetry.metrics.text()
    expect(body).toMatch(/^iip_mesh_request_errors_total\{direction="outbound",service="inventory",code="502",hop="app",reason="app_failed"\} 1$/m)
    expect(await appErrors(b, "app_failed", "200")).toBe(1)
  })

  it("a caller whose hello does not name `trailers` (8 KiB): a whole answer whose head and trailers fit only apart is app_failed, not streamed without its trailers", async () => {
    const b = await startSidecar(cleanup, sidecarConfig({ service: "inventory", app: `${LOOPBACK}:${await relayWholeAnswers(cleanup, await startSizedGrpcApp(cleanup))}`, appProtocol: "h2c", tracing: false }))
    const raw = await RawClient.connect(b.sidecar.inbound.port, cleanup)
    raw.write(frame(Status.RequestWhole, MeshPath.hello, 0, encodeHello(helloOf({ node: "old", features: MeshFeatures.filter((f) => f !== "trailers") }), false)))
    expect(decodeHello((await raw.next(5000)).data)?.features).not.toContain("trailers")
    /** The first packet of the answer to a gRPC request with HTTP metadata, the app's head and trailers of the sizes asked. */
    const ask = async (requestId: number, head: number, trailers: number) => {
      const headers = [["content-type", "application/grpc"], ["x-head-size", String(head)], ["x-size", String(trailers)]]
      const meta = new Map([[":method", "POST"], [":authority", "inventory"], ["http-headers", JSON.stringify(headers)]])
      raw.write(frame(Status.RequestWhole, PATH, 1, encodeEnvelope(EnvelopeKind.request, 0, requestId, meta, grpcMessage(Buffer.from("hi")), 8192)))
      const first = await raw.next(5000)
      return { status: first.status, envelope: decodeEnvelope(first.data, 8192), data: first.data }
    }
    // Together within 8 KiB: one message, its trailers in its metadata.
    const fits = await ask(1, 100, 100)
    expect([fits.status, fits.envelope.kind]).toStrictEqual([Status.ResponseWhole, EnvelopeKind.response])
    expect(JSON.parse(fits.envelope.meta.get("http-trailers")!)).toStrictEqual([["grpc-status", "0"], ["x-big", "b".repeat(100)]])
    // 5,000 bytes each: a stream would close with a plain last packet, the trailers (grpc-status) lost.
    const apart = await ask(2, 5000, 5000)
    expect([apart.status, apart.envelope.kind]).toStrictEqual([Status.ResponseWhole, EnvelopeKind.error])
    const error = decodeErrorBody(apart.data.subarray(apart.envelope.bodyOffset))
    expect(error.code).toBe("app_failed")
    expect(error.message).toMatch(/its answer head and trailers \(\d+ bytes together\) exceed the 8192 bytes of metadata the mesh carries/)
    expect(await appErrors(b, "app_failed")).toBe(1)
  })

  describe("a library caller (8 KiB of metadata agreed) straight to B", () => {
    const failureOf = async (call: Promise<unknown>): Promise<readonly [string, string]> => {
      const error = await rejection(call)
      expect(error).toBeInstanceOf(RemoteError)
      return [(error as RemoteError).code, (error as RemoteError).message]
    }
    /** Trailers alone past 8 KiB, and head and trailers past it together: each fails as the app's, naming the bound. */
    const expectPastTheBound = async (trailersAlone: () => Promise<unknown>, together: () => Promise<unknown>): Promise<void> => {
      const [code, text] = await failureOf(trailersAlone())
      expect(code).toBe("app_failed")
      expect(text).toMatch(/its trailers \(\d+ bytes\) exceed the 8192 bytes of metadata the mesh carries/)
      const [code2, why] = await failureOf(together())
      expect(code2).toBe("app_failed")
      expect(why).toMatch(/its answer head and trailers \(\d+ bytes together\) exceed the 8192 bytes of metadata the mesh carries/)
    }

    it("an h2c app's trailers past 8 KiB, or head and trailers together past it (a plain caller's answer cannot stream): app_failed naming the bound", async () => {
      const b = await startSidecar(cleanup, sidecarConfig({ service: "inventory", app: `${LOOPBACK}:${await startSizedGrpcApp(cleanup)}`, appProtocol: "h2c", tracing: false }))
      const caller = startClient(cleanup, b.sidecar.inbound.port)
      // A plain request (no HTTP metadata): `__http_hdr__` in its path carries the headers to the app.
      const ask = (head: number, trailers: number) =>
        caller.call(plainRequestPath(PATH, [["content-type", "application/grpc"], ["x-head-size", String(head)], ["x-size", String(trailers)]]), grpcMessage(Buffer.from("hi")), { timeoutMs: 5000 })
      expect((await ask(0, 4000)).subarray(5).toString()).toBe("first")
      await expectPastTheBound(() => ask(0, 20_000), () => ask(5000, 5000))
      expect(await appErrors(b, "app_failed")).toBe(2)
    })

    it("an h2c app's answer that streamed (70 KB), gathered whole for a plain caller: its trailers go back with it, within 8 KiB", async () => {
      const b = await startSidecar(cleanup, sidecarConfig({ service: "inventory", app: `${LOOPBACK}:${await startSizedGrpcApp(cleanup)}`, appProtocol: "h2c", tracing: false }))
      const caller = startClient(cleanup, b.sidecar.inbound.port)
      const ask = (trailers: number, head = 0) =>
        caller.stream(plainRequestPath(PATH, [["content-type", "application/grpc"], ["x-stream", "1"], ["x-size", String(trailers)], ["x-head-size", String(head)]]), grpcMessage(Buffer.from("hi")), { timeoutMs: 5000 })
      const answer = await ask(100)
      // Past one chunk, the whole answer reaches the caller as a stream, its metadata in the first packet.
      let bytes = answer.data.length
      for await (const chunk of answer.stream ?? []) bytes += chunk.length
      expect(bytes).toBe(10 + 5 + 70_000)
      expect(JSON.parse(answer.meta.get("http-trailers") ?? "[]")).toStrictEqual([["grpc-status", "0"], ["x-big", "b".repeat(100)]])
      await expectPastTheBound(() => ask(20_000), () => ask(5000, 5000))
      expect(await appErrors(b, "app_failed")).toBe(2)
    })

    it("an HTTP/1.1 app's head or chunked answer's trailers past 8 KiB (10,000 bytes), to a caller sending HTTP metadata: app_failed naming the size and the bound", async () => {
      const app = await startApp(cleanup, (req, res) => {
        res.setHeader("x-head", "h".repeat(Number(req.headers["x-head-size"])))
        const trailers = Number(req.headers["x-size"] ?? 0)
        if (trailers === 0) return res.end("answer")
        // Chunked (no length): the answer streams, its trailers close it.
        res.write("answer")
        res.addTrailers({ "x-big": "b".repeat(trailers) })
        res.end()
      })
      const b = await startSidecar(cleanup, sidecarConfig({ service: "inventory", app: `${LOOPBACK}:${app.port}`, tracing: false }))
      const caller = startClient(cleanup, b.sidecar.inbound.port)
      const ask = (head: number, trailers = 0) =>
        caller.call("/page", new Uint8Array(0), { timeoutMs: 5000, meta: new Map([[":method", "GET"], ["http-headers", JSON.stringify([["x-head-size", String(head)], ["x-size", String(trailers)]])]]) })
      expect((await ask(1000)).toString()).toBe("answer")
      expect((await ask(1000, 1000)).toString()).toBe("answer")
      const [code, text] = await failureOf(ask(10_000))
      expect(code).toBe("app_failed")
      expect(text).toMatch(/its answer head \(\d+ bytes\) exceeds the 8192 bytes of metadata the mesh carries/)
      const [late, why] = await failureOf(ask(1000, 10_000))
      expect(late).toBe("app_failed")
      expect(why).toMatch(/its trailers \(\d+ bytes\) exceed the 8192 bytes of metadata the mesh carries/)
      expect(await appErrors(b, "app_failed")).toBe(2)
    })
  })
})
