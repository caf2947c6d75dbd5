// From a router of handlers to the Dispatch a session calls: the handler's value, promise or
// Effect becomes an Outcome; a throw, rejection or Effect failure becomes `handler_failed`, an
// Effect defect `no_response` (logged), an unknown path `not_found`. Shared by the server and by
// clients that serve calls from the other side.
import * as Cause from "effect/Cause"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import { type Dispatch, type Failure, failure, type IncomingRequest, type Outcome, type Reply } from "../mux/request.ts"
import { MeshErrorCode } from "../protocol/mesh.ts"
import { type Log, messageOf } from "./log.ts"
import type { Router } from "./router.ts"

export type Body = Uint8Array | string
/** What a handler gives back: a body, a body with metadata or streaming out (`reply`), or a typed `failure`. */
export type HandlerValue = Body | Reply | Failure
export type HandlerResult = HandlerValue | PromiseLike<HandlerValue> | Effect.Effect<HandlerValue, unknown>
export type Handler = (request: IncomingRequest) => HandlerResult

const toOutcome = (value: HandlerValue): Outcome => (typeof value === "string" ? Buffer.from(value, "utf8") : value)
const failed = (error: unknown): Failure => failure(MeshErrorCode.handlerFailed, messageOf(error), true)
const noResponse = failure(MeshErrorCode.noResponse, "handle no response", true)

export const makeDispatch = (router: Router<Handler>, log: Log): Dispatch => {
  const runEffect = (request: IncomingRequest, effect: Effect.Effect<HandlerValue, unknown>): Promise<Outcome> =>
    Effect.runPromiseExit(effect, { signal: request.signal }).then((exit) => {
      if (Exit.isSuccess(exit)) return toOutcome(exit.value)
      const cause = exit.cause
      if (Cause.hasFails(cause)) {
        const found = Cause.findErrorOption(cause)
        return failed(found._tag === "Some" ? found.value : "failed")
      }
      if (Cause.hasDies(cause)) log("handler-crashed", { path: request.path, remote: request.remoteAddress, cause: Cause.pretty(cause) })
      return noResponse
    })

  return (request) => {
    const handler = router.lookup(request.path)
    if (handler === undefined) return failure(MeshErrorCode.notFound, `no handler for ${request.path}`, false)
    let result: HandlerResult
    try {
      result = handler(request)
    } catch (error) {
      return failed(error)
    }
    if (typeof result === "string" || result instanceof Uint8Array) return toOutcome(result)
    if (Effect.isEffect(result)) return runEffect(request, result)
    if ("_tag" in result) return result
    return Promise.resolve(result).then(toOutcome, failed)
  }
}
