// Reconnect in mesh mode against a server in a child process (PROTOCOL.md §14 "Reconnect"): the
// child (test/support/meshServerChild.ts) listens on a port the OS picks; the test kills it with
// SIGKILL and starts it again on that same port. A request that had been sent when the server
// died fails with ConnectionClosed, sent: true (the server may have run it). A call made while the
// server is down waits, within its timeout, while the client redials with backoff, and succeeds
// once the server is back. Real time throughout (backoff 50 ms doubling to 500 ms); the backoff
// schedule itself is checked on the TestClock in mesh-clock.test.ts.
import { type ChildProcess, spawn } from "node:child_process"
import * as path from "node:path"
import * as readline from "node:readline"
import { fileURLToPath } from "node:url"
import { afterEach, beforeEach, describe, expect, it } from "vitest"
import { ConnectionClosed } from "../../src/mux/errors.ts"
import { CHILD_START_MS, holdsStarts } from "../support/childStart.ts"
import { Cleanup, deferred, withTimeout } from "../support/iipRaw.ts"
import { rejection, settle, startClient } from "../support/meshTest.ts"

const childScript = path.join(path.dirname(fileURLToPath(import.meta.url)), "../support/meshServerChild.ts")

type Message = Record<string, unknown>

// The call made while the server is down waits through the restart, a child start: its timeout
// holds one, so a slow start is not mistaken for a call given up early.
const QUEUED_MS = CHILD_START_MS + 10_000

describe("reconnect to a mesh server that was killed and restarted on the same port", () => {
  let cleanup: Cleanup

  beforeEach(() => {
    cleanup = new Cleanup()
  })

  afterEach(() => cleanup.run())

  /** Starts the child server (on `port`, or port 0); resolves once it listens. */
  const startChild = async (port = 0) => {
    const child: ChildProcess = spawn(process.execPath, [childScript, String(port)], { stdio: ["ignore", "pipe", "inherit"] })
    const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()))
    cleanup.add(async () => {
      if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL")
      await withTimeout(exited, 5000, `child ${child.pid} to exit`)
    })
    const messages: Array<Message> = []
    const waiters: Array<() => void> = []
    const wake = () => {
      for (const waiter of waiters.splice(0)) waiter()
    }
    readline.createInterface({ input: child.stdout! }).on("line", (line) => {
      messages.push(JSON.parse(line) as Message)
      wake()
    })
    void exited.then(wake)
    /** The first message that matches, waiting for it (bounded). */
    const message = (match: (m: Message) => boolean, what: string, timeoutMs = 10_000): Promise<Message> =>
      withTimeout(
        (async () => {
          for (;;) {
            const found = messages.find(match)
            if (found !== undefined) return found
            if (child.exitCode !== null || child.signalCode !== null) throw new Error(`the child exited before ${what}: ${JSON.stringify(messages)}`)
            await new Promise<void>((resolve) => waiters.push(resolve))
          }
        })(),
        timeoutMs,
        what
      )
    const listening = await message((m) => typeof m.port === "number" || typeof m.error === "string", "the child server to listen", CHILD_START_MS)
    if (typeof listening.error === "string") throw new Error(`the child server could not listen: ${listening.error}`)
    const kill = async () => {
      child.kill("SIGKILL")
      await withTimeout(exited, 5000, `child ${child.pid} to die`)
    }
    return { child, port: listening.port as number, message, kill }
  }

  it("a request in flight when the server dies fails with ConnectionClosed sent:true; after a restart on the same port the client redials and calls work", async () => {
    const first = await startChild()
    const client = startClient(cleanup, first.port, { maxConnections: 1, reconnect: { baseMs: 50, maxMs: 500 } })
    expect((await client.call("/echo", "before", { timeoutMs: 5000 })).toString()).toBe("before")
    expect(client.stats.mesh).toBe(1)

    const hanging = rejection(client.call("/hang", "h1", { timeoutMs: 10_000 }))
    await first.message((m) => m.hang === "h1", "/hang to reach the handler")
    const killedAt = performance.now()
    await first.kill()
    const error = await withTimeout(hanging, 5000, "the in-flight call to fail")
    expect(error).toBeInstanceOf(ConnectionClosed)
    expect((error as ConnectionClosed).sent).toBe(true)
    expect(performance.now() - killedAt).toBeLessThan(2000) // at once, not at its 10 s timeout
    expect(client.stats.connections).toBe(0)

    const second = await startChild(first.port)
    expect(second.port).toBe(first.port)
    expect((await client.call("/echo", "after restart", { timeoutMs: 10_000 })).toString()).toBe("after restart")
    expect(client.stats).toMatchObject({ connections: 1, mesh: 1 })
  }, holdsStarts(2, 40_000))

  // PROTOCOL.md §14: requests wait, within their timeout, while the client redials.
  it("a call made while the server is down (its timeout longer than the restart) waits through redials and succeeds once the server is back on the same port", async () => {
    const first = await startChild()
    const redialFailed = deferred()
    const client = startClient(cleanup, first.port, {
      maxConnections: 1,
      reconnect: { baseMs: 50, maxMs: 500 },
      log: (event) => event === "connect-failed" && redialFailed.resolve()
    })
    expect((await client.call("/echo", "before", { timeoutMs: 5000 })).toString()).toBe("before")
    const session = client.meshSessions[0]!
    const sessionClosed = new Promise<void>((resolve) => session.onClosed(() => resolve()))
    await first.kill()
    await withTimeout(sessionClosed, 5000, "the client to see the close")
    expect(client.stats.connections).toBe(0)

    const queued = settle(client.call("/echo", "queued while down", { timeoutMs: QUEUED_MS }))
    // Restart only once the client has tried and failed at least once while the server was down.
    await withTimeout(redialFailed.promise, 5000, "a failed redial")
    const second = await startChild(first.port)
    expect(second.port).toBe(first.port)
    const result = await withTimeout(queued, QUEUED_MS + 5000, "the queued call to settle")
    expect(result.ok ? result.value.toString() : `failed: ${String((result.error as { _tag?: unknown })._tag)}: ${(result.error as Error).message}`).toBe("queued while down")
  }, holdsStarts(1, QUEUED_MS + 30_000))
})
