// An h2c request head past the outbound listener's HTTP/1.1 head limit (node's http.maxHeaderSize,
// 16 KiB: llhttp answers a larger HTTP/1.1 head 431) is refused at A, before it crosses the mesh
// (outboundH2.ts, outboundH2Call.ts). Before: A advertised no SETTINGS_MAX_HEADER_LIST_SIZE and
// node let heads up to its own bound through (128 fields, 64 KiB a field), so a 20,000-byte header
// went to B and its app, which refused it there. Now A advertises the limit (RFC 9113 §6.5.2) and:
// - a request whose decoded field section (RFC 9113 §6.5.2: names, values and 32 octets a field,
//   pseudo-headers too) is past it gets 431 `outbound; reason=headers_too_large`, counted in
//   iip_mesh_request_errors_total, whether it came in one HEADERS, over CONTINUATION frames, or
//   as a small block that decodes large through the HPACK dynamic table (RFC 7541 §7.3); its
//   connection and the other streams on it go on;
// - once the caller has acknowledged A's SETTINGS, node refuses such a head itself, before A sees
//   the stream: RST_STREAM ENHANCE_YOUR_CALM (no answer can be written for a stream node never hands over);
// - a gRPC caller reads either as RESOURCE_EXHAUSTED (grpcStatus.ts maps 431 so; grpc-js maps
//   ENHANCE_YOUR_CALM so, and its calls, sent once the SETTINGS are exchanged, meet node's reset);
// - curl --http2-prior-knowledge (a peer nobody here wrote) gets the 431; a 12,000-byte header passes.
import * as grpc from "@grpc/grpc-js"
import { execFile, spawnSync } from "node:child_process"
import * as http2 from "node:http2"
import { afterEach, beforeEach, describe, expect, it } from "vitest"
import { Flag, type Frame, frame, hpackInt, Type } from "../helpers/h2Wire.ts"
import { connectRawH2, headerFrames, requestBlock, resetCode, streamOver } from "../helpers/h2RawClient.ts"
import { identity, rawMethod } from "../support/grpcRaw.ts"
import { gate } from "../support/netnsProcess.ts"
import { Cleanup, waitFor, withTimeout } from "../support/iipRaw.ts"
import { parsePrometheusText, value } from "../support/prometheusText.ts"
import { call, echoRequest, LOOPBACK, type Mesh, sidecarConfig, startMesh, startSidecar } from "../support/sidecarHarness.ts"

/** The outbound listener's HTTP/1.1 head limit (node's default http.maxHeaderSize), which A's h2c side now shares. */
const LIMIT = 16_384
const SETTINGS_MAX_HEADER_LIST_SIZE = 6

const curlGate = gate(
  "curl --http2-prior-knowledge with a 20,000-byte header gets 431 from A; one of 12,000 bytes reaches the app",
  spawnSync("curl", ["--version"]).status === 0 ? { ok: true } : { ok: false, reason: "no curl (apt curl)" }
)

/** The :status of an answer's HEADERS as nghttp2 writes a status outside the static table: a literal with the indexed name :status, its 3 digits not Huffman-coded (no shorter so). */
const statusOf = (frames: ReadonlyArray<Frame>, stream: number): string => {
  const head = frames.find((f) => f.type === Type.headers && f.stream === stream)
  if (head === undefined) return "none"
  const at = head.payload.indexOf(Buffer.from([0x48, 0x03]))
  return at < 0 ? `other ${head.payload.subarray(0, 8).toString("hex")}` : head.payload.subarray(at + 2, at + 5).toString("latin1")
}

const bodyOf = (frames: ReadonlyArray<Frame>, stream: number): string =>
  Buffer.concat(frames.filter((f) => f.type === Type.data && f.stream === stream).map((f) => f.payload)).toString()

