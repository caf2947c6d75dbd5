// The inbound side's authorization gate: before a peer's request reaches the local app, the policy
// in force (src/identity/policy.ts; from `--authz-policy`, re-read on change, else allow-all)
// decides on the caller's verified identity (RequestContext.peerIdentity, proved by TLS), the
// method and the path. A refusal is the typed mesh error `forbidden` (processed: final, never
// tried on another endpoint; the caller's sidecar answers its app 403 with
// `x-iip-mesh-error: inbound; reason=forbidden`), counted per service and reason, and logged with
// both identities, sanitized, at most LOG_LINES per LOG_WINDOW_MS (the rest counted in the next line).
// An allowed request carries the caller's identity to the app in `x-iip-mesh-client-id`
// (headerFilter.ts drops any the caller sent). Allow-all costs one property read per request.
import { type Failure, failure } from "../iip/server.ts"
import { type Log, LogThrottle } from "../iip/log.ts"
import { loggable } from "../iip/redact.ts"
import type { CompiledPolicy } from "../identity/policy.ts"
import type { MeshMetrics } from "../telemetry/metrics.ts"
import { AppErrorCode } from "./proxyError.ts"

const LOG_LINES = 20
const LOG_WINDOW_MS = 10_000

export interface AuthorizationOptions {
  /** This sidecar's service (metrics label, log field). */
  readonly service: string
  /** This sidecar's own identity, for the log line of a refusal. */
  readonly localIdentity: string
  /** The policy in force now (a reload swaps what it returns). */
  readonly policy: () => CompiledPolicy
  readonly metrics: MeshMetrics
  readonly log: Log
  /** The clock of the log's rate limit (default monotonicMs(), src/mux/clock.ts). */
  readonly now?: () => number
}

export class InboundAuthorization {
  private readonly options: AuthorizationOptions
  private readonly logLines: LogThrottle

  constructor(options: AuthorizationOptions) {
    this.options = options
    this.logLines = new LogThrottle(LOG_LINES, LOG_WINDOW_MS, options.now)
  }

  /** Undefined when the request may go on; else the failure to answer it with. */
  check(identity: string | undefined, method: string, target: string, remoteAddress: string): Failure | undefined {
    const policy = this.options.policy()
    if (policy.allowsAll) return undefined
    const verdict = policy.decide(identity, method, target)
    if (verdict === "allow") return undefined
    this.options.metrics.authzDenied(this.options.service, verdict)
    this.logDenied(identity, method, target, remoteAddress, verdict, policy.source)
    return failure(AppErrorCode.forbidden, `${this.options.service} does not allow this call (${verdict})`, true)
  }

  private logDenied(identity: string | undefined, method: string, target: string, remoteAddress: string, verdict: string, source: string): void {
    const admitted = this.logLines.admit()
    if (admitted === undefined) return
    const q = target.indexOf("?")
    this.options.log("authz-denied", {
      service: this.options.service,
      callee: loggable(this.options.localIdentity),
      caller: identity === undefined ? "none (no verified identity)" : loggable(identity),
      peer: loggable(remoteAddress, 64),
      method: loggable(method, 32),
      // The path only: a query may carry what must not be logged.
      path: loggable(q === -1 ? target : target.slice(0, q)),
      reason: verdict,
      policy: source,
      ...admitted
    })
  }
}
