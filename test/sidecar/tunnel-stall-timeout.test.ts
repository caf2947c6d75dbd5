// Tunnels that hold bytes with no progress are ended after the upgrade stall timeout (PROTOCOL.md
// §17.4, src/sidecar/tunnelStalls.ts), on either sidecar: at B when its app reads none of the
// caller's bytes (as when a caller left while A had paused its socket), at A when its caller reads
// none of the far app's. The bytes are released (the tunnels' gauge back to 0), the caller's
// WebSocket is closed, the end is counted and logged. A tunnel open as long but holding nothing
// stays open: whatever the machine's speed, it never holds a byte, so it is never ended here.
// Nothing is left behind at A either: no request body still waiting for B's credit (B's app gone
// with the caller's bytes unread: they are granted back), no answer still awaited (B ended it while
// A's caller read nothing either: its end waits for A's credit, and comes once A grants).
import type * as http from "node:http"
import type * as net from "node:net"
import { afterEach, beforeEach, describe, expect, it } from "vitest"
import WebSocket, { WebSocketServer } from "ws"
import type { SendWindow } from "../../src/mux/streams.ts"
import { Cleanup, readUntil } from "../support/iipRaw.ts"
import { collectLog } from "../support/meshTest.ts"
import { parsePrometheusText, sum } from "../support/prometheusText.ts"
import { type RunningSidecar, sidecarConfig, startApp, startSidecar } from "../support/sidecarHarness.ts"
import { upgradeAnswer } from "../support/upgradeAnswer.ts"

const STALL_MS = 200

/** Sends 64 KiB messages, each once the socket took the one before, until it closes: the pipe ends full. */
const pump = (ws: WebSocket): void => {
  const chunk = Buffer.alloc(64 * 1024, 1)
  const next = (): void => {
    if (ws.readyState === ws.OPEN) ws.send(chunk, { binary: true }, (error) => error === undefined || error === null ? next() : undefined)
  }
  next()
}

const metrics = async (sidecar: RunningSidecar) => parsePrometheusText((await sidecar.sidecar.telemetry.metrics.text()).body)

/** The tunnels' ended count (`labels`) and unread bytes (`direction`) of a sidecar, read until both are as wanted (bounded). */
const endedAndReleased = async (sidecar: RunningSidecar, direction: string, labels: Record<string, string>) => {
  const { value } = await readUntil(async () => {
    const families = await metrics(sidecar)
    return { ended: sum(families, "iip_mesh_request_errors_total", { direction, code: "101", ...labels }), unread: sum(families, "iip_mesh_tunnel_unread_bytes", { direction }) }
  }, (read) => read.ended === 1 && read.unread === 0, 10_000)
  return value
}

/** A's mesh sessions to B ("catalog"). */
const sessionsTo = (a: RunningSidecar) => a.sidecar.registry.clientOf(a.sidecar.registry.endpointsOf("catalog")[0]!).meshSessions

/** A's windows of request bodies still streaming to B (a tunnel's caller's bytes). */
const sendingTo = (a: RunningSidecar): Array<SendWindow> => {
  const windows: Array<SendWindow> = []
  for (const session of sessionsTo(a)) {
    for (let id = 0; id < 64; id++) {
      const window = session.sendingOn(id)
      if (window !== undefined) windows.push(window)
    }
  }
  return windows
}

