// The requests of an IIP client (client.ts) that wait for a channel: no connection yet, or every
// channel busy with the client at its channel limit (its tunnels wait in a queue of their own, one
// more of these). First come, first served. A request stays its caller's while it waits: when its
// deadline passes or its caller cancels it, it leaves the queue at once and nothing of it was sent.
// A list through the requests themselves (removal in O(1), so thousands expiring together cost no
// more than thousands sent) and one timer for all their deadlines (deadlines.ts), not one per request.
import { Deadlines } from "../mux/deadlines.ts"
import { Cancelled } from "../mux/meshSession.ts"
import type { Pending } from "./clientRequest.ts"

export class ClientQueue {
  private head: Pending | undefined = undefined
  private tail: Pending | undefined = undefined
  /** Requests waiting. */
  size = 0
  private readonly deadlines: Deadlines<Pending>

  /** `expired`: a request whose deadline passed while it waited, already out of the queue; the client says why it got no channel. */
  constructor(expired: (request: Pending) => void) {
    this.deadlines = new Deadlines<Pending>((request) => {
      this.unlink(request)
      expired(request)
    })
  }

  push(request: Pending): void {
    request.previous = this.tail
    request.next = undefined
    if (this.tail === undefined) this.head = request
    else this.tail.next = request
    this.tail = request
    this.size++
    if (request.deadlineAt > 0) this.deadlines.addAt(request, request.deadlineAt)
    const signal = request.signal
    if (signal !== undefined) {
      const onAbort = () => {
        this.remove(request)
        request.callback(new Cancelled({ message: "request cancelled by the caller while it waited for a channel" }), undefined)
      }
      // Aborted already: it never waits.
      if (signal.aborted) return onAbort()
      signal.addEventListener("abort", onAbort)
      request.onAbort = onAbort
    }
  }

  /** The longest-waiting request, left in the queue; undefined when none waits. */
  get first(): Pending | undefined {
    return this.head
  }

  /** The longest-waiting request, out of the queue; undefined when none waits. */
  shift(): Pending | undefined {
    const request = this.head
    if (request !== undefined) this.remove(request)
    return request
  }

  /** Every waiting request, out of the queue (the client fails them). */
  takeAll(): Array<Pending> {
    const all: Array<Pending> = []
    for (let request = this.shift(); request !== undefined; request = this.shift()) all.push(request)
    return all
  }

  private remove(request: Pending): void {
    this.deadlines.remove(request)
    this.unlink(request)
  }

  private unlink(request: Pending): void {
    if (request.onAbort !== undefined) {
      request.signal!.removeEventListener("abort", request.onAbort)
      request.onAbort = undefined
    }
    const { previous, next } = request
    if (previous === undefined) this.head = next
    else previous.next = next
    if (next === undefined) this.tail = previous
    else next.previous = previous
    request.previous = undefined
    request.next = undefined
    // None waits: no timer either (an armed one would keep a process alive until it fired).
    if (--this.size === 0) this.deadlines.clear()
  }
}
