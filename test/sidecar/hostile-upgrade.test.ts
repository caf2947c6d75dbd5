// Hostile upgrades (PROTOCOL.md §17.4) through app <- sidecar B <- sidecar A, with raw sockets:
// - `Upgrade: h2c` (h2c smuggling): an app that switches would give the caller an HTTP/2
//   connection carrying any number of requests past the one request B authorized, rate-limited and
//   observed. A carries the request as an ordinary one (answered, then the connection closes);
//   B refuses an `http-upgrade` naming h2c from a peer;
// - an app (or a peer) that switches to a protocol the caller never asked for: 502, no tunnel;
// - a far app that never answers the upgrade: 504 within the caller's deadline, the app's socket closed;
// - more WebSockets to one endpoint than A's client keeps channels (2 connections x 16): each holds
//   a channel for its life, and they took every one, so every later request to that endpoint
//   waited for its deadline. Streams now take channels beyond that (up to half what the far side
//   takes per connection), and ordinary requests always find one.
import type * as http from "node:http"
import * as net from "node:net"
import { afterEach, beforeEach, describe, expect, it } from "vitest"
import { RemoteError } from "../../src/mux/meshSession.ts"
import { HttpMeta, requestMeta } from "../../src/sidecar/httpEnvelope.ts"
import { Cleanup, withTimeout } from "../support/iipRaw.ts"
import { rejection, startClient } from "../support/meshTest.ts"
import { call, startMesh } from "../support/sidecarHarness.ts"

/** Writes raw bytes to `port` and collects what comes back until `enough` holds of it (then the socket is destroyed) or the connection closes. */
const rawExchange = (cleanup: Cleanup, port: number, bytes: string, enough: (got: string) => boolean = () => false): Promise<string> =>
  withTimeout(
    new Promise((resolve, reject) => {
      const socket = net.connect(port, "127.0.0.1", () => socket.write(bytes))
      cleanup.add(() => socket.destroy())
      let got = ""
      socket.setEncoding("latin1")
      socket.on("data", (chunk: string) => {
        got += chunk
        if (!enough(got)) return
        socket.destroy()
        resolve(got)
      })
      socket.on("close", () => resolve(got))
      socket.on("error", reject)
    }),
    5000,
    "the raw exchange to end"
  )

/**
 * An app that answers plain requests with "plain" and switches to whatever protocol an upgrade
 * names (an h2c server would then speak HTTP/2 on the socket); `/other` switches to `h2c` whatever
 * was asked; `/silent` never answers.
 */
const switchingApp = (upgrades: Array<string>, sockets: Array<Promise<void>>, opened: Array<net.Socket>) => ({
  handler: ((_req, res) => res.end("plain")) as http.RequestListener,
  onUpgrade: (req: http.IncomingMessage, socket: net.Socket) => {
    upgrades.push(`${req.url} ${req.headers.upgrade}`)
    // Gone when B ends or closes its side (node's HTTP server leaves the socket half-open).
    sockets.push(new Promise((resolve) => {
      socket.once("end", resolve)
      socket.once("close", resolve)
    }))
    socket.on("error", () => {})
    opened.push(socket)
    if (req.url === "/silent") return
    const to = req.url === "/other" ? "h2c" : req.headers.upgrade
    socket.write(`HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: ${to}\r\n\r\ntunnel-bytes`)
  }
})

const H2C_UPGRADE = "connection: Upgrade, HTTP2-Settings\r\nupgrade: h2c\r\nhttp2-settings: AAMAAABkAAQAoAAAAAIAAAAA\r\n"

