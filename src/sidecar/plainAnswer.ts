// A plain IIP caller's answer from the h2c leg (appH2.ts), gathered whole at the inbound side within
// the answer budget (appExchange.ts's AnswerBudget, `maxQueuedBytes`). A plain caller takes its
// answer as one packet (PROTOCOL.md §3): an answer the h2c leg streams (over 64 KiB, or not over
// within its hold) would otherwise be gathered by the server session, up to 16 MiB each with no
// bound across requests. Here each chunk is charged as it comes; past the budget (or the packet
// limit) the stream is left unread, which resets the app's stream (the exchange's reader is gone),
// and the caller gets the typed refusal, as the HTTP/1.1 leg gives it (the exchange counts one past
// the budget as this hop's overload, as that leg does; one past the packet limit as an answer nobody read). What it took goes back when the answer is whole or given up: the
// caller's deadline (B's default one: a plain caller sends none) bounds the whole answer here, as
// the h2c leg keeps it for a plain caller's (AppH2Request.plain). Only plain callers come here: a
// mesh caller's streamed answer goes on as a stream. The trailers that closed the stream go back
// in the answer's metadata, beside its head, as a whole answer's do (the h2c leg held them to the
// caller's metadata bound together).
import { RemoteError } from "../mux/meshChannels.ts"
import { failure, type Outcome, PendingOutcome, type Reply, reply } from "../mux/request.ts"
import type { WithTrailers } from "../mux/streams.ts"
import { Limits } from "../protocol/constants.ts"
import { MeshErrorCode } from "../protocol/mesh.ts"
import { type AnswerBudget, overBudgetMessage } from "./appExchange.ts"
import { PausingByteQueue } from "./byteQueue.ts"
import { AppErrorCode } from "./proxyError.ts"

/**
 * The outcome the h2c leg settles for a plain caller: a whole answer goes on to `outer` as it is,
 * a streamed one once gathered.
 */
export const plainAnswer = (answers: AnswerBudget, address: string, outer: PendingOutcome): PendingOutcome => {
  const inner = new PendingOutcome()
  inner.onSettled((outcome: Outcome) => {
    if (outcome instanceof Uint8Array || outcome._tag !== "Reply" || outcome.body instanceof Uint8Array) return outer.settle(outcome)
    void gather(answers, address, outcome, outer)
  })
  return inner
}

const gather = async (answers: AnswerBudget, address: string, answer: Reply, outer: PendingOutcome): Promise<void> => {
  const parts: Array<Uint8Array> = []
  let charged = 0
  try {
    for await (const chunk of answer.body as AsyncIterable<Uint8Array>) {
      if (charged + chunk.length > Limits.maxPacketData) {
        return outer.settle(failure(AppErrorCode.failed, `app at ${address}: its answer exceeds the ${Limits.maxPacketData} bytes a plain IIP answer carries`, true))
      }
      if (answers.held + chunk.length > answers.max) {
        const message = overBudgetMessage(charged + chunk.length, address, answers)
        // The exchange counts it as this hop's overload, not as the app's answer broken off.
        if (answer.body instanceof PausingByteQueue) answer.body.refuse(new RemoteError({ code: MeshErrorCode.overloaded, message, processed: true }))
        return outer.settle(failure(MeshErrorCode.overloaded, message, true))
      }
      answers.held += chunk.length
      charged += chunk.length
      parts.push(chunk)
    }
    const trailers = (answer.body as Partial<WithTrailers>).trailers
    const meta = trailers === undefined || trailers.size === 0 ? answer.meta : new Map([...answer.meta, ...trailers])
    outer.settle(reply(Buffer.concat(parts, charged), meta))
  } catch (error) {
    // The exchange failed mid-answer: its typed error, as the caller would have had it whole.
    outer.settle(error instanceof RemoteError ? failure(error.code, error.message, error.processed) : failure(AppErrorCode.failed, `app at ${address}: its answer broke off`, true))
  } finally {
    answers.held -= charged
  }
}