describe("h2c request heads past the outbound listener's head limit", () => {
  let cleanup: Cleanup
  let mesh: Mesh
  beforeEach(async () => {
    cleanup = new Cleanup()
    mesh = await startMesh(cleanup, echoRequest)
  })
  afterEach(() => cleanup.run())

  const refusals = async (): Promise<number> =>
    value(parsePrometheusText((await mesh.a.sidecar.telemetry.metrics.text()).body), "iip_mesh_request_errors_total", { code: "431", hop: "outbound", reason: "headers_too_large" })

  it("A advertises SETTINGS_MAX_HEADER_LIST_SIZE of its HTTP/1.1 head limit", async () => {
    const raw = await connectRawH2(cleanup, mesh.a.outboundPort, false)
    await raw.until((frames) => frames.some((f) => f.type === Type.settings && (f.flags & Flag.ack) === 0), "A's SETTINGS")
    const settings = raw.frames.find((f) => f.type === Type.settings && (f.flags & Flag.ack) === 0)!.payload
    const advertised = new Map<number, number>()
    for (let at = 0; at + 6 <= settings.length; at += 6) advertised.set(settings.readUInt16BE(at), settings.readUInt32BE(at + 2))
    expect(advertised.get(SETTINGS_MAX_HEADER_LIST_SIZE)).toBe(LIMIT)
  })

  it("a head past it, in one frame, over CONTINUATION frames, or an HPACK bomb, is answered 431 before the mesh; another stream open on the session goes on; the session serves the next", async () => {
    const raw = await connectRawH2(cleanup, mesh.a.outboundPort, false)
    // Stream 1: a POST whose body is still to come, open across the refusals.
    raw.socket.write(headerFrames(1, requestBlock("POST", "/open", [["content-length", "5"]]), false))
    // Stream 3: one field of 20,000 bytes, over HEADERS and a CONTINUATION (no frame may pass 16 KiB).
    raw.socket.write(headerFrames(3, requestBlock("GET", "/big", [["x-big", "b".repeat(20_000)]]), true))
    await raw.until(streamOver(3), "stream 3's answer")
    // Stream 5: 20 fields of 1,000 bytes, none large, over a HEADERS and four CONTINUATIONs of 5,000 bytes.
    const many = Array.from({ length: 20 }, (_, i) => [`x-f${i}`, "f".repeat(1000)] as const)
    raw.socket.write(headerFrames(5, requestBlock("GET", "/many", many), true, 5000))
    await raw.until(streamOver(5), "stream 5's answer")
    // Stream 7: an HPACK bomb within node's own bounds: a 4,000-byte value added to the dynamic
    // table (RFC 7541 §6.2.1, index 62), then referenced 5 times (0xBE): 24 KB of fields from 4 KB.
    const value = "v".repeat(4000)
    const bomb = Buffer.concat([requestBlock("GET", "/bomb"), Buffer.from([0x40, ...hpackInt(3, 7, 0), ...Buffer.from("x-v"), ...hpackInt(value.length, 7, 0), ...Buffer.from(value)]), Buffer.alloc(5, 0xbe)])
    expect(bomb.length).toBeLessThan(LIMIT / 3)
    raw.socket.write(frame(Type.headers, Flag.endHeaders | Flag.endStream, 7, bomb))
    await raw.until(streamOver(7), "stream 7's answer")
    // The first 431 is written as a literal; nghttp2 then indexes it (the counter below counts all three as 431s).
    expect(statusOf(raw.frames, 3)).toBe("431")
    for (const stream of [3, 5, 7]) {
      expect(JSON.parse(bodyOf(raw.frames, stream))).toEqual(expect.objectContaining({ error: "headers_too_large", hop: "outbound" }))
    }
    // Stream 1's body, then a clean request on stream 9: both answered by the app.
    raw.socket.write(frame(Type.data, Flag.endStream, 1, Buffer.from("hello")))
    raw.socket.write(headerFrames(9, requestBlock("GET", "/clean", [["x-fine", "f".repeat(12_000)]]), true))
    await raw.until((frames) => streamOver(1)(frames) && streamOver(9)(frames), "streams 1 and 9 answered")
    expect(resetCode(raw.frames, 1)).toBeUndefined()
    expect(resetCode(raw.frames, 9)).toBeUndefined()
    expect(raw.frames.some((f) => f.type === Type.goaway)).toBe(false)
    // Both reach the app, in either order: stream 1's head may go on with its body (a short body is
    // gathered whole), which leaves with stream 9 (CI once saw /clean first).
    expect(mesh.app.seen.map((r) => [r.method, r.url]).sort()).toEqual([["GET", "/clean"], ["POST", "/open"]])
    expect(await refusals()).toBe(3)
  })

  it("a POST past it whose body is still to come gets its 431, then RST_STREAM NO_ERROR for the body it need not send; nothing stays in flight", async () => {
    const raw = await connectRawH2(cleanup, mesh.a.outboundPort, false)
    raw.socket.write(headerFrames(1, requestBlock("POST", "/upload", [["content-length", "100000"], ["x-big", "b".repeat(20_000)]]), false))
    await raw.until((frames) => frames.some((f) => f.type === Type.rst && f.stream === 1), "stream 1's reset")
    expect(statusOf(raw.frames, 1)).toBe("431")
    expect(resetCode(raw.frames, 1)).toBe(http2.constants.NGHTTP2_NO_ERROR)
    await waitFor(() => mesh.a.sidecar.inFlight() === 0, 5000, "the refused request to leave A")
    expect(mesh.app.seen).toEqual([])
    expect(await refusals()).toBe(1)
  })

  // node's server refused such a head itself once its SETTINGS were acknowledged (RST_STREAM
  // ENHANCE_YOUR_CALM, no answer possible); src/h2 decodes up to 64 KiB whatever was announced, so A answers 431 either way.
  it("after the caller acknowledged A's SETTINGS such a head is answered 431 too; the session goes on", async () => {
    const raw = await connectRawH2(cleanup, mesh.a.outboundPort, true)
    raw.socket.write(headerFrames(1, requestBlock("GET", "/big", [["x-big", "b".repeat(20_000)]]), true))
    await raw.until(streamOver(1), "stream 1's end")
    expect(statusOf(raw.frames, 1)).toBe("431")
    expect(resetCode(raw.frames, 1)).toBeUndefined()
    raw.socket.write(headerFrames(3, requestBlock("GET", "/clean"), true))
    await raw.until(streamOver(3), "stream 3's answer")
    expect(resetCode(raw.frames, 3)).toBeUndefined()
    expect(mesh.app.seen.map((r) => r.url)).toEqual(["/clean"])
  })

  // A's count is the RFC 9113 §6.5.2 sum the announced SETTINGS_MAX_HEADER_LIST_SIZE names: a head of
  // exactly the limit passes, one octet more is refused 431, before the caller's ACK and after it.
  it("at the edge: a field section of exactly the limit passes, one octet more is refused 431, before and after the ACK", async () => {
    /** A request block of 20 padding fields whose field section is `size` octets (names, values, 32 a field, pseudo-headers too). */
    const sized = (path: string, size: number): Buffer => {
      const pseudo = [[":method", "GET"], [":scheme", "http"], [":authority", "catalog"], [":path", path]] as const
      const fixed = pseudo.reduce((total, [n, v]) => total + n.length + v.length + 32, 0) + 20 * (5 + 32)
      const each = Math.floor((size - fixed) / 20)
      const fields = Array.from({ length: 20 }, (_, i) => [`x-p${String(i).padStart(2, "0")}`, "p".repeat(i === 0 ? size - fixed - 19 * each : each)] as const)
      expect(fields.reduce((total, [n, v]) => total + n.length + v.length + 32, fixed - 20 * (5 + 32))).toBe(size)
      return requestBlock("GET", path, fields)
    }
    for (const ack of [false, true]) {
      const raw = await connectRawH2(cleanup, mesh.a.outboundPort, ack)
      raw.socket.write(headerFrames(1, sized(`/at${String(ack)}`, LIMIT), true))
      raw.socket.write(headerFrames(3, sized(`/over${String(ack)}`, LIMIT + 1), true))
      await raw.until((frames) => streamOver(1)(frames) && streamOver(3)(frames), "both streams' ends")
      expect(resetCode(raw.frames, 1)).toBeUndefined()
      expect(JSON.parse(bodyOf(raw.frames, 3))).toEqual(expect.objectContaining({ error: "headers_too_large", hop: "outbound" }))
    }
    expect(mesh.app.seen.map((r) => r.url)).toEqual(["/atfalse", "/attrue"])
    expect(await refusals()).toBe(2)
  })

  it("node's client: a head past the limit gets 431 (its first request, before the settings take effect; gRPC: RESOURCE_EXHAUSTED), the session's next request is answered", async () => {
    const connect = (): http2.ClientHttp2Session => {
      const made = http2.connect(`http://127.0.0.1:${mesh.a.outboundPort}`)
      cleanup.add(() => made.destroy())
      made.on("error", () => {})
      return made
    }
    const session = connect()
    const ask = (headers: http2.OutgoingHttpHeaders, on = session): Promise<string> =>
      withTimeout(
        new Promise<string>((resolve, reject) => {
          const s = on.request({ ":path": "/node", ":authority": "catalog", ...headers })
          s.on("response", (h) => resolve(`${String(h[":status"])} ${String(h["grpc-status"] ?? "-")} ${String(h["x-iip-mesh-error"])}`))
          s.on("error", reject)
          s.resume()
        }),
        5000,
        "node's request"
      )
    // Refused by A itself (the mesh error header names it), not by the app behind B.
    expect(await ask({ "x-big": "b".repeat(20_000) })).toBe("431 - outbound; reason=headers_too_large")
    expect(await ask({})).toBe("200 - undefined")
    expect(mesh.app.seen.length).toBe(1)
    // A gRPC request (a new session's first) gets a trailers-only RESOURCE_EXHAUSTED (8), as for a body past its limit.
    expect(await ask({ "content-type": "application/grpc", te: "trailers", "x-big": "b".repeat(20_000) }, connect())).toBe("200 8 outbound; reason=headers_too_large")
    expect(await refusals()).toBe(2)
  })

  // grpc-js starts calls on a connection only once the SETTINGS are exchanged: node's server met
  // them with its reset (ENHANCE_YOUR_CALM, RESOURCE_EXHAUSTED to grpc-js, no hop named); A now
  // answers them as any other caller, 431 as a trailers-only RESOURCE_EXHAUSTED naming its hop.
  it("a gRPC caller (grpc-js) past the limit gets RESOURCE_EXHAUSTED from A naming its hop; nothing reaches the app", async () => {
    const method = rawMethod("demo.Catalog", "Get", false, false)
    const Client = grpc.makeGenericClientConstructor({ get: method }, "Catalog")
    const client = new Client(`127.0.0.1:${mesh.a.outboundPort}`, grpc.credentials.createInsecure(), { "grpc.default_authority": "catalog" })
    cleanup.add(() => client.close())
    const big = (): Promise<readonly [number | undefined, string | undefined]> => {
      const metadata = new grpc.Metadata()
      metadata.set("x-big", "b".repeat(20_000))
      return withTimeout(
        new Promise((resolve) =>
          client.makeUnaryRequest(method.path, identity, identity, Buffer.from("q"), metadata, { deadline: Date.now() + 5000 }, (error) =>
            resolve([error?.code, error?.metadata.get("x-iip-mesh-error")[0]?.toString()]))),
        10_000,
        "the gRPC call"
      )
    }
    expect(await big()).toEqual([grpc.status.RESOURCE_EXHAUSTED, "outbound; reason=headers_too_large"])
    expect(await big()).toEqual([grpc.status.RESOURCE_EXHAUSTED, "outbound; reason=headers_too_large"])
    expect(mesh.app.seen).toEqual([])
  })

  it.skipIf(curlGate.skip)(curlGate.title, async () => {
    const curl = (header: string): Promise<string> =>
      withTimeout(
        new Promise<string>((resolve) =>
          execFile("curl", ["-sS", "--http2-prior-knowledge", "--max-time", "5", "-o", "/dev/null", "-w", "%{http_version} %{http_code} %header{x-iip-mesh-error}", "-H", "Host: catalog", "-H", header, `http://127.0.0.1:${mesh.a.outboundPort}/curl`], (error, stdout, stderr) =>
            resolve(`${stdout}${error === null ? "" : ` exit ${String(error.code)} ${stderr}`}`))
        ),
        10_000,
        "curl"
      )
    expect(await curl(`x-big: ${"b".repeat(20_000)}`)).toBe("2 431 outbound; reason=headers_too_large")
    expect(mesh.app.seen).toEqual([])
    expect(await curl(`x-fine: ${"f".repeat(12_000)}`)).toBe("2 200 ")
    expect(mesh.app.seen.length).toBe(1)
    expect(await refusals()).toBe(1)
  })
})

