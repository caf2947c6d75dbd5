// IipClient against IipServer over real TCP on 127.0.0.1 (iip-protocol.md §4.2, §4.3): requests
// spread over many channels, pipelining and FIFO pairing on one channel (its session's), a slow handler that only
// holds up its own channel, pairing that survives a timed-out request, a server process killed
// mid-request (every outstanding request fails with ConnectionClosed at once, not at its timeout),
// and a server that answers a request nobody made (the client closes that connection and fails
// what was pending on it).
// These run the client in plain IIP (`mesh: false`), as it talks to a Go server; test/iip/mesh*.test.ts
// cover mesh mode.
import { type ChildProcess, spawn } from "node:child_process"
import * as path from "node:path"
import * as readline from "node:readline"
import { fileURLToPath } from "node:url"
import { afterEach, beforeEach, describe, expect, it } from "vitest"
import { IipClient } from "../../src/iip/client.ts"
import { IipServer } from "../../src/iip/server.ts"
import type { ClientChannel } from "../../src/mux/clientSession.ts"
import { ConnectionClosed, RequestTimeout } from "../../src/mux/errors.ts"
import { CHILD_START_MS, holdsStarts } from "../support/childStart.ts"
import { Cleanup, deferred, frame, RawParser, startRawServer, waitFor, withTimeout } from "../support/iipRaw.ts"

const childScript = path.join(path.dirname(fileURLToPath(import.meta.url)), "../support/iipServerChild.ts")

describe("IipClient against IipServer", () => {
  let cleanup: Cleanup
  let server: IipServer
  /** Channel id each request was handled on, by request data. */
  let seenOn: Map<string, number>

  beforeEach(async () => {
    cleanup = new Cleanup()
    seenOn = new Map()
    server = new IipServer({ port: 0, log: () => {} })
    server.handle("/echo", (request) => {
      seenOn.set(request.data.toString(), request.channelId)
      return request.data
    })
    await server.listen()
    cleanup.add(() => server.close())
  })

  afterEach(() => cleanup.run())

  const client = (options: Partial<ConstructorParameters<typeof IipClient>[0]> = {}) => {
    const c = new IipClient({ host: "127.0.0.1", mesh: false, port: server.address.port, log: () => {}, ...options })
    cleanup.add(() => c.close())
    return c
  }

  it("runs 200 concurrent calls over many channels of one connection, each answered correctly", async () => {
    const c = client({ maxConnections: 1, maxChannelsPerConnection: 16, idleChannelsAhead: 16 })
    expect((await c.call("/echo", "warm-up")).toString()).toBe("warm-up")
    await waitFor(() => c.stats.channels === 16, 5000, "16 channels open")
    const inputs = Array.from({ length: 200 }, (_, i) => `request-${i}-${"x".repeat(i)}`)
    const answers = await Promise.all(inputs.map((input) => c.call("/echo", input, { timeoutMs: 5000 })))
    expect(answers.map((a) => a.toString())).toEqual(inputs)
    expect(c.stats.channels).toBeGreaterThan(1)
    expect(c.stats.connections).toBe(1)
    const channelsUsed = new Set(inputs.map((input) => seenOn.get(input)))
    expect(channelsUsed.size).toBe(16)
  })

  it("pipelines 100 concurrent calls on one channel and pairs every answer with its own request", async () => {
    // Answers take different times to compute; the server must still answer in order.
    server.handle("/jitter", async (request) => {
      const n = request.data.readUInt32BE(0)
      for (let i = 0; i < n % 5; i++) await new Promise<void>((resolve) => setImmediate(resolve))
      seenOn.set(String(n), request.channelId)
      return request.data
    })
    // The client writes no request behind another (a hanging one would hold it up): its session does.
    const c = client({ maxConnections: 1, maxChannelsPerConnection: 1 })
    await c.mode()
    const session = c.sessions[0]!
    const channel = await new Promise<ClientChannel>((resolve, reject) => session.openChannel(5000, (error, opened) => (error === undefined ? resolve(opened!) : reject(error))))
    const inputs = Array.from({ length: 100 }, (_, i) => {
      const data = Buffer.alloc(4 + (i % 7) * 100, i)
      data.writeUInt32BE(i, 0)
      return data
    })
    const calls = inputs.map((input) => new Promise<Buffer>((resolve, reject) => session.request(channel, "/jitter", input, 5000, (error, answer) => (error === undefined ? resolve(answer!) : reject(error)))))
    expect(channel.outstanding).toBe(100)
    const answers = await Promise.all(calls)
    answers.forEach((answer, i) => expect(Buffer.compare(answer, inputs[i]!)).toBe(0))
    expect(new Set(seenOn.values())).toEqual(new Set([channel.id]))
  })

  it("keeps other channels answering while a slow handler holds its own channel", async () => {
    const gate = deferred()
    const slowEntered = deferred<number>()
    server.handle("/slow", async (request) => {
      slowEntered.resolve(request.channelId)
      await gate.promise
      return "slow done"
    })
    cleanup.add(() => gate.resolve()) // release the handler even if the test fails
    const c = client({ maxConnections: 1, maxChannelsPerConnection: 4, idleChannelsAhead: 2 })
    expect((await c.call("/echo", "warm-up")).toString()).toBe("warm-up")
    await waitFor(() => c.stats.channels >= 2, 5000, "two channels open")
    let slowSettled = false
    const slow = c.call("/slow", "s", { timeoutMs: 10_000 }).finally(() => {
      slowSettled = true
    })
    const slowChannel = await withTimeout(slowEntered.promise, 2000, "the slow handler to start")
    for (let i = 0; i < 20; i++) {
      expect((await c.call("/echo", `fast-${i}`, { timeoutMs: 2000 })).toString()).toBe(`fast-${i}`)
      expect(seenOn.get(`fast-${i}`)).not.toBe(slowChannel)
    }
    expect(slowSettled).toBe(false)
    gate.resolve()
    expect((await slow).toString()).toBe("slow done")
  })

  it("pairs the next answer correctly after a request timed out on the same channel", async () => {
    const gate = deferred()
    server.handle("/gate", async () => {
      await gate.promise
      return "gate answer"
    })
    cleanup.add(() => gate.resolve())
    const c = client({ maxConnections: 1, maxChannelsPerConnection: 1 })
    const timedOut = await c.call("/gate", "g", { timeoutMs: 50 }).then(
      () => undefined,
      (error: unknown) => error
    )
    expect(timedOut).toBeInstanceOf(RequestTimeout)
    gate.resolve()
    expect((await c.call("/echo", "next", { timeoutMs: 2000 })).toString()).toBe("next")
    expect(c.stats.channels).toBe(1)
    expect(c.stats.connections).toBe(1)
  })

  it("pairs a request queued behind a timed-out one with its own answer once the late answer arrives", async () => {
    const gate = deferred()
    const entered = deferred()
    server.handle("/gate", async () => {
      entered.resolve()
      await gate.promise
      return "gate answer"
    })
    cleanup.add(() => gate.resolve())
    const c = client({ maxConnections: 1, maxChannelsPerConnection: 1, pipelineAtLimit: false })
    // Long enough for the request to reach the handler on a loaded machine: one that times out
    // still unsent is dropped at the client, and the case would never start.
    const gated = c.call("/gate", "g", { timeoutMs: 500 }).then(
      () => undefined,
      (error: unknown) => error
    )
    await withTimeout(entered.promise, 2000, "the gate handler to start")
    expect(await gated).toBeInstanceOf(RequestTimeout)
    // At its one channel's limit, it waits in the client's queue until the late answer frees the channel.
    const next = c.call("/echo", "queued behind the gate", { timeoutMs: 2000 })
    await waitFor(() => c.stats.queued === 1, 2000, "the call to queue")
    gate.resolve()
    expect((await next).toString()).toBe("queued behind the gate")
  })
})

