// How many of its own channels a mesh connection may have open after the peer refused one
// (PROTOCOL.md §11 `refuse`), owned by a MeshSession (meshSession.ts), which the connection pool
// asks (its `channelCap`) before it opens one more. The cap is the number of channels the peer
// had taken at the refusal; it lifts when one of them closes or its hold runs out.

/**
 * How long the cap a refusal sets holds before this side tries one more channel; doubled, up to
 * the max, while such a try is refused again. A server's budget is shared with its other clients,
 * so it frees without this side closing anything: a cap for good would keep a busy connection's
 * calls queued behind one another on the few channels it held at the refusal.
 */
const CapHoldMs = 1000
const MaxCapHoldMs = 30_000

export class ChannelCap {
  /** `until` and `holdMs` in performance.now() terms. */
  private cap = Infinity
  private until = 0
  private holdMs = CapHoldMs

  /** The cap now; Infinity while none holds. */
  get value(): number {
    if (this.cap !== Infinity && performance.now() >= this.until) this.cap = Infinity
    return this.cap
  }

  /** One of the channels the peer took gave its place back: it may take another. */
  lift(): void {
    this.cap = Infinity
  }

  /** The peer refused a channel while it held `taken` of this side's (more than none). */
  refused(taken: number): void {
    const now = performance.now()
    // Refused again soon after the last cap ran out: the peer is still full, wait longer.
    this.holdMs = this.until > 0 && now - this.until < this.holdMs ? Math.min(2 * this.holdMs, MaxCapHoldMs) : CapHoldMs
    this.cap = Math.min(this.value, taken)
    this.until = now + this.holdMs
  }
}
