// How an IipClient spreads its calls over channels (PROTOCOL.md §4.3: a server answers one channel's
// requests strictly in order, so a call written behind a hanging one waits as long as it does). A
// call takes a free channel, or has one opened for it while the client is under its channel limit;
// at the limit, a client made with `pipelineAtLimit: false` (the sidecar's) has it wait in the
// client's queue for the first channel that frees. While it waits it is still the caller's:
// cancelled or out of time, it leaves the queue and nothing of it reaches the server. By default
// (`pipelineAtLimit`) it is written behind the others instead, as the Go clients do.
// In both modes, against a real IipServer on 127.0.0.1 port 0.
import { afterEach, beforeEach, describe, expect, it } from "vitest"
import type { IipClient } from "../../src/iip/client.ts"
import type { IipServer } from "../../src/iip/server.ts"
import { ConnectionClosed, Overloaded, RequestTimeout } from "../../src/mux/errors.ts"
import { Cancelled } from "../../src/mux/meshSession.ts"
import { Cleanup, deferred, waitFor, withTimeout } from "../support/iipRaw.ts"
import { rejection, startClient, startServer } from "../support/meshTest.ts"

describe.each([{ mesh: true }, { mesh: false }])("IipClient channels (mesh: $mesh)", ({ mesh }) => {
  let cleanup: Cleanup
  let server: IipServer
  /** Channel each request was handled on, by request data. */
  let seenOn: Map<string, number>
  /** Releases every /hang and /gate handler. */
  let release: () => void
  let hangEntered: ReturnType<typeof deferred<number>>

  beforeEach(async () => {
    cleanup = new Cleanup()
    seenOn = new Map()
    const gate = deferred()
    release = () => gate.resolve()
    hangEntered = deferred<number>()
    server = await startServer(cleanup)
    server.handle("/echo", (request) => {
      seenOn.set(request.data.toString(), request.channelId)
      return request.data
    })
    server.handle("/hang", async (request) => {
      seenOn.set(request.data.toString(), request.channelId)
      hangEntered.resolve(request.channelId)
      await gate.promise
      return request.data
    })
    cleanup.add(() => release())
  })

  afterEach(() => cleanup.run())

  /** A call the test awaits late: if the test fails first, its rejection at cleanup is not an unhandled one. */
  const held = <A>(promise: Promise<A>): Promise<A> => {
    promise.catch(() => {})
    return promise
  }

  const client = (maxChannelsPerConnection: number, pipelineAtLimit = false): IipClient =>
    startClient(cleanup, server.address.port, { mesh, maxConnections: 1, maxChannelsPerConnection, pipelineAtLimit, requestTimeoutMs: 0 })

  it("a hanging call made with 200 others before the connection is up holds up none of them, and they use every channel allowed", async () => {
    const c = client(8)
    const hang = held(c.call("/hang", "hang", { timeoutMs: 20_000 }))
    const inputs = Array.from({ length: 200 }, (_, i) => `echo-${i}`)
    const answers = await withTimeout(Promise.all(inputs.map((input) => c.call("/echo", input, { timeoutMs: 10_000 }))), 3000, "the echoes")
    expect(answers.map((answer) => answer.toString())).toEqual(inputs)
    const hangChannel = await hangEntered.promise
    const used = new Set(inputs.map((input) => seenOn.get(input)))
    expect(used.has(hangChannel)).toBe(false)
    expect(used.size).toBe(7)
    release()
    expect((await hang).toString()).toBe("hang")
  })

  it("a call made while every open channel is busy gets a channel of its own, not a place behind a hanging call", async () => {
    const c = client(8)
    expect((await c.call("/echo", "warm-up")).toString()).toBe("warm-up")
    const hang = held(c.call("/hang", "hang", { timeoutMs: 20_000 }))
    const inputs = Array.from({ length: 5 }, (_, i) => `echo-${i}`)
    const answers = await withTimeout(Promise.all(inputs.map((input) => c.call("/echo", input, { timeoutMs: 10_000 }))), 3000, "the echoes")
    expect(answers.map((answer) => answer.toString())).toEqual(inputs)
    expect(inputs.map((input) => seenOn.get(input))).not.toContain(await hangEntered.promise)
    release()
    await hang
  })

  it("at the channel limit a call waits for the first channel that frees; one cancelled or out of time while waiting never reaches the server", async () => {
    const c = client(2)
    const slowEntered = deferred()
    const slowGate = deferred()
    cleanup.add(() => slowGate.resolve())
    server.handle("/slow", async (request) => {
      seenOn.set(request.data.toString(), request.channelId)
      slowEntered.resolve()
      await slowGate.promise
      return request.data
    })
    const hang = held(c.call("/hang", "hang", { timeoutMs: 20_000 }))
    const slow = held(c.call("/slow", "slow", { timeoutMs: 20_000 }))
    await withTimeout(Promise.all([hangEntered.promise, slowEntered.promise]), 3000, "both channels busy")
    const next = held(c.call("/echo", "next", { timeoutMs: 10_000 }))
    const abort = new AbortController()
    const cancelled = rejection(c.call("/echo", "cancelled", { timeoutMs: 10_000, signal: abort.signal }))
    const late = rejection(c.call("/echo", "late", { timeoutMs: 100 }))
    await waitFor(() => c.stats.queued === 3, 2000, "three calls queued")
    abort.abort()
    expect(await cancelled).toBeInstanceOf(Cancelled)
    expect(await late).toBeInstanceOf(RequestTimeout)
    expect(c.stats.queued).toBe(1)
    slowGate.resolve()
    expect((await withTimeout(slow, 2000, "the slow call")).toString()).toBe("slow")
    expect((await withTimeout(next, 2000, "the queued call")).toString()).toBe("next")
    expect(seenOn.get("next")).toBe(seenOn.get("slow"))
    expect(seenOn.has("cancelled")).toBe(false)
    expect(seenOn.has("late")).toBe(false)
    expect(c.stats.pending).toBe(1)
    release()
    await hang
  })

  it("a call waiting at the limit when its connection is lost goes out on the next connection, not onto the dead one's freed channel", async () => {
    const c = client(1)
    const hang = rejection(c.call("/hang", "hang", { timeoutMs: 20_000 }))
    await withTimeout(hangEntered.promise, 3000, "the hanging call")
    const next = held(c.call("/echo", "next", { timeoutMs: 10_000 }))
    await waitFor(() => c.stats.queued === 1, 2000, "the call queued")
    const link = mesh ? c.meshSessions[0]! : c.sessions[0]!
    link.connection.close("test: connection lost", false)
    expect(await hang).toBeInstanceOf(ConnectionClosed)
    expect((await withTimeout(next, 2000, "the queued call")).toString()).toBe("next")
    expect(c.stats.connections).toBe(1)
  })

  it("maxPending bounds stream calls as it bounds sends: past it a stream call fails Overloaded at once instead of waiting in the queue", async () => {
    const c = startClient(cleanup, server.address.port, { mesh, maxConnections: 1, maxChannelsPerConnection: 1, maxPending: 2, pipelineAtLimit: false, requestTimeoutMs: 0 })
    const hang = held(c.call("/hang", "hang", { timeoutMs: 20_000 }))
    await withTimeout(hangEntered.promise, 3000, "the hanging call")
    const waits = held(c.stream("/echo", Buffer.from("waits"), { timeoutMs: 10_000 }))
    const refused = rejection(c.stream("/echo", Buffer.from("refused"), { timeoutMs: 1000 }))
    expect(await refused).toBeInstanceOf(Overloaded)
    expect(c.stats.queued).toBe(1)
    release()
    await hang
    expect((await withTimeout(waits, 2000, "the queued stream call")).data.toString()).toBe("waits")
    expect(c.stats.pending).toBe(0)
  })

  it("with pipelineAtLimit, a call at the limit is written behind the others, as the Go clients do (a file transfer's window)", async () => {
    const c = client(1, true)
    const hang = held(c.call("/hang", "hang", { timeoutMs: 20_000 }))
    await withTimeout(hangEntered.promise, 3000, "the hanging call")
    const behind = held(c.call("/echo", "behind", { timeoutMs: 10_000 }))
    const serverHolds = () => [...server.sessions, ...server.meshSessions].reduce((n, session) => n + session.connection.budget.own.requests, 0)
    await waitFor(() => serverHolds() === 2, 2000, "both requests at the server")
    expect(c.stats.queued).toBe(0)
    release()
    expect((await hang).toString()).toBe("hang")
    expect((await behind).toString()).toBe("behind")
    expect(seenOn.get("behind")).toBe(seenOn.get("hang"))
  })
})

