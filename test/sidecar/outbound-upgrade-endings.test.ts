// An upgrade the outbound sidecar answers without a switch (an error of its own, or the far app's
// answer other than 101: outboundUpgrade.ts) is the connection's last answer. The socket was
// ended (a FIN) and left to the caller: the listener is half-open, so a caller that read the
// answer and kept its side open held the socket, and a place among the app connections
// (--max-app-connections), for as long as it liked. Now the socket closes once the answer is out,
// and a caller that takes none of it is cut after the upgrade idle timeout. Failed before: with
// one app connection allowed, no later caller was ever answered.
import * as net from "node:net"
import { afterEach, beforeEach, describe, expect, it } from "vitest"
import { Cleanup, withTimeout } from "../support/iipRaw.ts"
import { type Answer, call, LOOPBACK, type RunningSidecar, sidecarConfig, startApp, startSidecar } from "../support/sidecarHarness.ts"

describe("an upgrade answered without a switch, to a caller that keeps its side open", () => {
  let cleanup: Cleanup
  beforeEach(() => {
    cleanup = new Cleanup()
  })
  afterEach(() => cleanup.run())

  /** A (one app connection at a time) with no endpoint for catalog: its own 503 no_endpoint. */
  const noEndpoint = async () => startSidecar(cleanup, sidecarConfig({ service: "store", maxAppConnections: 1 }))

  /** A (one app connection at a time) before B, whose app answers every request 403, an upgrade's too. */
  const appRefuses = async () => {
    const app = await startApp(cleanup, (_req, res) => {
      res.writeHead(403, { "content-type": "text/plain" })
      res.end("no upgrade here")
    })
    const b = await startSidecar(cleanup, sidecarConfig({ service: "catalog", app: app.address }))
    return startSidecar(cleanup, sidecarConfig({ service: "store", maxAppConnections: 1, endpoints: { catalog: [{ address: b.inboundAddress, weight: 1 }] } }))
  }

  const setups: ReadonlyArray<readonly [string, () => Promise<RunningSidecar>, string]> = [
    ["A's own error (503 no_endpoint)", noEndpoint, "HTTP/1.1 503 "],
    ["the far app's answer (403)", appRefuses, "HTTP/1.1 403 "]
  ]

  it.each(setups)("%s: the socket closes once the answer is out, and its place among the app connections is free", async (_name, setup, statusLine) => {
    const a = await setup()
    // Half-open: the caller's side stays open after A's FIN, and it sends nothing more.
    const socket = net.connect({ port: a.outboundPort, host: LOOPBACK, allowHalfOpen: true })
    cleanup.add(() => socket.destroy())
    socket.on("error", () => {})
    socket.write("GET /live HTTP/1.1\r\nhost: catalog\r\nconnection: upgrade\r\nupgrade: websocket\r\n\r\n")
    let received = ""
    const head = new Promise<string>((resolve) =>
      socket.on("data", (chunk: Buffer) => {
        received += chunk.toString("latin1")
        if (received.includes("\r\n\r\n")) resolve(received)
      })
    )
    expect((await withTimeout(head, 10_000, "the answer's head")).startsWith(statusLine)).toBe(true)
    // The one place is free again once A closed its side: a later caller is answered (A drops a
    // connection past the cap at once, so a try that fails is retried, within a bound).
    let answer: Answer | undefined
    for (const started = performance.now(); answer === undefined && performance.now() - started < 10_000;) {
      answer = await call(a.outboundPort, { path: "/plain", headers: { host: "catalog" }, timeoutMs: 2000 }).catch(() => undefined)
    }
    expect(answer?.status).toBe(statusLine === "HTTP/1.1 503 " ? 503 : 403)
  }, 30_000)

  it("the far app's endless answer (403) to a caller that reads none of it and keeps sending: cut after the upgrade idle timeout with none of it taken, its place among the app connections free", async () => {
    // The answer runs until the app's connection ends: more than any socket buffers hold, whatever their size.
    const chunk = Buffer.alloc(64 * 1024, 0x61)
    const app = await startApp(cleanup, (req, res) => {
      if (req.headers.upgrade === undefined) return void res.end("plain")
      res.writeHead(403, { "content-type": "text/plain" })
      const pump = (): void => {
        while (!res.destroyed && res.write(chunk)) {}
        if (!res.destroyed) res.once("drain", pump)
      }
      pump()
    })
    const b = await startSidecar(cleanup, sidecarConfig({ service: "catalog", app: app.address }))
    const a = await startSidecar(cleanup, sidecarConfig({ service: "store", maxAppConnections: 1, upgradeIdleTimeoutMs: 500, endpoints: { catalog: [{ address: b.inboundAddress, weight: 1 }] } }))
    const socket = net.connect({ port: a.outboundPort, host: LOOPBACK })
    cleanup.add(() => socket.destroy())
    socket.on("error", () => {})
    socket.pause()
    socket.write("GET /live HTTP/1.1\r\nhost: catalog\r\nconnection: upgrade\r\nupgrade: websocket\r\n\r\n")
    // A byte well within every idle timeout: the caller is never silent, it only takes nothing.
    const chatter = setInterval(() => socket.writable && socket.write("x"), 100)
    cleanup.add(() => clearInterval(chatter))
    // Its place is free once A cut it (A drops a connection past the cap at once: a try that fails is retried, within a bound).
    let answer: Answer | undefined
    for (const started = performance.now(); answer === undefined && performance.now() - started < 15_000;) {
      answer = await call(a.outboundPort, { path: "/plain", headers: { host: "catalog" }, timeoutMs: 2000 }).catch(() => undefined)
    }
    expect(answer?.status).toBe(200)
    expect(answer?.body.toString()).toBe("plain")
  }, 30_000)
})
