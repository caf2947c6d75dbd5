// The connect timers (IipClient.mode's wait, dialOnce's connect timeout: src/iip/client.ts,
// src/iip/clientDial.ts) when this process, not the peer, stalls. The peer is a mesh server in a
// child process (test/support/meshServerChild.ts): its kernel completes the handshake and it
// answers the hello at once. The client gives a connection 500 ms. Right after the dial's connect
// syscall (the SYN sent, the socket's 'connect' not yet seen), the test blocks this process's event
// loop for 1.5 s with a synchronous busy-wait (a long GC, a starved CPU). The handshake completes
// meanwhile; on waking, libuv runs the expired timers before it polls for I/O. A healthy peer must
// not be judged by our stall: the connection comes up and no failed dial is logged (a failed one
// holds a sidecar's endpoint out as refused, src/sidecar/endpoints.ts). A peer that never answers
// (SIGSTOP: its kernel still takes the connection, the hello goes unanswered), or one whose
// handshake never completes (a stopped listener with its accept queue full: the kernel drops our
// SYN), still fails the dial, at most one more wait after we wake.
import { spawn } from "node:child_process"
import { subscribe, unsubscribe } from "node:diagnostics_channel"
import * as net from "node:net"
import { afterEach, describe, expect, it } from "vitest"
import { IipClient } from "../../src/iip/client.ts"
import { ConnectFailed } from "../../src/mux/errors.ts"
import { busyWait } from "../support/busyWait.ts"
import { Cleanup, waitFor, withTimeout } from "../support/iipRaw.ts"
import { collectLog, settle } from "../support/meshTest.ts"
import { startServerChild, stop } from "../support/serverChild.ts"

const stallMs = 1500
const connectTimeoutMs = 500

/**
 * The next socket net.connect makes is followed by `stallMs` of busy-wait right after its connect
 * syscall: net.connect publishes the socket on "net.client.socket" before it queues that syscall
 * on the tick queue, so a tick queued from the first tick runs right after it.
 */
const stallAfterSyn = (cleanup: Cleanup) => {
  const state = { stalled: false, connecting: false, localPort: undefined as number | undefined, wokeAt: 0, handshake: false }
  const onSocket = (message: unknown) => {
    unsubscribe("net.client.socket", onSocket)
    const socket = (message as { socket: net.Socket }).socket
    socket.once("connect", () => (state.handshake = true))
    process.nextTick(() =>
      process.nextTick(() => {
        state.stalled = true
        state.connecting = socket.connecting
        state.localPort = socket.localPort
        busyWait(stallMs)
        state.wokeAt = performance.now()
      })
    )
  }
  subscribe("net.client.socket", onSocket)
  cleanup.add(() => void unsubscribe("net.client.socket", onSocket))
  return state
}

/**
 * A listener in a child process that stops itself (SIGSTOP) once it listens, with a backlog of 1,
 * and its accept queue then filled: the kernel completes two handshakes for it and drops later
 * SYNs, so a connection to it never completes. Resolves with its port.
 */
const fullListener = async (cleanup: Cleanup): Promise<number> => {
  const script = `require("node:net").createServer().listen({ host: "127.0.0.1", port: 0, backlog: 1 }, function () {
    process.stdout.write(JSON.stringify({ port: this.address().port }) + "\\n", () => process.kill(process.pid, "SIGSTOP"))
  })`
  const child = spawn(process.execPath, ["-e", script], { stdio: ["ignore", "pipe", "inherit"] })
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()))
  cleanup.add(async () => {
    child.kill("SIGKILL")
    await withTimeout(exited, 5000, "the listener child to exit")
  })
  const line = await withTimeout(new Promise<string>((resolve) => child.stdout.once("data", (data: Buffer) => resolve(data.toString()))), 15_000, "the listener child to listen")
  const port = (JSON.parse(line) as { port: number }).port
  const fillers = Array.from({ length: 3 }, () => net.connect({ host: "127.0.0.1", port }))
  let connected = 0
  for (const socket of fillers) {
    socket.on("error", () => {})
    socket.once("connect", () => connected++)
    cleanup.add(() => socket.destroy())
  }
  await waitFor(() => connected === 2, 5000, "two connections to fill the accept queue")
  return port
}

describe("connect timers when this process stalls", () => {
  let cleanup = new Cleanup()
  afterEach(async () => {
    await cleanup.run()
    cleanup = new Cleanup()
  })

  const dialStalled = async (port: number) => {
    const { events, log } = collectLog()
    const client = new IipClient({ host: "127.0.0.1", port, connectTimeoutMs, log })
    cleanup.add(() => client.close())
    const state = stallAfterSyn(cleanup)
    const result = await settle(client.mode())
    const at = performance.now()
    // The stall came with the SYN in flight: the connect syscall made (a local port bound), its completion not yet seen.
    expect(state).toMatchObject({ stalled: true, connecting: true })
    expect(state.localPort).toBeGreaterThan(0)
    return { client, result, at, state, failedDials: events.filter((e) => e.event === "connect-failed") }
  }

  it(`a connection the peer completed during our ${stallMs} ms stall comes up, with no failed dial`, async () => {
    const { port } = await startServerChild(cleanup, "meshServerChild.ts")
    const { client, result, state, failedDials } = await dialStalled(port)
    expect(result.ok ? result.value : String(result.error)).toBe("mesh")
    expect(failedDials).toStrictEqual([])
    expect(state.handshake).toBe(true)
    expect((await client.call("/echo", "after", { timeoutMs: 10_000 })).toString()).toBe("after")
    expect(client.stats).toMatchObject({ connections: 1, mesh: 1 })
  }, 40_000)

  it(`a peer that never answers (SIGSTOP) still fails the dial when we stall ${stallMs} ms too: at most one more wait after we wake`, async () => {
    const { port, pid } = await startServerChild(cleanup, "meshServerChild.ts")
    await stop(cleanup, pid)
    const { client, result, at, state } = await dialStalled(port)
    expect(result.ok ? "connected" : result.error).toBeInstanceOf(ConnectFailed)
    expect(at - state.wokeAt).toBeLessThan(connectTimeoutMs + 500)
    expect(client.stats).toMatchObject({ connections: 0 })
  }, 40_000)

  it(`a peer whose handshake never completes (full accept queue) still fails the dial when we stall ${stallMs} ms too: at most one more wait after we wake`, async () => {
    const port = await fullListener(cleanup)
    const { client, result, at, state } = await dialStalled(port)
    expect(result.ok ? "connected" : result.error).toBeInstanceOf(ConnectFailed)
    expect(state.handshake).toBe(false)
    expect(at - state.wokeAt).toBeLessThan(connectTimeoutMs + 500)
    expect(client.stats).toMatchObject({ connections: 0 })
  }, 40_000)
})
