// h2c sessions that close gracefully and a peer that never sends its FIN (peerFin.ts): node's
// closing session ends its socket and lets it go only on the peer's FIN, so a hung peer held the
// socket (its descriptor, the session's memory, at A a --max-app-connections place) for ever. Now
// the side that ended destroys its socket a grace (2 s) after its end went out.
// At B: an app (node:http2) that answers, then sends GOAWAY and never closes its socket: failed
// before (B's socket to the app was still open after 20 s). At A: a caller whose session A closed
// for idleness, which reads but never ends its socket: failed before (A's socket still open after
// 20 s). A grpc-js channel whose idle session A closed makes a new one for its next call (a guard).
// And a caller that grants every window and reads nothing: A destroys its session as stalled, and
// node's destroy() lets the socket go only once its end went out, which it never does. Failed
// before (A's socket still held after 30 s). The same caller when the sweep reset its stalled stream
// first (--answer-idle-timeout below the idle timeout): the session, idle later, closed with no stream
// open and its GOAWAY stuck behind the answer's bytes, was never ended. Failed before (held after 30 s).
import * as grpc from "@grpc/grpc-js"
import * as http2 from "node:http2"
import * as net from "node:net"
import { describe, expect } from "vitest"
import type { OutboundCall } from "../../src/sidecar/outboundCall.ts"
import { makeH2c } from "../../src/sidecar/outboundH2.ts"
import { rawMethod, unaryText } from "../support/grpcRaw.ts"
import { FrameFlag, FrameType, h2Frame } from "../support/h2Raw.ts"
import { halfOpenCaller, heldSocketsTo } from "../support/heldSockets.ts"
import { it } from "../support/cleanupTest.ts"
import { type Cleanup, waitFor, withTimeout } from "../support/iipRaw.ts"
import { call, LOOPBACK, sidecarConfig, startSidecar } from "../support/sidecarHarness.ts"

const METHODS = { echo: rawMethod("demo.Inventory", "Echo", false, false) }
const InventoryClient = grpc.makeGenericClientConstructor(METHODS, "Inventory")

/** A net server on 127.0.0.1 port 0 that keeps its sockets half-open (as A's listener does): `onSocket` gets each; `sockets` are those still open. */
const halfOpenServer = async (cleanup: Cleanup, onSocket: (socket: net.Socket) => void) => {
  const sockets = new Set<net.Socket>()
  const server = net.createServer({ allowHalfOpen: true }, (socket) => {
    sockets.add(socket)
    socket.on("error", () => {})
    socket.once("close", () => sockets.delete(socket))
    onSocket(socket)
  })
  await new Promise<void>((resolve) => server.listen(0, LOOPBACK, resolve))
  cleanup.add(() => new Promise<void>((resolve) => {
    for (const socket of sockets) socket.destroy()
    server.close(() => resolve())
  }))
  return { port: (server.address() as net.AddressInfo).port, sockets }
}

/** An answer as long as the caller's windows allow: written until the stream holds some back, again at each drain. */
const endlessAnswer = (call: OutboundCall): void => {
  const chunk = Buffer.alloc(64 * 1024, 0x61)
  call.writeHead(200, [])
  const more = (): void => {
    while (!call.destroyed && call.write(chunk));
    if (!call.destroyed) void call.drained().then(more)
  }
  more()
}

/** A caller of 127.0.0.1:`port`: windows as large as HTTP/2 allows, one GET, then it reads nothing (a paused socket stops reading at its high-water mark). */
const stalledCaller = async (cleanup: Cleanup, port: number): Promise<void> => {
  const caller = net.connect({ port, host: LOOPBACK, allowHalfOpen: true })
  cleanup.add(() => caller.destroy())
  caller.on("error", () => {})
  await new Promise<void>((resolve) => caller.once("connect", () => resolve()))
  caller.pause()
  const settings = Buffer.alloc(6)
  settings.writeUInt16BE(4, 0) // SETTINGS_INITIAL_WINDOW_SIZE
  settings.writeUInt32BE(2 ** 31 - 1, 2)
  const increment = Buffer.alloc(4)
  increment.writeUInt32BE(2 ** 31 - 1 - 65_535, 0)
  // HPACK, static table: :method GET, :scheme http, :path /, :authority catalog (literal, indexed name 1).
  const head = Buffer.concat([Buffer.from([0x82, 0x86, 0x84, 0x41, 7]), Buffer.from("catalog")])
  caller.write(Buffer.concat([
    Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"),
    h2Frame(FrameType.settings, 0, 0, settings),
    h2Frame(FrameType.windowUpdate, 0, 0, increment),
    h2Frame(FrameType.headers, FrameFlag.endStream | FrameFlag.endHeaders, 1, head)
  ]))
}

