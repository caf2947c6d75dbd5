// An h2 stream a sidecar has to cut once its bytes began, through a real pair (A in front of the
// caller, B in front of the app): the other end must read the cut as one, never as an end.
// - A's h2c listener (outboundH2.ts), the answer to its caller: cut because the far app died
//   mid-answer, the stream is reset with INTERNAL_ERROR, which node's client reports as an
//   'error' and curl as exit 92; before, node's destroy() reset it with NO_ERROR, which node's
//   client reads as the answer's end ('end', rstCode 0) and curl as a whole answer (exit 0). A
//   gRPC caller (grpc-js) of a far app that dies mid-stream gets a non-OK status (its trailers
//   carry it, grpcStatus.ts; it passed before too).
// - B's stream to an h2c app (appH2Exchange.ts), the request body: cut because the caller went
//   away mid-body, the stream is reset (CANCEL) with no END_STREAM before it, so the app's body
//   reader fails; before, node's close(CANCEL) sent END_STREAM first and the app read the first
//   part of the body as all of it.
import * as grpc from "@grpc/grpc-js"
import { spawn, spawnSync } from "node:child_process"
import * as http2 from "node:http2"
import * as net from "node:net"
import { afterEach, beforeEach, describe, expect, it } from "vitest"
import { identity, rawMethod } from "../support/grpcRaw.ts"
import { Cleanup, deferred, withTimeout } from "../support/iipRaw.ts"
import { LOOPBACK, sidecarConfig, startApp, startSidecar } from "../support/sidecarHarness.ts"

const curl = spawnSync("curl", ["--version"]).status === 0

/** How a node:http2 client's stream ended: its events, its reset code, what it read. */
interface Ending {
  readonly events: Array<string>
  readonly rstCode: number
  readonly read: string
}

/** A GET on `session`; `onData` at its first bytes; resolves when the stream closed. */
const ending = (session: http2.ClientHttp2Session, headers: http2.OutgoingHttpHeaders, onData: () => void): Promise<Ending> =>
  new Promise((resolve) => {
    const stream = session.request({ ":path": "/", ...headers })
    const events: Array<string> = []
    let read = ""
    stream.on("data", (chunk: Buffer) => {
      if (read === "") onData()
      read += chunk.toString()
    })
    stream.on("end", () => events.push("end"))
    stream.on("error", (error: NodeJS.ErrnoException) => events.push(`error ${error.code}`))
    stream.on("close", () => resolve({ events, rstCode: stream.rstCode ?? -1, read }))
  })

/** A (the caller's sidecar) in front of B, B in front of the app at `appPort`. */
const startPair = async (cleanup: Cleanup, appPort: number, appProtocol?: "h2c") => {
  const b = await startSidecar(cleanup, sidecarConfig({ service: "catalog", app: `${LOOPBACK}:${appPort}`, tracing: false, ...(appProtocol === undefined ? {} : { appProtocol }) }))
  return startSidecar(cleanup, sidecarConfig({ service: "store", tracing: false, endpoints: { catalog: [{ address: b.inboundAddress, weight: 1 }] } }))
}

