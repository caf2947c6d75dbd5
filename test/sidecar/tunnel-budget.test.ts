// Open WebSockets through the mesh and sidecar B's inbound budgets: once its 101 is back, an
// upgraded connection holds a channel and a place among B's open tunnels (`maxTunnels`), not a
// queued-request place: many open WebSockets never make B refuse ordinary requests `overloaded`.
// The tunnels themselves are bounded: past `maxTunnels` a new upgrade is refused (503 overloaded,
// the limit named, the app never asked), and a closed one makes room again, as does one the app
// refused, never answered or the caller cancelled, or whose mesh connection closed; an upgrade
// sent one-way is refused (it would hold a place nobody reads). The channels a burst
// of WebSockets made A open past its request channels per connection are closed once the WebSockets are, on
// both sidecars (PROTOCOL.md §11 `/sys/close`), and the next burst opens them again.
import type * as http from "node:http"
import type * as net from "node:net"
import { afterEach, beforeEach, describe, expect, it } from "vitest"
import WebSocket, { WebSocketServer } from "ws"
import { REQUEST_CHANNELS_PER_CONNECTION } from "../../src/sidecar/endpoints.ts"
import { HttpMeta, requestMeta } from "../../src/sidecar/httpEnvelope.ts"
import { Cleanup, waitFor, withTimeout } from "../support/iipRaw.ts"
import { startClient } from "../support/meshTest.ts"
import { parsePrometheusText, value } from "../support/prometheusText.ts"
import { call, type RunningSidecar, sidecarConfig, startApp, startSidecar } from "../support/sidecarHarness.ts"
import { upgradeRefusal } from "../support/upgradeAnswer.ts"

/** An app answering "plain" to requests, whose WebSocket server echoes; counts the upgrades it saw and its open sockets. */
const startWsApp = async (cleanup: Cleanup) => {
  const app = await startApp(cleanup, (req, res) => {
    req.resume()
    res.end("plain")
  })
  const wss = new WebSocketServer({ noServer: true })
  const state = { upgrades: 0, open: 0 }
  app.server.on("upgrade", (req: http.IncomingMessage, socket: net.Socket, head: Buffer) => {
    state.upgrades++
    wss.handleUpgrade(req, socket, head, (ws) => {
      state.open++
      ws.on("message", (data, isBinary) => ws.send(data, { binary: isBinary }))
      ws.on("close", () => state.open--)
    })
  })
  cleanup.add(() => {
    for (const ws of wss.clients) ws.terminate()
    wss.close()
  })
  return { app, state }
}

const open = (cleanup: Cleanup, a: RunningSidecar): Promise<WebSocket> => {
  const ws = new WebSocket(`ws://127.0.0.1:${a.outboundPort}/live`, { headers: { host: "catalog" } })
  cleanup.add(() => ws.terminate())
  return withTimeout(
    new Promise<WebSocket>((resolve, reject) => {
      ws.once("open", () => resolve(ws))
      ws.once("error", reject)
    }),
    10_000,
    "the WebSocket to open"
  )
}

const echoed = (ws: WebSocket, text: string): Promise<string> => {
  const got = withTimeout(new Promise<string>((resolve) => ws.once("message", (data) => resolve(String(data)))), 10_000, "the echo")
  ws.send(text)
  return got
}

/** The non-101 answer to an upgrade. */
const refusal = (cleanup: Cleanup, a: RunningSidecar) => {
  const ws = new WebSocket(`ws://127.0.0.1:${a.outboundPort}/live`, { headers: { host: "catalog" } })
  ws.on("error", () => {})
  cleanup.add(() => ws.terminate())
  return upgradeRefusal(ws)
}

