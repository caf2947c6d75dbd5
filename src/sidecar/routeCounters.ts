// Per-route counters (the admin's /mesh view and dashboard, src/admin/views.ts): requests a route
// (or the sticky baggage member) took, how many failed, and the split it actually made, per
// subset or service. Plain numbers bumped on the request path (routing.ts when it chooses,
// outbound.ts when the request ends); kept with the compiled routes, so a reload starts them again.

/** Backends counted apart per route at most; later ones (a caller's baggage can name any subset) share "_other". */
const MAX_BACKENDS = 32

export class RouteCounters {
  requests = 0
  /** Answered with a 5xx or a mesh error (a fault, a rate limit): as the golden metrics count failures. */
  errors = 0
  readonly split = new Map<string, number>()

  /** A request went to `backend` (a subset, a service, or service/subset). */
  chose(backend: string): void {
    this.requests++
    const known = this.split.get(backend)
    if (known !== undefined) this.split.set(backend, known + 1)
    else if (this.split.size < MAX_BACKENDS) this.split.set(backend, 1)
    else this.split.set("_other", (this.split.get("_other") ?? 0) + 1)
  }

  finished(status: number, failed: boolean): void {
    if (status >= 500 || failed) this.errors++
  }

  view(): { readonly requests: number; readonly errors: number; readonly observed: Readonly<Record<string, number>> } {
    return { requests: this.requests, errors: this.errors, observed: Object.fromEntries(this.split) }
  }
}
