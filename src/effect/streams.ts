// Where IIP's channel streams meet Effect Streams. An IIP body that streams in (IncomingStream,
// an AsyncIterable that grants the peer more window as it is read) becomes a Stream pulled one
// chunk at a time; a Stream going out becomes the AsyncIterable the channel's sender pulls as the
// peer's window allows. Neither side buffers beyond one chunk, so both directions keep the
// window's back-pressure; closing the iterable (the session gave up, or the request was
// cancelled) interrupts the fiber running the Stream, so its finalizers run.
import type * as Context from "effect/Context"
import * as Stream from "effect/Stream"
import type { CancelSignal } from "../mux/cancellation.ts"

/** An incoming IIP body as a Stream; `onError` types what its iteration throws. */
export const fromIncoming = <E>(body: AsyncIterable<Uint8Array>, onError: (error: unknown) => E): Stream.Stream<Uint8Array, E> =>
  Stream.fromAsyncIterable(body, onError)

/**
 * A Stream as the AsyncIterable an IIP sender pulls, run with `context`. When `cancel` fires the
 * running pull is interrupted and the Stream's scope closed (finalizers run), whether or not the
 * sender is still pulling.
 */
export const toOutgoing = <A extends Uint8Array, E, R>(
  stream: Stream.Stream<A, E, R>,
  context: Context.Context<R>,
  cancel: CancelSignal | undefined
): AsyncIterable<Uint8Array> => ({
  [Symbol.asyncIterator]() {
    const iterator = Stream.toAsyncIterableWith(stream, context)[Symbol.asyncIterator]()
    const stop = () => void iterator.return?.()
    cancel?.addEventListener("abort", stop)
    const detach = <T>(result: T): T => {
      cancel?.removeEventListener("abort", stop)
      return result
    }
    return {
      next: () =>
        iterator.next().then(
          (result) => (result.done === true ? detach(result) : result),
          (error: unknown) => {
            detach(undefined)
            throw error
          }
        ),
      return: (value?: unknown) => detach(iterator.return?.(value) ?? Promise.resolve({ done: true, value: undefined }))
    }
  }
})