describe("open WebSockets and B's inbound budgets", () => {
  let cleanup: Cleanup
  beforeEach(() => {
    cleanup = new Cleanup()
  })
  afterEach(() => cleanup.run())

  const pair = async (
    b: { readonly maxQueuedRequests?: number; readonly maxTunnels?: number; readonly maxTunnelsPerPeer?: number; readonly maxQueuedBytes?: number },
    aConfig: { readonly maxQueuedBytes?: number; readonly maxTunnels?: number; readonly maxTunnelsPerPeer?: number } = {}
  ) => {
    const wsApp = await startWsApp(cleanup)
    const bSidecar = await startSidecar(cleanup, sidecarConfig({ service: "catalog", app: wsApp.app.address, ...b }))
    const a = await startSidecar(cleanup, sidecarConfig({ service: "store", ...aConfig, endpoints: { catalog: [{ address: bSidecar.inboundAddress, weight: 1 }] } }))
    return { wsApp, a, b: bSidecar }
  }

  it("more open WebSockets than B's maxQueuedRequests: ordinary requests still get their answers", async () => {
    const { a } = await pair({ maxQueuedRequests: 4 })
    const sockets: Array<WebSocket> = []
    for (let i = 0; i < 8; i++) sockets.push(await open(cleanup, a))
    for (let i = 0; i < 10; i++) {
      const answer = await call(a.outboundPort, { path: "/plain", headers: { host: "catalog" } })
      expect(answer.status, answer.body.toString()).toBe(200)
      expect(answer.body.toString()).toBe("plain")
    }
    // And the WebSockets all still work.
    for (const [i, ws] of sockets.entries()) expect(await echoed(ws, `m${i}`)).toBe(`m${i}`)
  }, 60_000)

  it("past maxTunnels a new upgrade is refused 503 overloaded before the app sees it, plain requests go on, and a closed WebSocket makes room", async () => {
    const { a, wsApp } = await pair({ maxTunnels: 3 })
    const sockets: Array<WebSocket> = []
    for (let i = 0; i < 3; i++) sockets.push(await open(cleanup, a))
    const refused = await refusal(cleanup, a)
    expect(refused.status).toBe(503)
    expect(refused.headers["x-iip-mesh-error"]).toBe("inbound; reason=overloaded")
    expect(JSON.parse(refused.body).message).toMatch(/3 upgraded connections open.*maxTunnels/)
    expect(wsApp.state.upgrades).toBe(3)
    expect((await call(a.outboundPort, { path: "/plain", headers: { host: "catalog" } })).status).toBe(200)
    sockets[0]!.close()
    await waitFor(() => wsApp.state.open === 2, 5000, "the app's socket to close")
    // B counts the tunnel out once its app connection closed: the next one opens (bounded wait for that).
    let reopened: WebSocket | undefined
    for (const started = performance.now(); reopened === undefined && performance.now() - started < 5000;) {
      reopened = await open(cleanup, a).catch(() => undefined)
    }
    expect(reopened).toBeDefined()
    expect(await echoed(reopened!, "again")).toBe("again")
  }, 60_000)

  /** The next upgrade through A is refused at `hop` for the `held` its peer (127.0.0.1) holds, and `counter` (the sidecar at that hop) counts it. */
  const refusedPerPeer = async (a: RunningSidecar, counter: RunningSidecar, hop: "inbound" | "outbound", held: number) => {
    const refused = await refusal(cleanup, a)
    expect(refused.status).toBe(503)
    expect(refused.headers["x-iip-mesh-error"]).toBe(`${hop}; reason=overloaded`)
    expect(JSON.parse(refused.body).message).toMatch(new RegExp(`${held} upgraded connections open from 127\\.0\\.0\\.1.*maxTunnelsPerPeer`))
    expect(value(parsePrometheusText((await counter.sidecar.telemetry.metrics.text()).body), "iip_mesh_tunnels_refused_total", { direction: hop, limit: "per_peer" })).toBe(1)
  }

  it("past maxTunnelsPerPeer a peer sidecar's next upgrade is refused 503 overloaded at B, though maxTunnels has room; counted, and a closed one makes room", async () => {
    const { a, b, wsApp } = await pair({ maxTunnels: 10, maxTunnelsPerPeer: 2 })
    const sockets = [await open(cleanup, a), await open(cleanup, a)]
    await refusedPerPeer(a, b, "inbound", 2)
    expect(wsApp.state.upgrades).toBe(2)
    sockets[0]!.close()
    await waitFor(() => wsApp.state.open === 1, 5000, "the app's socket to close")
    let reopened: WebSocket | undefined
    for (const started = performance.now(); reopened === undefined && performance.now() - started < 5000;) {
      reopened = await open(cleanup, a).catch(() => undefined)
    }
    expect(await echoed(reopened!, "again")).toBe("again")
  }, 60_000)

  it("at A maxTunnelsPerPeer bounds nothing (its callers are the pod's own apps, all 127.0.0.1): maxTunnels alone refuses, at the outbound hop before B is asked", async () => {
    const { a, wsApp } = await pair({}, { maxTunnels: 3, maxTunnelsPerPeer: 1 })
    const sockets: Array<WebSocket> = []
    for (let i = 0; i < 3; i++) sockets.push(await open(cleanup, a))
    const refused = await refusal(cleanup, a)
    expect(refused.status).toBe(503)
    expect(refused.headers["x-iip-mesh-error"]).toBe("outbound; reason=overloaded")
    expect(JSON.parse(refused.body).message).toMatch(/3 upgraded connections open, as many as maxTunnels allows/)
    const metrics = parsePrometheusText((await a.sidecar.telemetry.metrics.text()).body)
    expect(value(metrics, "iip_mesh_tunnels_refused_total", { direction: "outbound", limit: "tunnels" })).toBe(1)
    expect(value(metrics, "iip_mesh_tunnels_refused_total", { direction: "outbound", limit: "per_peer" })).toBe(0)
    expect(wsApp.state.upgrades).toBe(3)
    for (const [i, ws] of sockets.entries()) expect(await echoed(ws, `still${i}`)).toBe(`still${i}`)
  }, 30_000)

  it("maxQueuedBytes below a stream window (512 KiB) at A and B: WebSockets still open one after another, an empty tunnels' pool admitting one", async () => {
    const { a, wsApp } = await pair({ maxQueuedBytes: 512 * 1024 }, { maxQueuedBytes: 512 * 1024 })
    // Each echo is read to the end: the pools are empty again when the next upgrade comes.
    for (let i = 0; i < 3; i++) expect(await echoed(await open(cleanup, a), `m${i}`)).toBe(`m${i}`)
    expect(wsApp.state.open).toBe(3)
  }, 30_000)

  it("a tunnel whose caller ended its side, on a mesh connection that then closes: B closes its socket to the app and counts the tunnel out", async () => {
    // The app keeps its side of every upgraded socket open after B's FIN (node's HTTP server leaves it half-open).
    const app = await startApp(cleanup, (_req, res) => res.end("plain"))
    app.server.on("upgrade", (_req: http.IncomingMessage, socket: net.Socket) => {
      socket.on("error", () => {})
      cleanup.add(() => socket.destroy())
      socket.write("HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: websocket\r\n\r\nhi")
    })
    const b = await startSidecar(cleanup, sidecarConfig({ service: "catalog", app: app.address, maxTunnels: 1 }))
    const port = Number(b.inboundAddress.split(":")[1])
    const upgrade = (client: ReturnType<typeof startClient>) =>
      client.stream("/live", (async function*() {})(), { meta: requestMeta("GET", "catalog", []).set(HttpMeta.upgrade, "websocket"), timeoutMs: 5000 })
    const caller = startClient(cleanup, port, { maxConnections: 1 })
    const first = await upgrade(caller)
    expect(first.meta.get(HttpMeta.status)).toBe("101")
    expect(Buffer.from((await first.stream![Symbol.asyncIterator]().next()).value as Uint8Array).toString()).toBe("hi")
    // The mesh connection goes: nobody can read the app's bytes any more, and the tunnel must not
    // hold its place until the app ends it or stays silent for the upgrade idle timeout (5 min).
    caller.close()
    // B learns of the close when its socket does (no event tells the test): bounded retries.
    const next = startClient(cleanup, port, { maxConnections: 1 })
    let second: Awaited<ReturnType<typeof upgrade>> | undefined
    let refused: unknown
    for (const started = performance.now(); second === undefined && performance.now() - started < 5000;) {
      second = await upgrade(next).catch((error: unknown) => {
        refused = error
        return new Promise<undefined>((resolve) => setTimeout(() => resolve(undefined), 50))
      })
    }
    expect(second?.meta.get(HttpMeta.status), String(refused)).toBe("101")
  }, 30_000)

  it("an upgrade sent one-way (a push: nobody would read its tunnel) is refused before the app is asked, and holds no tunnel", async () => {
    const upgrades: Array<string> = []
    const app = await startApp(cleanup, (_req, res) => res.end("plain"))
    app.server.on("upgrade", (req: http.IncomingMessage, socket: net.Socket) => {
      upgrades.push(req.url ?? "")
      socket.on("error", () => {})
      cleanup.add(() => socket.destroy())
      // Open after B's FIN, as node's HTTP server leaves it.
      socket.write("HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: websocket\r\n\r\nhi")
    })
    const b = await startSidecar(cleanup, sidecarConfig({ service: "catalog", app: app.address, maxTunnels: 1 }))
    const client = startClient(cleanup, Number(b.inboundAddress.split(":")[1]), { maxConnections: 1 })
    const meta = requestMeta("GET", "catalog", []).set(HttpMeta.upgrade, "websocket")
    // A call first: the connection is in mesh mode, and B has read the push before the call after it.
    expect((await client.call("/plain", "", { meta: requestMeta("GET", "catalog", []), timeoutMs: 5000 })).toString()).toBe("plain")
    client.push("/pushed", "", meta)
    const tunnel = await client.stream("/live", (async function*() {})(), { meta, timeoutMs: 5000 })
    expect(tunnel.meta.get(HttpMeta.status)).toBe("101")
    expect(upgrades).toEqual(["/live"])
  }, 30_000)

  it("upgrades the app refuses, never answers, or the caller cancels give their maxTunnels place back", async () => {
    const app = await startApp(cleanup, (_req, res) => res.end("plain"))
    app.server.on("upgrade", (req: http.IncomingMessage, socket: net.Socket) => {
      socket.on("error", () => {})
      cleanup.add(() => socket.destroy())
      if (req.url === "/refuse") socket.end("HTTP/1.1 403 Forbidden\r\ncontent-length: 2\r\nconnection: close\r\n\r\nno")
      else if (req.url === "/live") socket.write("HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: websocket\r\n\r\nhi")
      // Anything else is never answered.
    })
    const b = await startSidecar(cleanup, sidecarConfig({ service: "catalog", app: app.address, maxTunnels: 1 }))
    const client = startClient(cleanup, Number(b.inboundAddress.split(":")[1]), { maxConnections: 1 })
    const meta = requestMeta("GET", "catalog", []).set(HttpMeta.upgrade, "websocket")
    const upgrade = (path: string, options: { readonly timeoutMs: number; readonly signal?: AbortSignal }) =>
      client.stream(path, (async function*() {})(), { meta, ...options })
    const refused = await upgrade("/refuse", { timeoutMs: 5000 })
    expect(refused.meta.get(HttpMeta.status)).toBe("403")
    await expect(upgrade("/silent", { timeoutMs: 300 })).rejects.toThrow()
    const controller = new AbortController()
    const cancelled = upgrade("/silent", { timeoutMs: 5000, signal: controller.signal })
    controller.abort()
    await expect(cancelled).rejects.toThrow()
    // Each gave its place back (B counts out as it learns of the end: bounded retries).
    let live: Awaited<ReturnType<typeof upgrade>> | undefined
    let error: unknown
    for (const started = performance.now(); live === undefined && performance.now() - started < 5000;) {
      live = await upgrade("/live", { timeoutMs: 5000 }).catch((e: unknown) => {
        error = e
        return new Promise<undefined>((resolve) => setTimeout(() => resolve(undefined), 50))
      })
    }
    expect(live?.meta.get(HttpMeta.status), String(error)).toBe("101")
  }, 30_000)

  it("more WebSockets at once than A's request channels take channels past them; once they close, A and B are back to at most the request channels per connection, and the next burst works", async () => {
    const { a, b } = await pair({})
    const channels = async (running: RunningSidecar, direction: string): Promise<number> => {
      const { body } = await running.sidecar.telemetry.metrics.text()
      const line = body.split("\n").find((l) => l.startsWith(`iip_mesh_open_channels{direction="${direction}"}`))
      return Number(line?.slice(line.lastIndexOf(" ") + 1) ?? Number.NaN)
    }
    // More than the request channels of A's 2 connections to B, so some must be stream channels.
    const count = 2 * REQUEST_CHANNELS_PER_CONNECTION + 12
    const burst = async () => {
      const sockets = await Promise.all(Array.from({ length: count }, () => open(cleanup, a)))
      const texts = await Promise.all(sockets.map((ws, i) => echoed(ws, `m${i}`)))
      expect(texts).toEqual(sockets.map((_, i) => `m${i}`))
      return sockets
    }
    const first = await burst()
    const connections = a.sidecar.registry.connectionCounts().connections
    expect(await channels(a, "outbound")).toBeGreaterThan(REQUEST_CHANNELS_PER_CONNECTION * connections)
    await Promise.all(first.map((ws) => new Promise<void>((resolve) => {
      ws.once("close", () => resolve())
      ws.close()
    })))
    // Bounded wait: the channels go once the tunnels' last packets are in (no event tells the test).
    const settled = async () => {
      const outbound = await channels(a, "outbound")
      return outbound <= REQUEST_CHANNELS_PER_CONNECTION * connections && (await channels(b, "inbound")) === outbound
    }
    for (const started = performance.now(); !(await settled()) && performance.now() - started < 10_000;) await new Promise((r) => setTimeout(r, 20))
    expect(await channels(a, "outbound")).toBeLessThanOrEqual(REQUEST_CHANNELS_PER_CONNECTION * connections)
    expect(await channels(b, "inbound")).toBe(await channels(a, "outbound"))
    expect((await call(a.outboundPort, { path: "/plain", headers: { host: "catalog" } })).status).toBe(200)
    const second = await burst()
    expect(second).toHaveLength(count)
  }, 60_000)
})
