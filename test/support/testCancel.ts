// A cancel a test fires: the request's Cancellation as the inbound side hands it to an app leg
// (appH2.ts's CancelSource), for tests that drive a leg directly.
import type { AbortListener } from "../../src/mux/cancellation.ts"

export class TestCancel {
  aborted = false
  private listener: AbortListener | undefined = undefined
  addEventListener(_type: "abort", listener: AbortListener): void {
    this.listener = listener
  }
  removeEventListener(_type: "abort", listener: AbortListener): void {
    if (this.listener === listener) this.listener = undefined
  }
  fire(): void {
    this.aborted = true
    this.listener?.handleEvent()
  }
}