describe("IipClient against a plain server with fewer channels per connection than the client's limit", () => {
  let cleanup: Cleanup
  afterEach(() => cleanup.run())

  it("once the server refused a channel, calls waiting at its limit ask it for no more on that connection", async () => {
    cleanup = new Cleanup()
    const server = await startServer(cleanup, { maxChannelsPerConnection: 2 })
    const gate = deferred()
    cleanup.add(() => gate.resolve())
    let entered = 0
    server.handle("/hang", async (request) => {
      entered++
      await gate.promise
      return request.data
    })
    server.handle("/echo", (request) => request.data)
    let refusedOpens = 0
    const log = (event: string) => {
      if (event === "channel-open-failed") refusedOpens++
    }
    const c = startClient(cleanup, server.address.port, { mesh: false, maxConnections: 1, maxChannelsPerConnection: 16, requestTimeoutMs: 0, log })
    const hangs = ["a", "b"].map((data) => c.call("/hang", data, { timeoutMs: 20_000 }))
    for (const hang of hangs) hang.catch(() => {})
    await waitFor(() => entered === 2, 3000, "both channels busy")
    const opensAnswered = () => c.sessions[0]!.system.fifo.length === 0
    const calls: Array<Promise<Buffer>> = []
    for (let i = 0; i < 10; i++) {
      const call = c.call("/echo", `e${i}`, { timeoutMs: 10_000 })
      call.catch(() => {})
      calls.push(call)
      await waitFor(opensAnswered, 2000, "the channel opens answered")
    }
    expect(refusedOpens).toBe(1)
    expect(c.stats.channels).toBe(2)
    gate.resolve()
    const answers = await withTimeout(Promise.all(calls), 3000, "the queued calls")
    expect(answers.map((answer) => answer.toString())).toEqual(Array.from({ length: 10 }, (_, i) => `e${i}`))
    await Promise.all(hangs)
  })
})