// The limit must not cost a legitimate caller with heavy metadata (a long bearer token, a binary
// context of several KiB) its call: ~13.5 KiB of fields, under the limit by RFC 9113's count, go
// through on every path, before node applies the advertised limit (node's client's first request)
// and after (grpc-js), to a gRPC app behind B; and the same fields over HTTP/1.1 and h2c to an HTTP/1.1 app.
describe("heavy metadata under the head limit", () => {
  let cleanup: Cleanup
  beforeEach(() => {
    cleanup = new Cleanup()
  })
  afterEach(() => cleanup.run())

  const token = `Bearer ${"t".repeat(3500)}`
  // 7,000 bytes: 9,336 in base64 on the wire (gRPC's -bin encoding).
  const context = Buffer.alloc(7000, 0xa5)
  const tenant = "tenant-0042"

  it("a gRPC call (grpc-js, and node's client's first request) reaches the gRPC app with its metadata whole", async () => {
    const method = rawMethod("demo.Catalog", "Get", false, false)
    const seen: Array<grpc.Metadata> = []
    const server = new grpc.Server()
    server.addService({ get: method }, {
      get: (call: grpc.ServerUnaryCall<Buffer, Buffer>, callback: grpc.sendUnaryData<Buffer>) => {
        seen.push(call.metadata)
        callback(null, Buffer.from("ok"))
      }
    })
    const port = await new Promise<number>((resolve, reject) =>
      server.bindAsync(`${LOOPBACK}:0`, grpc.ServerCredentials.createInsecure(), (error, bound) => (error === null ? resolve(bound) : reject(error))))
    cleanup.add(() => server.forceShutdown())
    const b = await startSidecar(cleanup, sidecarConfig({ service: "catalog", app: `${LOOPBACK}:${port}`, appProtocol: "h2c" }))
    const a = await startSidecar(cleanup, sidecarConfig({ service: "store", endpoints: { catalog: [{ address: b.inboundAddress, weight: 1 }] } }))

    const Client = grpc.makeGenericClientConstructor({ get: method }, "Catalog")
    const client = new Client(`${LOOPBACK}:${a.outboundPort}`, grpc.credentials.createInsecure(), { "grpc.default_authority": "catalog" })
    cleanup.add(() => client.close())
    const metadata = new grpc.Metadata()
    metadata.set("authorization", token)
    metadata.set("x-context-bin", context)
    metadata.set("x-tenant", tenant)
    const answer = await withTimeout(
      new Promise<string>((resolve, reject) =>
        client.makeUnaryRequest(method.path, identity, identity, Buffer.from("q"), metadata, { deadline: Date.now() + 5000 }, (error, value) =>
          (error === null ? resolve(value!.toString()) : reject(error)))),
      10_000,
      "the gRPC call"
    )
    expect(answer).toBe("ok")

    // node's client sends its first request with the preface, before A's SETTINGS apply: A's own count decides.
    const session = http2.connect(`http://${LOOPBACK}:${a.outboundPort}`)
    cleanup.add(() => session.destroy())
    session.on("error", () => {})
    const grpcStatus = await withTimeout(
      new Promise<string>((resolve, reject) => {
        const s = session.request({
          ":method": "POST", ":path": method.path, ":authority": "catalog", "content-type": "application/grpc", te: "trailers",
          authorization: token, "x-context-bin": context.toString("base64"), "x-tenant": tenant
        })
        s.on("trailers", (t) => resolve(String(t["grpc-status"])))
        s.on("response", (h) => (h["grpc-status"] === undefined ? undefined : resolve(String(h["grpc-status"]))))
        s.on("error", reject)
        s.resume()
        // One empty message: the gRPC frame's 5-byte prefix.
        s.end(Buffer.from([0, 0, 0, 0, 1, 0x71]))
      }),
      5000,
      "node's gRPC request"
    )
    expect(grpcStatus).toBe("0")
    expect(seen.length).toBe(2)
    for (const m of seen) {
      expect(m.get("authorization")).toEqual([token])
      expect(m.get("x-context-bin")).toEqual([context])
      expect(m.get("x-tenant")).toEqual([tenant])
    }
  })

  it("the same fields over HTTP/1.1 and over h2c reach an HTTP/1.1 app", async () => {
    const mesh = await startMesh(cleanup, echoRequest)
    const fields = { authorization: token, "x-context-bin": context.toString("base64"), "x-tenant": tenant }
    const h1 = await call(mesh.a.outboundPort, { path: "/h1", headers: { host: "catalog", ...fields } })
    expect(h1.status).toBe(200)
    const session = http2.connect(`http://${LOOPBACK}:${mesh.a.outboundPort}`)
    cleanup.add(() => session.destroy())
    session.on("error", () => {})
    const h2 = await withTimeout(
      new Promise<number>((resolve, reject) => {
        const s = session.request({ ":path": "/h2", ":authority": "catalog", ...fields })
        s.on("response", (h) => resolve(Number(h[":status"])))
        s.on("error", reject)
        s.resume()
      }),
      5000,
      "the h2c request"
    )
    expect(h2).toBe(200)
    expect(mesh.app.seen.map((r) => r.url)).toEqual(["/h1", "/h2"])
    for (const r of mesh.app.seen) expect(r.headers["x-context-bin"]).toBe(fields["x-context-bin"])
  })
})
