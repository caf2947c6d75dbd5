// Outbound, what the handler is given (sidecar.ts makes it): the registry, the deadlines, the
// routes and the telemetry that outbound.ts, outboundRoute.ts and outboundUpgrade.ts read.
import type { GrantingPool } from "../mux/streams.ts"
import type { EndpointRegistry } from "./endpoints.ts"
import type { OnInvalidHeader } from "./headerFilter.ts"
import type { SidecarTelemetry } from "./observe.ts"
import type { AccessRecord } from "./outboundAccess.ts"
import type { CompiledRoutes } from "./routes.ts"

/**
 * The stream window the endpoints' clients state (PROTOCOL.md §13): what a peer may send of an
 * answer before this side grants more. A chunk, so an answer whose caller reads none of it holds
 * that here; one piped to a caller is widened towards the full window while that limits it (answerStreams).
 */
export const ANSWER_FIRST_WINDOW = 64 * 1024

export interface OutboundOptions {
  readonly registry: EndpointRegistry
  readonly requestTimeoutMs: number
  /** Each try's own timeout inside the deadline; undefined for all that is left. */
  readonly perTryTimeoutMs?: number
  /**
   * Without a per-try timeout: an idempotent try with no answer after this long (or 10x its
   * endpoint's latency estimate, if longer) is given up for another endpoint, when a retry is
   * possible then (slowTry.ts). Undefined: never.
   */
  readonly slowTryFloorMs?: number
  /** Where consistent hashing and MethodURIParam find their key: `header:NAME`, `query:NAME` or `client`. */
  readonly hashKey?: string
  /** The routes in force (routes.ts); absent: none, though a sticky baggage member still picks a subset (routing.ts). */
  readonly routes?: () => CompiledRoutes
  readonly telemetry: SidecarTelemetry
  /** Told of each request as it ends (the access log); undefined: no record is made. */
  readonly onAccess?: (record: AccessRecord) => void
  /** Told how many header pairs of a message were dropped as invalid (headerFilter.ts). */
  readonly onInvalidHeaders?: OnInvalidHeader
  /** Requests begun whose response has not closed yet (the sidecar's drain waits for 0). */
  readonly inFlight?: { value: number }
  /**
   * Event streams refused here, 503 overloaded, for want of a stream place on the connections to
   * every endpoint tried (once a request; a metric reads it at each scrape).
   */
  readonly eventStreamsRefused?: { value: number }
  /**
   * The answers streaming back from the mesh to the callers, all connections: what they hold
   * unread, and the bound past which they are granted a chunk at a time (streams.ts GrantingPool;
   * the endpoints' clients state a smaller stream window for it: ANSWER_FIRST_WINDOW).
   */
  readonly answerStreams?: GrantingPool
}
