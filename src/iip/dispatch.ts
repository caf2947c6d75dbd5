// From a router of handlers to the Dispatch a session calls: the handler's value, promise or
// Effect becomes an Outcome; a throw, rejection or Effect failure becomes `handler_failed`, an
// Effect defect `no_response` (logged), an unknown path `not_found`. Shared by the server and by
// clients that serve calls from the other side.
//
// Around it, middleware (hooks, like teleport's plugins): each hook may look at a request on the
// way in (`before`) and at its outcome on the way out (`after`). The order is fixed:
//
//   statistics (statistics.ts, when on) > global hooks in the order added > route hooks in the
//   order given > handler > route hooks in reverse > global hooks in reverse > statistics
//
// A `before` that returns an outcome (bytes, `reply(...)` or `failure(...)`) answers at once: the
// handler and the hooks after it do not run, and the hooks up to and including it see that
// outcome on the way out. A hook that throws a `Refused` answers with its code, `processed: false`;
// any other throw becomes `handler_failed`. Global hooks run for unknown paths too, so an
// authentication hook refuses before the caller learns which paths exist. The same runner
// (`runHooks`) serves the calling side (src/toolkit/loadBalanceClient.ts).
import * as Cause from "effect/Cause"
import * as Data from "effect/Data"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import { type Dispatch, type Failure, failure, type IncomingRequest, isPromiseLike, type Outcome, PendingOutcome, type Reply } from "../mux/request.ts"
import { MeshErrorCode } from "../protocol/mesh.ts"
import { type Log, messageOf } from "./log.ts"
import { clamp, loggable } from "./redact.ts"
import type { Router } from "./router.ts"
import type { ServerStatistics } from "./statistics.ts"

export type Body = Uint8Array | string
/** What a handler gives back: a body, a body with metadata or streaming out (`reply`), or a typed `failure`. */
export type HandlerValue = Body | Reply | Failure
/** A `PendingOutcome` (mux/request.ts) goes to the session as it is: a hot path's answer without promises. */
export type HandlerResult = HandlerValue | PromiseLike<HandlerValue> | PendingOutcome | Effect.Effect<HandlerValue, unknown>
export type Handler = (request: IncomingRequest) => HandlerResult

/** A hook's typed refusal: the request is answered with `code` (processed false: the handler never ran). */
export class Refused extends Data.TaggedError("Refused")<{ readonly code: string; readonly message: string }> {}

/** One middleware of a chain: `before` on the way in (an output answers at once), `after` on the way out (an output replaces). */
export interface Hook<I, O> {
  readonly before?: (input: I) => O | undefined | PromiseLike<O | undefined>
  readonly after?: (input: I, output: O) => O | undefined
}

/** A serving hook: sees every request (global) or the requests of one route. */
export type ServeHook = Hook<IncomingRequest, Outcome>

/**
 * Runs `core` inside `hooks` (the first outermost). Synchronous as long as every step is; never
 * throws or rejects: a hook or core that throws gives `onThrow(error)` at that point.
 */
export const runHooks = <I, O>(
  hooks: ReadonlyArray<Hook<I, O>>,
  input: I,
  core: (input: I) => O | PromiseLike<O>,
  onThrow: (error: unknown) => O
): O | Promise<O> => {
  const outward = (from: number, output: O): O => {
    for (let i = from; i >= 0; i--) {
      const after = hooks[i]!.after
      if (after === undefined) continue
      try {
        output = after(input, output) ?? output
      } catch (error) {
        output = onThrow(error)
      }
    }
    return output
  }
  const settle = (from: number, result: PromiseLike<O>): Promise<O> =>
    Promise.resolve(result).then((output) => outward(from, output), (error: unknown) => outward(from, onThrow(error)))
  const inward = (from: number): O | Promise<O> => {
    for (let i = from; i < hooks.length; i++) {
      const before = hooks[i]!.before
      if (before === undefined) continue
      let answer: O | undefined | PromiseLike<O | undefined>
      try {
        answer = before(input)
      } catch (error) {
        return outward(i, onThrow(error))
      }
      if (isPromiseLike(answer)) {
        return Promise.resolve(answer).then(
          (early) => (early === undefined ? inward(i + 1) : outward(i, early)),
          (error: unknown) => outward(i, onThrow(error))
        )
      }
      if (answer !== undefined) return outward(i, answer)
    }
    const last = hooks.length - 1
    let result: O | PromiseLike<O>
    try {
      result = core(input)
    } catch (error) {
      return outward(last, onThrow(error))
    }
    return isPromiseLike(result) ? settle(last, result) : outward(last, result)
  }
  return inward(0)
}