describe("tunnels stalled past the upgrade stall timeout", () => {
  let cleanup: Cleanup
  beforeEach(() => {
    cleanup = new Cleanup()
  })
  afterEach(() => cleanup.run())

  /** A -> B -> an app: /stalled reads nothing and sends nothing, /flood sends without end, /deaf both, /quiet neither. */
  const pair = async (a: { readonly upgradeStallTimeoutMs?: number }, b: { readonly upgradeStallTimeoutMs?: number }) => {
    const app = await startApp(cleanup, (_req, res) => res.end("plain"))
    const wss = new WebSocketServer({ noServer: true })
    const appSockets = new Map<string, net.Socket>()
    app.server.on("upgrade", (req: http.IncomingMessage, socket: net.Socket, head: Buffer) =>
      wss.handleUpgrade(req, socket, head, (ws) => {
        appSockets.set(req.url ?? "", socket)
        if (req.url === "/stalled") socket.pause()
        if (req.url === "/flood") pump(ws)
        if (req.url === "/deaf") {
          socket.pause()
          pump(ws)
        }
      }))
    cleanup.add(() => {
      for (const ws of wss.clients) ws.terminate()
      wss.close()
    })
    const bLog = collectLog()
    const aLog = collectLog()
    const bSidecar = await startSidecar(cleanup, sidecarConfig({ service: "catalog", app: app.address, ...b }), bLog.log)
    const aSidecar = await startSidecar(cleanup, sidecarConfig({ service: "store", ...a, endpoints: { catalog: [{ address: bSidecar.inboundAddress, weight: 1 }] } }), aLog.log)
    const open = async (path: string) => {
      const ws = new WebSocket(`ws://127.0.0.1:${aSidecar.outboundPort}${path}`, { headers: { host: "catalog" } })
      ws.on("error", () => {})
      cleanup.add(() => ws.terminate())
      const answer = await upgradeAnswer(ws)
      if (!("ws" in answer)) throw new Error(`${path} refused: ${answer.status} ${answer.body}`)
      return answer.ws
    }
    return { a: aSidecar, b: bSidecar, aLog, bLog, appSockets, open }
  }

  it("at B, its app reading none of the caller's bytes: ended, released, counted (101 inbound deadline_exceeded), logged; an idle one opened before stays", async () => {
    const { b, bLog, appSockets, open } = await pair({}, { upgradeStallTimeoutMs: STALL_MS })
    const idle = await open("/quiet")
    const stalled = await open("/stalled")
    const closed = new Promise<number>((resolve) => stalled.once("close", (code) => resolve(code)))
    pump(stalled)
    const read = await endedAndReleased(b, "inbound", { hop: "inbound", reason: "deadline_exceeded" })
    expect(read).toEqual({ ended: 1, unread: 0 })
    const code = await closed
    const lines = bLog.events.filter((line) => line.event === "tunnel-stalled")
    console.log(`[tunnel-stall-timeout] B: ${read.ended} ended, its pool back to ${read.unread} bytes; caller's close code ${code}; ${JSON.stringify(lines[0]?.fields)}`)
    expect(lines.length).toBe(1)
    expect(lines[0]?.fields.path).toBe("/stalled")
    expect(idle.readyState).toBe(WebSocket.OPEN)
    expect(appSockets.get("/quiet")?.destroyed).toBe(false)
  }, 30_000)

  it("at A, its caller reading none of the far app's bytes: ended, released, counted (101 outbound deadline), logged; an idle one opened before stays", async () => {
    const { a, aLog, appSockets, open } = await pair({ upgradeStallTimeoutMs: STALL_MS }, {})
    const idle = await open("/quiet")
    const flooded = await open("/flood")
    const closed = new Promise<void>((resolve) => flooded.once("close", () => resolve()))
    // The calling app reads nothing from it.
    flooded.pause()
    const read = await endedAndReleased(a, "outbound", { hop: "outbound", reason: "deadline" })
    expect(read).toEqual({ ended: 1, unread: 0 })
    // Paused, it would not see its connection's end (behind the bytes it has not read).
    flooded.resume()
    await closed
    const lines = aLog.events.filter((line) => line.event === "tunnel-stalled")
    console.log(`[tunnel-stall-timeout] A: ${read.ended} ended, its unread count back to ${read.unread} bytes; ${JSON.stringify(lines[0]?.fields)}`)
    expect(lines.length).toBe(1)
    expect(lines[0]?.fields.path).toBe("/flood")
    expect(idle.readyState).toBe(WebSocket.OPEN)
    expect(appSockets.get("/quiet")?.destroyed).toBe(false)
  }, 30_000)

  it("at B, its app gone while the caller's bytes wait unread (A's sender out of credit): they are granted back, so A's sender ends with its caller, its channel freed", async () => {
    const { a, b, appSockets, open } = await pair({}, {})
    const sending = () => sendingTo(a)
    const stalled = await open("/stalled")
    const closed = new Promise<void>((resolve) => stalled.once("close", () => resolve()))
    pump(stalled)
    // B's app reads none of it: A sends until B has granted nothing back for a whole window, and B's
    // pipe to the app has stopped taking (what B holds stands still), so no grant is on its way.
    let before = -1
    const blocked = await readUntil(async () => {
      const windows = sending()
      const held = sum(await metrics(b), "iip_mesh_tunnel_unread_bytes", { direction: "inbound" })
      const still = held === before
      before = held
      return { windows, blocked: still && windows.length === 1 && (windows[0] as unknown as { readonly credit: number }).credit === 0 }
    }, (read) => read.blocked, 10_000)
    expect(blocked.value.blocked).toBe(true)
    // The app goes (crashed, or closed its connection) with a window of the caller's bytes unread at B.
    appSockets.get("/stalled")!.destroy()
    await closed
    const { value: left } = await readUntil(async () => sending().length, (n) => n === 0, 5000)
    const { value: pool } = await readUntil(async () => sum(await metrics(b), "iip_mesh_tunnel_unread_bytes", { direction: "inbound" }), (bytes) => bytes === 0, 5000)
    console.log(`[tunnel-stall-timeout] app gone at B: A's request bodies still sending ${left}; B's pool ${pool} bytes`)
    expect(left).toBe(0)
    expect(pool).toBe(0)
  }, 30_000)

  it("at B while A's caller reads nothing either (B's answer waiting for A's credit): that answer ends once A's caller takes bytes again; nothing left held, sent or awaited", async () => {
    const { a, b, appSockets, open } = await pair({}, { upgradeStallTimeoutMs: STALL_MS })
    const deaf = await open("/deaf")
    const closed = new Promise<void>((resolve) => deaf.once("close", () => resolve()))
    // Neither end reads. First A's stream of the app's bytes fills until what it holds stands still (B's
    // answer waits for A's credit); then the caller's bytes, which B's app reads none of, until B ends it.
    deaf.pause()
    let before = -1
    await readUntil(async () => {
      const held = sum(await metrics(a), "iip_mesh_tunnel_unread_bytes", { direction: "outbound" })
      const still = held === before && held > 0
      before = held
      return still
    }, (still) => still, 10_000)
    pump(deaf)
    expect(await endedAndReleased(b, "inbound", { hop: "inbound", reason: "deadline_exceeded" })).toEqual({ ended: 1, unread: 0 })
    expect(appSockets.get("/deaf")?.destroyed).toBe(true)
    const awaitedAtStall = sessionsTo(a).reduce((n, session) => n + session.callingCount, 0)
    // The caller reads again (as A's own stall timeout would end it): A grants, B's answer goes on to its end, the stall's error.
    deaf.resume()
    await closed
    const { value: left } = await readUntil(async () => {
      const families = await metrics(a)
      return { awaited: sessionsTo(a).reduce((n, session) => n + session.callingCount, 0), sending: sendingTo(a).length, unread: sum(families, "iip_mesh_tunnel_unread_bytes", { direction: "outbound" }) }
    }, (read) => read.awaited === 0 && read.sending === 0 && read.unread === 0, 5000)
    console.log(`[tunnel-stall-timeout] neither end reading, B's stall first: B's answers A awaited then ${awaitedAtStall}; once its caller read, at A ${JSON.stringify(left)}`)
    expect(left).toEqual({ awaited: 0, sending: 0, unread: 0 })
  }, 30_000)
})
