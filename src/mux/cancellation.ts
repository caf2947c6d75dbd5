// How a request is cancelled on the hot path. A call takes a CancelSignal (an AbortSignal is one),
// and the sidecar passes a Cancellation: the same three members without the EventTarget machinery
// (an AbortController, its signal, an event and a listener record per request cost about as much
// as the rest of a call's bookkeeping). A served request's context holds a Cancellation too and
// builds a real AbortSignal only for a handler that asks for one (Effect handlers do).

/**
 * A listener as an object, as EventTarget takes one: a request's own handler object can listen
 * without a closure made for it per request (issue 14).
 */
export interface AbortListener {
  handleEvent(): void
}

/** What a call reads of its cancellation: AbortSignal and Cancellation both have it. */
export interface CancelSignal {
  readonly aborted: boolean
  addEventListener(type: "abort", listener: (() => void) | AbortListener, options?: { readonly once?: boolean }): void
  removeEventListener(type: "abort", listener: (() => void) | AbortListener): void
}

const notify = (listener: (() => void) | AbortListener): void => {
  if (typeof listener === "function") listener()
  else listener.handleEvent()
}

/**
 * A one-shot cancellation. Listeners run once, in the order added, when `abort` is first called;
 * one added after that never runs (as with an AbortSignal whose event has passed).
 */
export class Cancellation implements CancelSignal {
  aborted = false
  /** What `abort` was given (undefined before). */
  reason: unknown = undefined
  /** Usually one listener: kept apart so that a request allocates no array. */
  private first: (() => void) | AbortListener | undefined = undefined
  private more: Array<(() => void) | AbortListener> | undefined = undefined
  private controller: AbortController | undefined = undefined

  addEventListener(_type: "abort", listener: (() => void) | AbortListener): void {
    if (this.aborted) return
    if (this.first === undefined) this.first = listener
    else (this.more ??= []).push(listener)
  }

  removeEventListener(_type: "abort", listener: (() => void) | AbortListener): void {
    if (this.first === listener) this.first = undefined
    else if (this.more !== undefined) {
      const index = this.more.indexOf(listener)
      if (index !== -1) this.more.splice(index, 1)
    }
  }

  /** This cancellation as an AbortSignal, made on first use (aborted already if it is). */
  get signal(): AbortSignal {
    if (this.controller === undefined) {
      this.controller = new AbortController()
      if (this.aborted) this.controller.abort(this.reason)
    }
    return this.controller.signal
  }

  abort(reason?: unknown): void {
    if (this.aborted) return
    this.aborted = true
    this.reason = reason
    const first = this.first
    const more = this.more
    this.first = undefined
    this.more = undefined
    if (first !== undefined) notify(first)
    if (more !== undefined) for (const listener of more) notify(listener)
    this.controller?.abort(reason)
  }
}