// Concurrent: each test waits out real idle timeouts and the 2 s grace (no option sets it), on its
// own sidecars, listeners and sockets: side by side the file takes its longest test, not their sum.
describe.concurrent("an h2c peer that never sends its FIN", () => {
  it("B's session to an app that answers, sends GOAWAY and never closes its socket: B closes its socket", async ({ cleanup }) => {
    // node:http2 on half-open sockets: it never ends a socket itself while its session lives, and
    // the session is never closed here, only its GOAWAY sent.
    const app = http2.createServer()
    const sessions: Array<http2.ServerHttp2Session> = []
    app.on("session", (session) => {
      sessions.push(session)
      session.on("error", () => {})
    })
    app.on("stream", (stream) => {
      stream.on("error", () => {})
      stream.respond({ ":status": 200 })
      stream.end("answered")
      stream.session?.goaway(http2.constants.NGHTTP2_NO_ERROR)
    })
    cleanup.add(() => {
      for (const session of sessions) session.destroy()
    })
    const accepted: Array<net.Socket> = []
    const { port } = await halfOpenServer(cleanup, (socket) => {
      accepted.push(socket)
      app.emit("connection", socket)
    })
    const b = await startSidecar(cleanup, sidecarConfig({ service: "inventory", app: `${LOOPBACK}:${port}`, appProtocol: "h2c", tracing: false }))
    const a = await startSidecar(cleanup, sidecarConfig({ service: "store", tracing: false, endpoints: { inventory: [{ address: b.inboundAddress, weight: 1 }] } }))
    const answer = await withTimeout(call(a.outboundPort, { method: "GET", path: "/", headers: { host: "inventory" } }), 20_000, "the answer")
    expect(answer.status).toBe(200)
    expect(accepted.length).toBe(1)
    // B's end (its FIN) and its close reach no event at the app (node's session reads the socket
    // and writes nothing after the FIN): the kernel tells whether a process still holds B's socket.
    await waitFor(() => heldSocketsTo(port) === 0, 20_000, "B to close its socket to the app")
  }, 60_000)

  it("A's session that went idle, to a caller that reads and never ends its socket: A closes its socket", async ({ cleanup }) => {
    const h2 = makeH2c(() => {}, { idleTimeoutMs: 300, maxStreams: 16, answerIdleMs: 60_000, onStalled: () => {}, onEnded: () => {} })
    cleanup.add(() => h2.destroyAll())
    const { port, sockets } = await halfOpenServer(cleanup, (socket) => h2.accept(socket))
    // The caller: preface and SETTINGS, then it reads all A sends (its GOAWAY, A's FIN) and sends nothing more.
    const { read } = await halfOpenCaller(cleanup, port, Buffer.concat([Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"), h2Frame(FrameType.settings, 0, 0)]))
    expect(read.length).toBeGreaterThan(0)
    await waitFor(() => sockets.size === 0, 20_000, "A to close its socket to the caller")
  }, 60_000)

  it("a grpc-js channel whose session A closed for idleness makes a new one for its next call", async ({ cleanup }) => {
    // An echo of the request's gRPC message, as a far app's answer would come back.
    const h2 = makeH2c((call) => {
      void call.readBody(1024).then((body) => {
        call.writeHead(200, [["content-type", "application/grpc"]])
        call.end(body, [["grpc-status", "0"]])
      })
    }, { idleTimeoutMs: 300, maxStreams: 16, answerIdleMs: 60_000, onStalled: () => {}, onEnded: () => {} })
    cleanup.add(() => h2.destroyAll())
    let accepted = 0
    const { port, sockets } = await halfOpenServer(cleanup, (socket) => {
      accepted++
      h2.accept(socket)
    })
    const client = new InventoryClient(`${LOOPBACK}:${port}`, grpc.credentials.createInsecure(), { "grpc.default_authority": "inventory" })
    cleanup.add(() => client.close())
    const echo = (text: string) => unaryText(client, METHODS.echo.path, text, new grpc.Metadata())
    expect(await echo("first")).toBe("first")
    await waitFor(() => sockets.size === 0, 20_000, "the idle session's socket to close")
    expect(await echo("second")).toBe("second")
    expect(accepted).toBe(2)
  }, 60_000)

  // Ended as stalled: idle, an answer waiting, nothing moving. Or the sweep reset the stalled stream
  // first (--answer-idle-timeout below the idle timeout): the session, idle later, is closed with no
  // stream open, its GOAWAY and RST_STREAM never out.
  it.for<readonly [string, { readonly idleTimeoutMs: number; readonly answerIdleMs: number }]>([
    ["ended as stalled (idle, an answer waiting, nothing moving)", { idleTimeoutMs: 300, answerIdleMs: 60_000 }],
    ["whose stalled stream the sweep reset before the session went idle", { idleTimeoutMs: 1_000, answerIdleMs: 100 }]
  ])("A's session %s lets its socket go", { timeout: 60_000 }, async ([_name, timeouts], { cleanup }) => {
    const h2 = makeH2c(endlessAnswer, { ...timeouts, maxStreams: 16, onStalled: () => {}, onEnded: () => {} })
    cleanup.add(() => h2.destroyAll())
    const { port, sockets } = await halfOpenServer(cleanup, (socket) => h2.accept(socket))
    await stalledCaller(cleanup, port)
    await waitFor(() => sockets.size === 1, 20_000, "A to accept the caller")
    await waitFor(() => sockets.size === 0, 30_000, "A to let go of the stalled caller's socket")
  })
})
