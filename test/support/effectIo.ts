// For the tests that run servers and clients inside `it.effect`: their timers run on the test's
// TestClock while their sockets are real (127.0.0.1, port 0), so real I/O is awaited in real time,
// bounded, never with the TestClock.
import * as Clock from "effect/Clock"
import * as Effect from "effect/Effect"
import * as Client from "../../src/iip/client.ts"
import * as Server from "../../src/iip/server.ts"
import { Cleanup, deferred, withTimeout } from "./iipRaw.ts"
import { collectLog, settle } from "./meshTest.ts"

/** A Cleanup run when the test's Scope closes (after everything acquired later in the test). */
export const useCleanup = Effect.acquireRelease(
  Effect.sync(() => new Cleanup()),
  (cleanup) => Effect.promise(() => cleanup.run())
)

/** Real I/O, bounded in real time. */
export const awaitReal = <A>(promise: Promise<A>, what: string, timeoutMs = 5000) => Effect.promise(() => withTimeout(promise, timeoutMs, what))

/** Succeeds once `condition` holds, checking after each turn of the event loop (real I/O only). */
export const until = (condition: () => boolean, what: string) =>
  awaitReal(
    new Promise<void>((resolve) => {
      const check = () => (condition() ? resolve() : setImmediate(check))
      check()
    }),
    what
  )

/**
 * A mesh server (on `serverClock`, default the test's) whose /never handler never answers, and a
 * client's call held there: what a drain waits for.
 */
export const callHeldAtServer = (serverClock?: Clock.Clock) =>
  Effect.gen(function*() {
    const started = deferred()
    const { events, log } = collectLog()
    const made = Server.make({ keepAlive: false, drainTimeoutMs: 0, log })
    const server = yield* serverClock === undefined ? made : made.pipe(Effect.provideService(Clock.Clock, serverClock))
    server.handle("/never", () => {
      started.resolve()
      return new Promise<string>(() => {})
    })
    const client = yield* Client.make({ host: "127.0.0.1", port: server.address.port, maxConnections: 1, keepAlive: false, log: () => {} })
    const call = settle(client.call("/never", "x", { timeoutMs: 0 }))
    yield* awaitReal(started.promise, "the handler to start")
    return { server, client, call, events }
  })