describe("hostile upgrades", () => {
  let cleanup: Cleanup
  let upgrades: Array<string>
  /** One promise per upgrade the app saw: settled once B let go of that socket. */
  let appSockets: Array<Promise<void>>
  /** The app's side of every upgraded socket, destroyed at cleanup. */
  let opened: Array<net.Socket>
  const mesh = async () => {
    const app = switchingApp(upgrades, appSockets, opened)
    const started = await startMesh(cleanup, app.handler)
    started.app.server.on("upgrade", app.onUpgrade)
    cleanup.add(() => opened.forEach((socket) => socket.destroy()))
    return started
  }
  beforeEach(() => {
    cleanup = new Cleanup()
    upgrades = []
    appSockets = []
    opened = []
  })
  afterEach(() => cleanup.run())

  it("Upgrade: h2c (h2c smuggling) reaches the app as an ordinary request, answered and closed, never switched", async () => {
    const { a, app } = await mesh()
    const answer = await rawExchange(cleanup, a.outboundPort, `GET /h2 HTTP/1.1\r\nhost: catalog\r\n${H2C_UPGRADE}\r\nPRI * HTTP/2.0\r\n\r\nSM\r\n\r\n`)
    expect(answer).toMatch(/^HTTP\/1\.1 200 /)
    expect(answer).toContain("\r\nconnection: close\r\n")
    expect(answer).toMatch(/\r\n\r\nplain$/)
    expect(upgrades).toEqual([])
    expect(app.seen.map((r) => `${r.method} ${r.url} ${r.headers.upgrade} ${r.headers["content-length"]} ${r.headers["transfer-encoding"]}`)).toEqual(["GET /h2 undefined undefined undefined"])
  })

  it("h2c beside websocket: only websocket is asked of the app", async () => {
    const { a } = await mesh()
    const answer = await rawExchange(cleanup, a.outboundPort, "GET /ws HTTP/1.1\r\nhost: catalog\r\nconnection: upgrade\r\nupgrade: h2c, websocket\r\n\r\n", (got) => got.endsWith("tunnel-bytes"))
    expect(answer).toMatch(/^HTTP\/1\.1 101 /)
    expect(answer).toContain("\r\nupgrade: websocket\r\n")
    expect(upgrades).toEqual(["/ws websocket"])
  })

  it("a peer's http-upgrade naming h2c is refused bad_request, unprocessed, and the app sees nothing", async () => {
    const { b, app } = await mesh()
    const client = startClient(cleanup, Number(b.inboundAddress.split(":")[1]))
    const meta = requestMeta("GET", "catalog", []).set(HttpMeta.upgrade, "h2c")
    const error = await rejection(client.stream("/h2", (async function*() {})(), { meta, timeoutMs: 5000 }))
    expect(error).toBeInstanceOf(RemoteError)
    expect((error as RemoteError).code).toBe("bad_request")
    expect((error as RemoteError).processed).toBe(false)
    expect(upgrades).toEqual([])
    expect(app.seen).toEqual([])
  })

  it("an app switching to a protocol the caller never asked for: 502 to the caller, no tunnel", async () => {
    const { a } = await mesh()
    const answer = await rawExchange(cleanup, a.outboundPort, "GET /other HTTP/1.1\r\nhost: catalog\r\nconnection: upgrade\r\nupgrade: websocket\r\n\r\n")
    expect(answer).toMatch(/^HTTP\/1\.1 502 /)
    expect(answer).not.toContain("tunnel-bytes")
    expect(upgrades).toEqual(["/other websocket"])
    await withTimeout(Promise.all(appSockets), 2000, "B to let go of the app's socket")
  })

  it("a far app that never answers the upgrade: 504 within the caller's iip-timeout, the app's socket closed", async () => {
    const { a } = await mesh()
    const started = performance.now()
    const answer = await rawExchange(cleanup, a.outboundPort, "GET /silent HTTP/1.1\r\nhost: catalog\r\nconnection: upgrade\r\nupgrade: websocket\r\niip-timeout: 300\r\n\r\n")
    expect(answer).toMatch(/^HTTP\/1\.1 504 /)
    expect(performance.now() - started).toBeLessThan(1500)
    expect(upgrades).toEqual(["/silent websocket"])
    await withTimeout(Promise.all(appSockets), 2000, "B to let go of the app's socket")
  })

  it("40 WebSockets open to one endpoint (more than A's client keeps channels) leave ordinary requests answered, and each tunnel still carries bytes", async () => {
    const { a } = await mesh()
    const tunnels: Array<net.Socket> = []
    const open = async (i: number): Promise<net.Socket> => {
      const socket = net.connect(a.outboundPort, "127.0.0.1")
      cleanup.add(() => socket.destroy())
      socket.setEncoding("latin1")
      let got = ""
      const switched = new Promise<string>((resolve, reject) => {
        const onData = (chunk: string) => {
          got += chunk
          if (!got.endsWith("tunnel-bytes")) return
          socket.off("data", onData)
          resolve(got)
        }
        socket.on("data", onData)
        socket.on("error", reject)
      })
      socket.write(`GET /t${i} HTTP/1.1\r\nhost: catalog\r\nconnection: upgrade\r\nupgrade: echo\r\n\r\n`)
      expect(await withTimeout(switched, 2000, `tunnel ${i} to open`)).toMatch(/^HTTP\/1\.1 101 /)
      return socket
    }
    for (let i = 0; i < 40; i++) tunnels.push(await open(i))
    const plain = await call(a.outboundPort, { path: "/plain", timeoutMs: 2000 })
    expect(plain.status).toBe(200)
    expect(plain.body.toString()).toBe("plain")
    // The app echoes nothing: what a tunnel carries shows at the app's end of it.
    const last = opened.at(-1)!
    const arrived = new Promise<string>((resolve) => last.once("data", (chunk: Buffer) => resolve(chunk.toString())))
    tunnels.at(-1)!.write("ping")
    expect(await withTimeout(arrived, 2000, "bytes through the last tunnel")).toBe("ping")
  })

  it("an app that does not switch and answers until its connection closes: the caller gets that answer, and nothing throws", async () => {
    // Node's server with no upgrade listener answers an upgrade request as an ordinary one, framed by the close.
    const { a } = await startMesh(cleanup, (_req, res) => res.end("not switched"))
    const answer = await rawExchange(cleanup, a.outboundPort, "GET /ws HTTP/1.1\r\nhost: catalog\r\nconnection: upgrade\r\nupgrade: websocket\r\n\r\n", (got) => got.endsWith("not switched"))
    expect(answer).toMatch(/^HTTP\/1\.1 200 /)
    expect(answer).toMatch(/\r\n\r\nnot switched$/)
    // B's end of the answer (where it threw) runs after the caller has it: a later request shows B went on.
    const plain = await call(a.outboundPort, { path: "/after", timeoutMs: 2000 })
    expect(plain.status).toBe(200)
  })
})
