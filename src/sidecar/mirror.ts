// A route's mirror (routeActions.ts): a copy of a matched request sent to another subset of the
// same service, from outbound.ts once the request's body is held whole, beside the primary try.
// Its answer is dropped unread, it never retries, and it never touches the primary: a mirror that
// cannot go at once (its route's bound of mirrors in flight reached, no endpoint in the subset, the
// endpoint a plain IIP peer, a streamed body that cannot be sent twice) is skipped, and whatever
// it fails with is swallowed (the endpoint's health still learns of it, as from any try).
import { Cancellation } from "../mux/cancellation.ts"
import { monotonicMs } from "../mux/clock.ts"
import type { Meta } from "../protocol/mesh.ts"
import type { EndpointRegistry } from "./endpoints.ts"
import { HttpMeta } from "./httpEnvelope.ts"

/** At most `max` mirrors of one route in flight; one more is skipped, not queued. */
export class MirrorGate {
  private readonly max: number
  private inFlight = 0

  constructor(max: number) {
    this.max = max
  }

  tryEnter(): boolean {
    if (this.inFlight >= this.max) return false
    this.inFlight++
    return true
  }

  leave(): void {
    this.inFlight--
  }
}

export interface MirrorRequest {
  readonly registry: EndpointRegistry
  readonly service: string
  readonly subset: string
  readonly uri: string
  readonly body: Uint8Array
  readonly meta: Meta
  readonly context: { readonly key?: string; readonly clientIp?: string; readonly uri?: string }
  /** The primary request's deadline (monotonicMs() terms, src/mux/clock.ts): the mirror gets no longer. */
  readonly deadline: number
}

/** Sends the mirror if the gate lets it; returns at once (the mirror runs on, bounded by the deadline). */
export const sendMirror = (gate: MirrorGate, request: MirrorRequest): void => {
  if (!gate.tryEnter()) return
  mirrorOnce(request).then(
    () => gate.leave(),
    () => gate.leave()
  )
}

const mirrorOnce = async (request: MirrorRequest): Promise<void> => {
  const { registry, service, subset } = request
  const picked = registry.pick(service, request.context, undefined, subset)
  if (picked._tag !== "Picked") return
  const { lease } = picked
  const started = performance.now()
  const control = new Cancellation()
  let ok = false
  try {
    const client = registry.clientOf(lease.endpoint.endpoint)
    const mode = client.currentMode ?? (await client.mode(Math.max(1, request.deadline - monotonicMs())))
    if (mode !== "mesh") {
      ok = true // not the endpoint's failure: a plain peer takes no mirror
      return
    }
    const reply = await client.stream(request.uri, request.body, { meta: request.meta, timeoutMs: Math.max(1, request.deadline - monotonicMs()), signal: control })
    const status = Number(reply.meta.get(HttpMeta.status))
    ok = status >= 200 && status < 500
    // The answer is not wanted: a streamed body stops here.
    if (reply.stream !== undefined) control.abort()
  } finally {
    registry.endLease(lease, started, ok)
  }
}
