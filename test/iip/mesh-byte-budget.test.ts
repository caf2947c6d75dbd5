// A caller's cancel must reach its handler whatever else holds the server's per-connection budget
// (PROTOCOL.md §8, §10, §14): the server never stops reading for
// something its caller could not see, so a /sys/cancel is always read.
// - pushes: the server counts running pushes apart from requests (its caller cannot see a push
//   end); before, 4 long-running pushes filled a request budget of 4, the server paused reading,
//   and the cancel of a running call sat unread. A push while none runs is always taken: before,
//   one larger than the allowance (200 KiB against 128 KiB) was dropped every time.
import { afterEach, beforeEach, describe, expect, it } from "vitest"
import type { IipClient } from "../../src/iip/client.ts"
import type { IncomingRequest, IipServer } from "../../src/iip/server.ts"
import { Cancelled } from "../../src/mux/meshSession.ts"
import { Cleanup, waitFor } from "../support/iipRaw.ts"
import { collectLog, settle, startClient, startServer } from "../support/meshTest.ts"

describe("a caller's cancel reaches its handler while the server holds all its per-connection budget", () => {
  let cleanup: Cleanup
  let started = 0
  let interrupted = 0
  let running = 0

  /** A server whose /hang runs until its request's signal fires. */
  const hangingServer = async (options: Parameters<typeof startServer>[1]): Promise<IipServer> => {
    const server = await startServer(cleanup, options)
    server.handle("/echo", (request) => request.data)
    server.handle("/hang", (request: IncomingRequest) => {
      started++
      running++
      return new Promise<string>((resolve) => {
        request.signal.addEventListener(
          "abort",
          () => {
            interrupted++
            running--
            resolve("late")
          },
          { once: true }
        )
      })
    })
    return server
  }

  /** Cancels every call once some run; every handler that ran must be interrupted, and the connection serve on. */
  const cancelAll = async (client: IipClient, calls: ReadonlyArray<{ controller: AbortController; outcome: Promise<unknown> }>) => {
    await waitFor(() => running >= 1, 5000, "the server to run one of the hanging calls")
    for (const call of calls) call.controller.abort()
    for (const outcome of (await Promise.all(calls.map((c) => c.outcome))) as Array<{ ok: boolean; error?: unknown }>) {
      expect(outcome.ok === false && outcome.error instanceof Cancelled).toBe(true)
    }
    await waitFor(() => running === 0, 5000, `every running handler to be interrupted (running ${running}, started ${started}, interrupted ${interrupted})`)
    expect(interrupted).toBe(started)
    expect((await client.call("/echo", "after", { timeoutMs: 5000 })).toString()).toBe("after")
    expect(client.stats).toMatchObject({ mesh: 1, connections: 1 })
  }

  const hang = (client: IipClient, body: Uint8Array) => {
    const controller = new AbortController()
    return { controller, outcome: settle(client.call("/hang", body, { timeoutMs: 60_000, signal: controller.signal })) }
  }

  beforeEach(() => {
    cleanup = new Cleanup()
    started = interrupted = running = 0
  })

  afterEach(() => cleanup.run())

  it("4 long-running pushes against a request budget of 4: a running call's cancel still interrupts it; a fifth push is dropped (logged), not read past the budget", async () => {
    const { events, log } = collectLog()
    const server = await hangingServer({ maxQueuedRequestsPerConnection: 4, log })
    const parked: Array<() => void> = []
    server.handle("/park", () => new Promise<string>((resolve) => parked.push(() => resolve("done"))))
    cleanup.add(() => parked.forEach((resolve) => resolve()))
    const client = startClient(cleanup, server.address.port, { maxConnections: 1, maxChannelsPerConnection: 4 })
    expect((await client.call("/echo", "warm-up", { timeoutMs: 5000 })).toString()).toBe("warm-up")
    const call = hang(client, Buffer.from("h"))
    await waitFor(() => running === 1, 5000, "the hanging call to run")
    for (let i = 0; i < 4; i++) client.push("/park", `p${i}`)
    await waitFor(() => parked.length === 4, 5000, `the 4 pushes to run (${parked.length})`)
    expect(events.filter((e) => e.event === "push-failed")).toEqual([])
    // Pushes have an allowance of their own, as large as the request budget: past it one is dropped.
    client.push("/park", "p4")
    await waitFor(() => events.some((e) => e.event === "push-failed"), 5000, "the fifth push to be dropped")
    expect(events.filter((e) => e.event === "push-failed").map((e) => e.fields.code)).toEqual(["overloaded"])
    await cancelAll(client, [call])
    expect(parked.length).toBe(4)
  })
})

describe("pushes against a small byte budget", () => {
  let cleanup: Cleanup

  beforeEach(() => {
    cleanup = new Cleanup()
  })

  afterEach(() => cleanup.run())

  it("a push larger than the push allowance runs when no other push is running, as a request alone always goes", async () => {
    const { events, log } = collectLog()
    const server = await startServer(cleanup, { maxQueuedBytesPerConnection: 128 * 1024, log })
    const got: Array<number> = []
    server.handle("/big", (request: IncomingRequest) => {
      got.push(request.data.length)
      return "ok"
    })
    const client = startClient(cleanup, server.address.port, { maxConnections: 1 })
    expect((await client.call("/big", "warm-up", { timeoutMs: 5000 })).toString()).toBe("ok")
    got.length = 0
    // One after the other, each alone: before, each was dropped ('the connection holds all the pushes it may').
    for (const n of [1, 2]) {
      client.push("/big", Buffer.alloc(200 * 1024, 0x70))
      await waitFor(() => got.length === n || events.some((e) => e.event === "push-failed"), 5000, `push ${n} to run or be dropped`)
    }
    expect(events.filter((e) => e.event === "push-failed")).toEqual([])
    expect(got).toEqual([200 * 1024, 200 * 1024])
  })
})
