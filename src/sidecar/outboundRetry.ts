// Outbound retries, the classification: after a try fails (outbound.ts), whether another endpoint
// may safely take the request, and whether the failure says something about the endpoint (the
// balancer ejects it, or holds it out as refused or restarting). Shared with outbound upgrades
// (outboundUpgrade.ts), which never retry but report a refused endpoint the same way.
import type { DialRefusal } from "../iip/dialGuard.ts"
import { ConnectFailed, ConnectionClosed, RequestTimeout } from "../mux/errors.ts"
import { RemoteError } from "../mux/meshSession.ts"
import { MeshErrorCode } from "../protocol/mesh.ts"
import { AppErrorCode } from "./proxyError.ts"

/** Tries per request, the first included (a route may ask for another number: routeActions.ts). */
export const MAX_ATTEMPTS = 3

/**
 * Tries of one request the dial guard refused that cost it none of its tries nor the retry budget:
 * nothing was sent or connected (microseconds each), and a hostile discovery source listing more
 * such endpoints than a request has tries, weighted above the real ones (and more than the balancer
 * may eject at once), would otherwise fail every request. Past this many, a refused try counts.
 */
export const FREE_REFUSED_DIALS = 16

/** RFC 9110 idempotent methods: running one twice has the effect of running it once. */
export const IDEMPOTENT = new Set(["GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"])

/**
 * A failure after which another endpoint may safely take the request: it never reached a handler
 * (no connection, refused while draining or overloaded, the app not listening). Not a head past the
 * app's header list limit: unprocessed, but every instance would refuse it alike.
 */
export const notProcessed = (error: unknown): boolean =>
  error instanceof ConnectFailed ||
  (error instanceof ConnectionClosed && !error.sent) ||
  (error instanceof RemoteError && !error.processed && error.code !== AppErrorCode.headersTooLarge)

/**
 * No connection to it could be made (nothing listens there, no answer within the connect timeout,
 * its TLS handshake or identity refused, not to be dialled: from another host at an address on this
 * one, src/iip/dialGuard.ts, or this sidecar's own listener, src/iip/ownListeners.ts), or it is
 * stopping and turned the request away unprocessed: the balancer holds the endpoint out (as
 * restarting when it said go-away just before) until a connection to it succeeds. Not a try whose
 * own deadline ended the wait for a connection still being made (`waitedOut`): that says nothing
 * of the endpoint, and holding it out left a healthy one out of picks for the rest of its dial.
 */
export const refusedOrDraining = (error: unknown): boolean =>
  (error instanceof ConnectFailed && error.waitedOut !== true) || (error instanceof RemoteError && error.code === MeshErrorCode.draining && !error.processed)

/** Why the dial guard refused the endpoint's address (src/iip/dialGuard.ts, ownListeners.ts), if it did: the registry counts and logs it. */
export const dialRefusalOf = (error: unknown): DialRefusal | undefined =>
  error instanceof ConnectFailed && error.notPeer === true ? (error.ownListener === true ? "own-listener" : "not-peer") : undefined

/** Far-side errors that another endpoint would give too, or that end the request: not worth a retry. */
const FINAL_REMOTE_ERRORS = new Set<string>([MeshErrorCode.deadlineExceeded, MeshErrorCode.cancelled, MeshErrorCode.notFound, MeshErrorCode.badRequest, AppErrorCode.forbidden, AppErrorCode.rateLimited, AppErrorCode.headersTooLarge])

/** The far side's policy or rate limit refused the caller: a verdict, not a failure of the endpoint (no ejection). */
export const refusedByPolicy = (error: unknown): boolean => error instanceof RemoteError && (error.code === AppErrorCode.forbidden || error.code === AppErrorCode.rateLimited)

/** A failure of the try, not of the request: another endpoint may do better. */
export const transportFailure = (error: unknown): boolean =>
  error instanceof ConnectionClosed || error instanceof RequestTimeout || (error instanceof RemoteError && !FINAL_REMOTE_ERRORS.has(error.code))