const toOutcome = (value: HandlerValue): Outcome => (typeof value === "string" ? Buffer.from(value, "utf8") : value)
const failed = (error: unknown): Failure => failure(MeshErrorCode.handlerFailed, messageOf(error), true)
const noResponse = failure(MeshErrorCode.noResponse, "handle no response", true)
const hookThrew = (error: unknown): Outcome => (error instanceof Refused ? failure(error.code, error.message, false) : failed(error))

/** The longest cause a `handler-crashed` line shows: a stack of a few dozen frames. */
const MAX_CAUSE_CHARS = 4000

/** Runs one handler and turns whatever it gives (value, promise, Effect, throw) into an Outcome. */
const resolver = (log: Log) => {
  const runEffect = (request: IncomingRequest, effect: Effect.Effect<HandlerValue, unknown>): Promise<Outcome> =>
    Effect.runPromiseExit(effect, { signal: request.signal }).then((exit) => {
      if (Exit.isSuccess(exit)) return toOutcome(exit.value)
      const cause = exit.cause
      if (Cause.hasFails(cause)) {
        const found = Cause.findErrorOption(cause)
        return failed(found._tag === "Some" ? found.value : "failed")
      }
      // The path is the peer's (up to a packet's), the cause may quote its data: both cut.
      if (Cause.hasDies(cause)) log("handler-crashed", { path: loggable(request.path), remote: request.remoteAddress, cause: clamp(Cause.pretty(cause), MAX_CAUSE_CHARS) })
      return noResponse
    })
  return (request: IncomingRequest, handler: Handler): Outcome | PromiseLike<Outcome> => {
    let result: HandlerResult
    try {
      result = handler(request)
    } catch (error) {
      return failed(error)
    }
    if (typeof result === "string" || result instanceof Uint8Array) return toOutcome(result)
    if (result instanceof PendingOutcome) return result
    if (Effect.isEffect(result)) return runEffect(request, result)
    if ("_tag" in result) return result
    return Promise.resolve(result).then(toOutcome, failed)
  }
}

/** `handler` with route hooks around it (itself when there are none). */
export const withHooks = (handler: Handler, hooks: ReadonlyArray<ServeHook>, log: Log): Handler => {
  if (hooks.length === 0) return handler
  const resolve = resolver(log)
  const chain = [...hooks]
  return (request) => runHooks(chain, request, (r) => resolve(r, handler), hookThrew)
}

/**
 * The dispatch of a router. `hooks` is read per request, so hooks added later take effect at once;
 * `statistics` counts every request and its outcome (unknown paths and refusals included).
 */
export const makeDispatch = (
  router: Router<Handler>,
  log: Log,
  hooks: ReadonlyArray<ServeHook> = [],
  statistics?: ServerStatistics
): Dispatch => {
  const resolve = resolver(log)
  const serve = (request: IncomingRequest): Outcome | PromiseLike<Outcome> => {
    const handler = router.lookup(request.path)
    if (handler === undefined) return failure(MeshErrorCode.notFound, `no handler for ${request.path}`, false)
    return resolve(request, handler)
  }
  const hooked = (request: IncomingRequest): Outcome | PromiseLike<Outcome> =>
    hooks.length === 0 ? serve(request) : runHooks(hooks, request, serve, hookThrew)
  if (statistics === undefined) return hooked
  return (request) => {
    const started = statistics.begin(request)
    const outcome = hooked(request)
    if (!isPromiseLike(outcome)) return statistics.end(request, started, outcome)
    return Promise.resolve(outcome).then((settled) => statistics.end(request, started, settled))
  }
}