describe("IipClient when the server process is killed", () => {
  let cleanup: Cleanup

  beforeEach(() => {
    cleanup = new Cleanup()
  })

  afterEach(() => cleanup.run())

  /** Starts the child server; resolves with its port and a stream of its stdout messages. */
  const startChild = async () => {
    const child: ChildProcess = spawn(process.execPath, [childScript], { stdio: ["ignore", "pipe", "inherit"] })
    const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()))
    cleanup.add(async () => {
      if (child.exitCode === null && child.signalCode === null) process.kill(child.pid!, "SIGKILL")
      await withTimeout(exited, 5000, `child ${child.pid} to exit`)
    })
    const messages: Array<Record<string, unknown>> = []
    const lines = readline.createInterface({ input: child.stdout! })
    lines.on("line", (line) => messages.push(JSON.parse(line) as Record<string, unknown>))
    await waitFor(() => messages.some((m) => typeof m.port === "number") || child.exitCode !== null, CHILD_START_MS, "the child server's port")
    const port = messages.find((m) => typeof m.port === "number")?.port
    if (typeof port !== "number") throw new Error("the child server exited before listening")
    return { child, port, messages }
  }

  it("fails all 5 outstanding requests with ConnectionClosed within 500 ms of SIGKILL, not at their timeout", async () => {
    const { child, port, messages } = await startChild()
    const c = new IipClient({ host: "127.0.0.1", mesh: false, port, maxConnections: 1, maxChannelsPerConnection: 8, idleChannelsAhead: 5, log: () => {} })
    cleanup.add(() => c.close())
    expect((await c.call("/echo", "warm-up")).toString()).toBe("warm-up")
    await waitFor(() => c.stats.channels >= 5, 5000, "five channels open")
    const settledAt: Array<number> = []
    const calls = Array.from({ length: 5 }, (_, i) =>
      c.call("/hang", `h${i}`, { timeoutMs: 10_000 }).then(
        () => {
          throw new Error(`/hang h${i} was answered`)
        },
        (error: unknown) => {
          settledAt[i] = performance.now()
          return error
        }
      )
    )
    // Each request is inside the server's handler: truly mid-request.
    await waitFor(() => messages.filter((m) => typeof m.hang === "string").length === 5, 5000, "5 /hang requests in the handler")
    const killedAt = performance.now()
    process.kill(child.pid!, "SIGKILL")
    const errors = await withTimeout(Promise.all(calls), 5000, "the /hang calls to fail")
    for (const error of errors) {
      expect(error).toBeInstanceOf(ConnectionClosed)
      expect((error as ConnectionClosed).sent).toBe(true)
    }
    const slowest = Math.max(...settledAt.map((t) => t - killedAt))
    expect(slowest).toBeLessThan(500)
    expect(c.stats.pending).toBe(0)
  }, holdsStarts(1, 25_000))
})

