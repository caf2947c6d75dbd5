// An upgrade the outbound sidecar answers without a switch (an error of its own, or the far app's
// answer other than 101: outboundUpgrade.ts) is the connection's last answer. The socket was
// ended (a FIN) and left to the caller: the listener is half-open, so a caller that read the
// answer and kept its side open held the socket, and a place among the app connections
// (--max-app-connections), for as long as it liked. Now the socket closes once the answer is out,
// and a caller that takes none of it is cut after the upgrade idle timeout. Failed before: with
// one app connection allowed, no later caller was ever answered.
import * as net from "node:net"
import { afterEach, beforeEach, describe, expect, it } from "vitest"
import type { SidecarConfig } from "../../src/config/sidecarConfig.ts"
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

  /** A (one app connection at a time, `a` its other settings) before B, whose app is `handler`. */
  const behindB = async (handler: Parameters<typeof startApp>[1], a: Partial<SidecarConfig> = {}) => {
    const app = await startApp(cleanup, handler)
    const b = await startSidecar(cleanup, sidecarConfig({ service: "catalog", app: app.address }))
    return startSidecar(cleanup, sidecarConfig({ service: "store", maxAppConnections: 1, endpoints: { catalog: [{ address: b.inboundAddress, weight: 1 }] }, ...a }))
  }

  /** B's app answers every request 403, an upgrade's too. */
  const appRefuses = async () =>
    behindB((_req, res) => {
      res.writeHead(403, { "content-type": "text/plain" })
      res.end("no upgrade here")
    })

  /**
   * A later caller's answer to a plain request, once A's one place among the app connections is
   * free (A drops a connection past the cap at once: a try that fails is retried, within a bound).
   */
  const laterAnswer = async (a: RunningSidecar, withinMs: number): Promise<Answer | undefined> => {
    let answer: Answer | undefined
    for (const started = performance.now(); answer === undefined && performance.now() - started < withinMs;) {
      answer = await call(a.outboundPort, { path: "/plain", headers: { host: "catalog" }, timeoutMs: 2000 }).catch(() => undefined)
    }
    return answer
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
    // The one place is free again once A closed its side: a later caller is answered.
    const answer = await laterAnswer(a, 10_000)
    expect(answer?.status).toBe(statusLine === "HTTP/1.1 503 " ? 503 : 403)
  }, 30_000)

  it("the far app's endless answer (403) to a caller that reads none of it and keeps sending: cut after the upgrade idle timeout with none of it taken, its place among the app connections free", async () => {
    // The answer runs until the app's connection ends: more than any socket buffers hold, whatever their size.
    const chunk = Buffer.alloc(64 * 1024, 0x61)
    const a = await behindB((req, res) => {
      if (req.headers.upgrade === undefined) return void res.end("plain")
      res.writeHead(403, { "content-type": "text/plain" })
      const pump = (): void => {
        while (!res.destroyed && res.write(chunk)) {}
        if (!res.destroyed) res.once("drain", pump)
      }
      pump()
    }, { upgradeIdleTimeoutMs: 500 })
    const socket = net.connect({ port: a.outboundPort, host: LOOPBACK })
    cleanup.add(() => socket.destroy())
    socket.on("error", () => {})
    socket.pause()
    socket.write("GET /live HTTP/1.1\r\nhost: catalog\r\nconnection: upgrade\r\nupgrade: websocket\r\n\r\n")
    // A byte well within every idle timeout: the caller is never silent, it only takes nothing.
    const chatter = setInterval(() => socket.writable && socket.write("x"), 100)
    cleanup.add(() => clearInterval(chatter))
    // Its place is free once A cut it.
    const answer = await laterAnswer(a, 15_000)
    expect(answer?.status).toBe(200)
    expect(answer?.body.toString()).toBe("plain")
  }, 30_000)
})
