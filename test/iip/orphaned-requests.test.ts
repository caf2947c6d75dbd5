// Requests queued on a channel when the connection closes (plain and mesh mode, real TCP): none
// of their handlers starts after the close (nobody can read an answer any more), and the handler
// running at the close sees its request.signal aborted. The client's session pipelines 20 requests
// on one channel (the client itself writes none behind another), the first one blocks until its
// signal aborts, then the client closes.
import { afterEach, beforeEach, describe, expect, it } from "vitest"
import type { IipClient } from "../../src/iip/client.ts"
import type { IncomingRequest, IipServer } from "../../src/iip/server.ts"
import type { ClientChannel } from "../../src/mux/clientSession.ts"
import { Cleanup, deferred, waitFor, withTimeout } from "../support/iipRaw.ts"
import { startClient, startServer } from "../support/meshTest.ts"

const queued = 20

describe.each([
  { mode: "plain", mesh: false },
  { mode: "mesh", mesh: true }
])("requests queued when the connection closes ($mode)", ({ mesh }) => {
  let cleanup: Cleanup
  let server: IipServer
  let started: number
  let startedAfterClose: number
  let aborted: ReturnType<typeof deferred<unknown>>
  let running: ReturnType<typeof deferred<void>>
  let closed: boolean

  beforeEach(async () => {
    cleanup = new Cleanup()
    started = 0
    startedAfterClose = 0
    closed = false
    aborted = deferred<unknown>()
    running = deferred()
    server = await startServer(cleanup)
    // Blocks until its signal aborts (the close), then answers: the answer has nowhere to go.
    server.handle("/slow", (request: IncomingRequest) => {
      started++
      if (closed) startedAfterClose++
      running.resolve()
      return new Promise<string>((resolve) => {
        if (request.signal.aborted) return resolve("late")
        request.signal.addEventListener("abort", () => {
          aborted.resolve(request.signal.reason)
          resolve("late")
        }, { once: true })
      })
    })
  })

  afterEach(() => cleanup.run())

  /** `count` requests written one behind another on a new channel of the client's connection; each settles. */
  const pipelined = async (client: IipClient, count: number): Promise<Array<Promise<boolean>>> => {
    await client.mode()
    const bodies = Array.from({ length: count }, (_, i) => Buffer.from(`r${i}`))
    if (mesh) {
      const session = client.meshSessions[0]!
      const channel = session.openChannel()
      return bodies.map((body) => new Promise<boolean>((resolve) => session.call(channel, "/slow", body, {}, (error) => resolve(error === undefined))))
    }
    const session = client.sessions[0]!
    const channel = await new Promise<ClientChannel>((resolve, reject) => session.openChannel(5000, (error, opened) => (error === undefined ? resolve(opened!) : reject(error))))
    return bodies.map((body) => new Promise<boolean>((resolve) => session.request(channel, "/slow", body, 0, (error) => resolve(error === undefined))))
  }

  it("runs none of them after the close and aborts the running one's signal", async () => {
    const client = startClient(cleanup, server.address.port, { mesh, maxConnections: 1, maxChannelsPerConnection: 1, idleChannelsAhead: 0 })
    const calls = await pipelined(client, queued)
    await withTimeout(running.promise, 5000, "the first handler to start")
    // Every request has reached the server (queued behind the first on its one channel).
    await waitFor(() => server.connectionCount === 1 && serverHolds() === queued, 5000, "all requests to reach the server")
    expect(started).toBe(1)
    closed = true
    client.close()
    await withTimeout(aborted.promise, 5000, "the running handler's signal to abort")
    await waitFor(() => server.connectionCount === 0, 5000, "the server to drop the connection")
    for (const ok of await Promise.all(calls)) expect(ok).toBe(false)
    // The running handler has answered (into the void): a queued one would start now, or never.
    for (let i = 0; i < 5; i++) await new Promise((resolve) => setImmediate(resolve))
    expect(startedAfterClose).toBe(0)
    expect(started).toBe(1)
  })

  /** Requests the server's one connection holds (running plus queued), from its budget. */
  const serverHolds = (): number => {
    const session = [...server.sessions, ...server.meshSessions][0]
    return session === undefined ? 0 : session.connection.budget.own.requests
  }
})
