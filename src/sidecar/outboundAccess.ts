// Outbound, the end of a request: its span and metrics, and the access record the access log
// writes (sidecar.ts), made once per request by outbound.ts and outboundUpgrade.ts as it ends.
import type { Failure, OutboundObservation } from "./observe.ts"
import type { Target } from "./outboundTarget.ts"

export interface AccessRecord {
  readonly service: string
  readonly endpoint: string
  readonly method: string
  readonly uri: string
  readonly status: number
  readonly durationMs: number
  /** Tries made (1 when there was no retry; 0 when no endpoint was tried). */
  readonly attempts: number
  /** The trace this request belongs to (absent with tracing off). */
  readonly traceId?: string
  readonly error?: { readonly hop: string; readonly reason: string }
}

/**
 * Ends an outbound request (a proxied one or an upgrade): its span and metrics, and its access line
 * when the log is on; once per request. Positional, so the request path allocates nothing for it.
 * `endedAt`: now (performance.now()), if the caller has read it.
 */
export const recordOutboundEnd = (
  observation: OutboundObservation,
  onAccess: ((record: AccessRecord) => void) | undefined,
  target: Target | undefined,
  fallbackUri: string,
  endpoint: string,
  method: string,
  status: number,
  started: number,
  attempts: number,
  error: Failure | undefined,
  endedAt: number = performance.now()
): void => {
  const failure = error === undefined ? undefined : { hop: error.hop, reason: error.reason }
  const traceId = observation.end(status, endpoint, attempts, failure, endedAt)
  if (onAccess === undefined) return
  onAccess({
    service: target?.service ?? "-",
    endpoint,
    method,
    uri: target?.uri ?? fallbackUri,
    status,
    durationMs: endedAt - started,
    attempts,
    ...(traceId === undefined ? {} : { traceId }),
    ...(failure === undefined ? {} : { error: failure })
  })
}