describe("an h2 stream cut after its bytes began", () => {
  let cleanup: Cleanup
  beforeEach(() => {
    cleanup = new Cleanup()
  })
  afterEach(() => cleanup.run())

  /** An HTTP/1.1 app that answers the head and "partial", then dies (its socket destroyed) when `die` is called. */
  const dyingApp = async () => {
    let die = () => {}
    const app = await startApp(cleanup, (req, res) => {
      res.writeHead(200, { "content-type": "text/plain" })
      res.write("partial")
      die = () => req.socket.destroy()
    })
    return { port: app.port, die: () => die() }
  }

  it("the far app dies mid-answer: node's client gets an error (RST_STREAM INTERNAL_ERROR), not an end", async () => {
    const app = await dyingApp()
    const a = await startPair(cleanup, app.port)
    const session = http2.connect(`http://${LOOPBACK}:${a.outboundPort}`)
    cleanup.add(() => session.destroy())
    session.on("error", () => {})
    const cut = await withTimeout(ending(session, { ":authority": "catalog" }, app.die), 5000, "the cut answer")
    expect(cut).toStrictEqual({ events: ["error ERR_HTTP2_STREAM_ERROR"], rstCode: http2.constants.NGHTTP2_INTERNAL_ERROR, read: "partial" })
  })

  it.skipIf(!curl)("the far app dies mid-answer: curl --http2-prior-knowledge exits 92 (stream error), not 0", async () => {
    const app = await dyingApp()
    const a = await startPair(cleanup, app.port)
    const child = spawn("curl", ["-sS", "-N", "--max-time", "5", "--http2-prior-knowledge", "-H", "host: catalog", `http://${LOOPBACK}:${a.outboundPort}/`], { stdio: ["ignore", "pipe", "pipe"] })
    cleanup.add(() => child.kill("SIGKILL"))
    let read = ""
    child.stdout.on("data", (chunk: Buffer) => {
      if (read === "") app.die()
      read += chunk.toString()
    })
    const code = await withTimeout(new Promise<number | null>((resolve) => child.once("exit", resolve)), 8000, "curl's exit")
    expect({ code, read }).toStrictEqual({ code: 92, read: "partial" })
  })

  it("a gRPC caller (grpc-js) whose far app dies mid-stream gets a non-OK status", async () => {
    const methods = { watch: rawMethod("demo.Inventory", "Watch", false, true) }
    const server = new grpc.Server()
    let sessionsGone = () => {}
    server.addService(methods, {
      watch: (call: grpc.ServerWritableStream<Buffer, Buffer>) => {
        call.write(Buffer.from("first"))
        sessionsGone = () => server.forceShutdown()
      }
    })
    const port = await new Promise<number>((resolve, reject) =>
      server.bindAsync(`${LOOPBACK}:0`, grpc.ServerCredentials.createInsecure(), (error, bound) => (error === null ? resolve(bound) : reject(error)))
    )
    cleanup.add(() => server.forceShutdown())
    const a = await startPair(cleanup, port, "h2c")
    const Client = grpc.makeGenericClientConstructor(methods, "Inventory")
    const client = new Client(`${LOOPBACK}:${a.outboundPort}`, grpc.credentials.createInsecure(), { "grpc.default_authority": "catalog" })
    cleanup.add(() => client.close())
    const call = (client as unknown as { watch: (request: Buffer) => grpc.ClientReadableStream<Buffer> }).watch(identity(Buffer.from("x")))
    const messages: Array<string> = []
    call.on("data", (message: Buffer) => {
      messages.push(message.toString())
      sessionsGone()
    })
    call.on("error", () => {})
    const status = await withTimeout(new Promise<grpc.StatusObject>((resolve) => call.on("status", resolve)), 5000, "the call's status")
    expect(messages).toStrictEqual(["first"])
    expect(status.code).not.toBe(grpc.status.OK)
  })

  it("the caller goes away mid-body: the h2c app's body reader fails (no END_STREAM before B's reset), it does not read half a body as whole", async () => {
    const bodyRead = deferred<string>()
    const firstBytes = deferred()
    const app = http2.createServer()
    app.on("stream", async (stream) => {
      stream.on("error", () => {})
      let bytes = 0
      try {
        for await (const chunk of stream) {
          if (bytes === 0) firstBytes.resolve()
          bytes += (chunk as Buffer).length
        }
        bodyRead.resolve(`whole: ${bytes} bytes`)
      } catch (error) {
        bodyRead.resolve(`failed: ${(error as NodeJS.ErrnoException).code}`)
      }
      if (!stream.destroyed) stream.respond({ ":status": 200 }, { endStream: true })
    })
    await new Promise<void>((resolve) => app.listen(0, LOOPBACK, resolve))
    cleanup.add(() => new Promise<void>((resolve) => app.close(() => resolve())))
    const a = await startPair(cleanup, (app.address() as net.AddressInfo).port, "h2c")
    // A raw HTTP/1.1 caller: a 1 MiB body declared, 64 KiB of it sent, then gone.
    const socket = net.connect(a.outboundPort, LOOPBACK)
    cleanup.add(() => socket.destroy())
    socket.on("error", () => {})
    socket.write(`POST /upload HTTP/1.1\r\nhost: catalog\r\ncontent-length: ${1 << 20}\r\n\r\n`)
    socket.write(Buffer.alloc(64 * 1024, 0x61))
    await withTimeout(firstBytes.promise, 5000, "the body's first bytes at the app")
    socket.destroy()
    expect(await withTimeout(bodyRead.promise, 5000, "the app's read of the body")).toBe("failed: ERR_STREAM_PREMATURE_CLOSE")
  })
})

