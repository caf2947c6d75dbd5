// A's h2c listener (outboundH2.ts) and callers that open no stream but PING. One PINGing back to
// back with no stream open was answered until the idle timeout (a minute at A): that case failed
// before (no GOAWAY in 20 s); now PINGs again and again under 1 s apart with no stream open get
// GOAWAY ENHANCE_YOUR_CALM "too_many_pings". Counting them takes a 'ping' listener, with which node's
// idle timer counts PINGs: a caller PINGing now and then gets GOAWAY all the same, within twice the
// idle timeout (the listener's sweep; with the listener and without the sweep, that case failed: no GOAWAY in 20 s).
// PINGs while a stream is open are not counted, and a grpc-js channel with keepalive on (PINGs with
// no call) stays usable through the mesh (guards, passed before). A PING that follows a call (grpc-go's
// BDP probe, sent as its answer's data comes in) reaches A after the stream closed: one call after
// another, each with its PING, got GOAWAY too_many_pings at the fourth PING (this failed: PING 3 not acknowledged);
// a PING after a stream opened since the last one is not a strike (as grpc-go's and grpc-java's
// servers reset their strikes when they send a stream's headers or data). The sweep's bound of
// twice the idle timeout is for a session with no stream: one whose short calls the sweep never
// happened to find open got GOAWAY all the same (this failed: GOAWAY at 3.3 s, calls every 200 ms).
// A stream's close at A is its answer's last byte handed to the socket, not read: a caller that
// paused its reading with the answer's tail unread and PINGed on got GOAWAY too_many_pings, and node's
// client dropped the tail (this failed: PING 3 cancelled; with 4 KiB socket buffers the slow reader of
// hostile-h2-busy.test.ts lost its last 64 KiB so). PINGs count again once it took none of an answer
// (no WINDOW_UPDATE) for the answer idle timeout (a guard for that bound, passed before too).
import * as grpc from "@grpc/grpc-js"
import * as http2 from "node:http2"
import * as net from "node:net"
import { describe, expect } from "vitest"
import { makeH2c } from "../../src/sidecar/outboundH2.ts"
import { rawMethod, unaryText } from "../support/grpcRaw.ts"
import { it } from "../support/cleanupTest.ts"
import { type Cleanup, waitFor, withTimeout } from "../support/iipRaw.ts"
import { LOOPBACK, sidecarConfig, startSidecar } from "../support/sidecarHarness.ts"

const METHODS = { echo: rawMethod("demo.Inventory", "Echo", false, false) }
const InventoryClient = grpc.makeGenericClientConstructor(METHODS, "Inventory")