describe("IipClient facing a server that answers a request nobody made", () => {
  let cleanup: Cleanup

  beforeEach(() => {
    cleanup = new Cleanup()
  })

  afterEach(() => cleanup.run())

  /**
   * A hand-played server: answers every /sys/new_channel with ids 1, 2, ... and records every other
   * request without answering it.
   */
  const startFakeServer = async () => {
    const state = { requests: [] as Array<{ path: string; channelId: number }>, opened: 0, socket: undefined as import("node:net").Socket | undefined, closed: false }
    const { port } = await startRawServer(cleanup, (socket) => {
      state.socket = socket
      socket.once("close", () => {
        state.closed = true
      })
      const parser = new RawParser()
      socket.on("data", (chunk: Buffer) => {
        for (const packet of parser.push(chunk)) {
          if (packet.path === "/sys/new_channel") {
            state.opened++
            socket.write(frame(5, "/sys/new_channel", 0, `{"code":0,"channel_id":${state.opened}}`))
          } else {
            state.requests.push({ path: packet.path, channelId: packet.channelId })
          }
        }
      })
    })
    return { port, state }
  }

  it("closes the connection and fails pending requests on an answer for a channel it never opened", async () => {
    const { port, state } = await startFakeServer()
    const events: Array<{ event: string; fields: Record<string, unknown> }> = []
    const c = new IipClient({ host: "127.0.0.1", mesh: false, port, maxConnections: 1, maxChannelsPerConnection: 2, log: (event, fields) => void events.push({ event, fields }) })
    cleanup.add(() => c.close())
    const calls = ["a", "b"].map((data) => c.call("/x", data, { timeoutMs: 10_000 }).then(() => undefined, (error: unknown) => error))
    await waitFor(() => state.requests.length === 2, 5000, "both requests at the fake server")
    state.socket!.write(frame(5, "/x", 9, "stray"))
    const errors = await withTimeout(Promise.all(calls), 2000, "the pending calls to fail")
    for (const error of errors) expect(error).toBeInstanceOf(ConnectionClosed)
    expect(events.filter((e) => e.event === "protocol-violation").map((e) => e.fields.rule)).toEqual(["unknown-channel"])
    await waitFor(() => state.closed, 2000, "the client to close the connection")
    expect(c.stats.connections).toBe(0)
  })

  it("closes the connection and fails pending requests on an answer on a channel with nothing outstanding", async () => {
    const { port, state } = await startFakeServer()
    const c = new IipClient({ host: "127.0.0.1", mesh: false, port, maxConnections: 1, maxChannelsPerConnection: 3, idleChannelsAhead: 3, log: () => {} })
    cleanup.add(() => c.close())
    const calls = ["a", "b"].map((data) => c.call("/x", data, { timeoutMs: 10_000 }).then(() => undefined, (error: unknown) => error))
    await waitFor(() => state.requests.length === 2 && state.opened === 3 && c.stats.channels === 3, 5000, "two requests and three channels")
    const busy = new Set(state.requests.map((r) => r.channelId))
    const idle = [1, 2, 3].find((id) => !busy.has(id))
    expect(idle).toBeDefined()
    state.socket!.write(frame(5, "/x", idle!, "stray"))
    const errors = await withTimeout(Promise.all(calls), 2000, "the pending calls to fail")
    for (const error of errors) expect(error).toBeInstanceOf(ConnectionClosed)
    await waitFor(() => state.closed, 2000, "the client to close the connection")
    expect(c.stats.connections).toBe(0)
  })
})
