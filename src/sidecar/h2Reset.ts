// How B resets its request to an h2c app (appH2Exchange.ts) on node:http2 once its bytes began:
// without an END_STREAM first and with a code the app reads as a cut. node's own calls do neither: a stream's
// destroy() with no error resets with NO_ERROR, which node's client reads as the stream's end
// ('end', rstCode 0) and curl as a whole answer (exit 0); close(code) ends the writable side
// first, so the peer sees END_STREAM (the body read as complete) and the reset after it, if at all.
import type * as http2 from "node:http2"
import { addAbortSignal } from "node:stream"

/** Aborted once: node destroys a stream this signal is added to with its own AbortError, which it resets with CANCEL. */
const ABORTED = AbortSignal.abort()

/** RST_STREAM CANCEL: the stream is not wanted any more (its caller went away or gave up); node's server emits 'aborted' and its body's reader fails. */
export const resetCancelled = (stream: http2.Http2Stream): void => {
  addAbortSignal(ABORTED, stream)
}