// Concurrent: most of the time here is waiting out idle timeouts and keepalive PINGs, each test on
// its own listener, session and sidecars: side by side the file takes its longest test, not their sum.
describe.concurrent("A's h2c sessions that PING", () => {
  /**
   * makeH2c on 127.0.0.1 port 0 (idle timeout `idleTimeoutMs`; its sweep runs every quarter of `answerIdleMs`): a request to /quiet gets its head and waits, any other a short answer.
   * A client session of it, and the sessions the listener ended for abuse, by reason (the sidecar counts them in iip_mesh_h2_sessions_ended_total).
   */
  const listener = async (cleanup: Cleanup, idleTimeoutMs: number, answerIdleMs = 60_000) => {
    const ended: Array<string> = []
    const h2 = makeH2c((call) => {
      call.writeHead(200, [])
      if (call.url === "/quiet") call.write(Buffer.from("waiting"))
      else call.end(Buffer.from("done"))
    }, { idleTimeoutMs, maxStreams: 16, answerIdleMs, onStalled: () => {}, onEnded: (reason) => ended.push(reason) })
    cleanup.add(() => h2.destroyAll())
    const server = net.createServer((socket) => h2.accept(socket))
    await new Promise<void>((resolve) => server.listen(0, LOOPBACK, resolve))
    cleanup.add(() => new Promise<void>((resolve) => server.close(() => resolve())))
    const session = http2.connect(`http://${LOOPBACK}:${(server.address() as net.AddressInfo).port}`)
    cleanup.add(() => session.destroy())
    session.on("error", () => {})
    const goaway = new Promise<{ readonly code: number; readonly debug: string }>((resolve) =>
      session.on("goaway", (code, _last, debug) => resolve({ code, debug: debug?.toString() ?? "" })))
    await new Promise<void>((resolve) => session.once("connect", () => resolve()))
    return { session, goaway, ended }
  }

  const ping = (session: http2.ClientHttp2Session): Promise<void> =>
    new Promise((resolve, reject) => void session.ping((error) => (error === null ? resolve() : reject(error))))

  it("a session with no stream, PINGing once per 1.1 s, gets GOAWAY NO_ERROR, not before its 1.5 s idle timeout: PINGs do not keep it", async ({ cleanup }) => {
    const { session, goaway } = await listener(cleanup, 1500, 400)
    const started = performance.now()
    const pinging = setInterval(() => void ping(session).catch(() => {}), 1100)
    cleanup.add(() => clearInterval(pinging))
    expect((await withTimeout(goaway, 20_000, "the GOAWAY")).code).toBe(http2.constants.NGHTTP2_NO_ERROR)
    // The sweep's bound is twice the idle timeout with no stream; on a loaded machine it may come later, never before.
    expect(performance.now() - started).toBeGreaterThanOrEqual(1500)
  }, 60_000)

  it("a session whose short calls come one after another, every 200 ms, keeps going past twice its 1.5 s idle timeout: the sweep counts the streams it did not see open", async ({ cleanup }) => {
    const { session, goaway } = await listener(cleanup, 1500, 400)
    let gone = false
    void goaway.then(() => (gone = true))
    const started = performance.now()
    // Each call is over within a turn or two at A: the sweep (every 100 ms) rarely finds one open.
    for (let i = 0; performance.now() - started < 5000 && !gone; i++) {
      const done = session.request({ ":path": "/done", ":authority": "catalog" })
      done.on("error", () => {})
      await withTimeout(new Promise<void>((resolve) => done.on("close", () => resolve()).resume()), 10_000, `call ${i}'s end`)
      await new Promise((resolve) => setTimeout(resolve, 200))
    }
    expect(gone).toBe(false)
  }, 60_000)

  it("PINGs back to back with no stream open: GOAWAY ENHANCE_YOUR_CALM too_many_pings", async ({ cleanup }) => {
    const { session, goaway, ended } = await listener(cleanup, 60_000)
    let gone = false
    void goaway.then(() => (gone = true))
    for (let i = 0; i < 100 && !gone && !session.destroyed; i++) await ping(session).catch(() => {})
    expect(await withTimeout(goaway, 20_000, "the GOAWAY")).toStrictEqual({ code: http2.constants.NGHTTP2_ENHANCE_YOUR_CALM, debug: "too_many_pings" })
    expect(ended).toStrictEqual(["too_many_pings"])
  }, 60_000)

  it("PINGs back to back while a stream is open are answered; the session goes on", async ({ cleanup }) => {
    const { session } = await listener(cleanup, 60_000)
    const quiet = session.request({ ":path": "/quiet", ":authority": "catalog" })
    quiet.on("error", () => {})
    await new Promise<void>((resolve) => quiet.once("response", () => resolve()))
    for (let i = 0; i < 20; i++) await withTimeout(ping(session), 10_000, `PING ${i}'s ACK`)
    const done = session.request({ ":path": "/done", ":authority": "catalog" })
    const status = await withTimeout(new Promise<number>((resolve) => done.once("response", (head) => resolve(Number(head[":status"])))), 10_000, "the answer")
    expect(status).toBe(200)
    expect(session.closed).toBe(false)
  }, 60_000)

  it("calls one after another, each answer's DATA followed by a PING (grpc-go's BDP probe), arriving with no stream open: the session goes on", async ({ cleanup }) => {
    const { session, goaway } = await listener(cleanup, 60_000)
    let gone = false
    void goaway.then(() => (gone = true))
    for (let i = 0; i < 10; i++) {
      const done = session.request({ ":path": "/done", ":authority": "catalog" })
      done.on("error", () => {})
      // As grpc-go's client does: a PING as its answer's data comes in, its ACK awaited before the next.
      const acked = new Promise<boolean>((resolve) => done.once("data", () => void ping(session).then(() => resolve(true), () => resolve(false))))
      await withTimeout(new Promise<void>((resolve) => done.on("close", () => resolve()).resume()), 10_000, `call ${i}'s end`)
      expect(await withTimeout(acked, 10_000, `PING ${i}'s ACK`), `PING ${i} acknowledged`).toBe(true)
    }
    expect(gone).toBe(false)
    expect(session.closed || session.destroyed).toBe(false)
  }, 60_000)

  it("a caller that PINGs back to back while it holds an answer's unread tail (the stream closed at A, its reader paused) gets the whole answer", async ({ cleanup }) => {
    const size = 256 * 1024
    let closedAtA: (finished: boolean) => void = () => {}
    const answered = new Promise<boolean>((resolve) => (closedAtA = resolve))
    const h2 = makeH2c((call) => {
      call.onClose(closedAtA)
      call.writeHead(200, [["content-length", String(size)]])
      call.end(Buffer.alloc(size))
    }, { idleTimeoutMs: 60_000, maxStreams: 16, answerIdleMs: 60_000, onStalled: () => {}, onEnded: () => {} })
    cleanup.add(() => h2.destroyAll())
    const server = net.createServer((socket) => h2.accept(socket))
    await new Promise<void>((resolve) => server.listen(0, LOOPBACK, resolve))
    cleanup.add(() => new Promise<void>((resolve) => server.close(() => resolve())))
    // Windows larger than the answer: all of it leaves A while the caller reads none.
    const session = http2.connect(`http://${LOOPBACK}:${(server.address() as net.AddressInfo).port}`, { settings: { initialWindowSize: 4 * size } })
    cleanup.add(() => session.destroy())
    session.on("error", () => {})
    await new Promise<void>((resolve) => session.once("connect", () => resolve()))
    session.setLocalWindowSize(4 * size)
    let goaway: number | undefined
    session.on("goaway", (code) => (goaway = code))
    const stream = session.request({ ":path": "/tail", ":authority": "catalog" })
    stream.pause()
    let read = 0
    let failure: unknown
    stream.on("data", (chunk: Buffer) => (read += chunk.length))
    stream.on("error", (error) => (failure = error))
    const ended = new Promise<boolean>((resolve) => {
      stream.once("end", () => resolve(true))
      stream.once("close", () => resolve(false))
    })
    expect(await withTimeout(answered, 10_000, "the stream's close at A")).toBe(true)
    // The stream is over at A, its answer unread at the caller, which PINGs as a busy client does.
    for (let i = 0; i < 10; i++) await withTimeout(ping(session), 10_000, `PING ${i}'s ACK`)
    stream.resume()
    expect(await withTimeout(ended, 10_000, "the answer's end")).toBe(true)
    expect({ read, failure, goaway }).toStrictEqual({ read: size, failure: undefined, goaway: undefined })
  }, 60_000)

  // Paced 5 ms apart (200 a second at most, src/h2's PING flood budget's rate): back to back, as
  // against node's server, this caller spends that budget first (GOAWAY ping-flood) within 400 ms.
  it("a caller that read its answer whole, then PINGs 5 ms apart: GOAWAY ENHANCE_YOUR_CALM too_many_pings once an answer idle timeout passed", async ({ cleanup }) => {
    const { session, goaway } = await listener(cleanup, 60_000, 400)
    let gone = false
    void goaway.then(() => (gone = true))
    // Before the request: the stream's close at A, from which the 400 ms count, comes after.
    const started = performance.now()
    const done = session.request({ ":path": "/done", ":authority": "catalog" })
    done.on("error", () => {})
    const read = new Promise<void>((resolve) => done.on("end", () => resolve()).resume())
    await withTimeout(read, 10_000, "the answer's end")
    while (!gone && !session.destroyed && performance.now() - started < 20_000) {
      await ping(session).catch(() => {})
      await new Promise((resolve) => setTimeout(resolve, 5))
    }
    expect(await withTimeout(goaway, 20_000, "the GOAWAY")).toStrictEqual({ code: http2.constants.NGHTTP2_ENHANCE_YOUR_CALM, debug: "too_many_pings" })
    expect(performance.now() - started).toBeGreaterThanOrEqual(400)
  }, 60_000)

  it("a grpc-js channel with keepalive on (1.2 s, without calls) through A and B: idle for 3 PINGs, then a call succeeds", async ({ cleanup }) => {
    const server = new grpc.Server()
    server.addService(METHODS, { echo: (call: grpc.ServerUnaryCall<Buffer, Buffer>, callback: grpc.sendUnaryData<Buffer>) => callback(null, call.request) })
    const port = await new Promise<number>((resolve, reject) =>
      server.bindAsync(`${LOOPBACK}:0`, grpc.ServerCredentials.createInsecure(), (error, bound) => (error === null ? resolve(bound) : reject(error))))
    cleanup.add(() => server.forceShutdown())
    const b = await startSidecar(cleanup, sidecarConfig({ service: "inventory", app: `${LOOPBACK}:${port}`, appProtocol: "h2c", tracing: false }))
    const a = await startSidecar(cleanup, sidecarConfig({ service: "store", tracing: false, endpoints: { inventory: [{ address: b.inboundAddress, weight: 1 }] } }))
    // Between the client and A, a pipe that counts the client's bytes (a PING is 17).
    let fromClient = 0
    const pipe = net.createServer((client) => {
      const upstream = net.connect(a.outboundPort, LOOPBACK)
      client.on("data", (chunk: Buffer) => (fromClient += chunk.length))
      client.on("error", () => upstream.destroy())
      upstream.on("error", () => client.destroy())
      client.pipe(upstream).pipe(client)
    })
    await new Promise<void>((resolve) => pipe.listen(0, LOOPBACK, resolve))
    cleanup.add(() => new Promise<void>((resolve) => pipe.close(() => resolve())))
    const client = new InventoryClient(`${LOOPBACK}:${(pipe.address() as net.AddressInfo).port}`, grpc.credentials.createInsecure(), {
      "grpc.default_authority": "inventory",
      "grpc.keepalive_time_ms": 1200,
      "grpc.keepalive_permit_without_calls": 1
    })
    cleanup.add(() => client.close())
    const echo = (text: string) => unaryText(client, METHODS.echo.path, text, new grpc.Metadata())
    expect(await echo("first")).toBe("first")
    const afterFirst = fromClient
    await waitFor(() => fromClient >= afterFirst + 3 * 17, 20_000, "three keepalive PINGs")
    expect(await echo("second")).toBe("second")
  }, 60_000)
})
