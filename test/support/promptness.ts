// Bounds for "promptly" in tests that time real I/O on a shared, loaded machine (CI runs on 2
// cores; engineers' machines sat at a load of 15-20). A bound here tells a mechanism that works
// from one that does not (a fallback timeout, or never), not how fast it is: latency figures
// belong in bench/.

/**
 * A cancellation that crosses a connection (a message each way through two event loops): done in
 * a few ms when idle, 249 ms was seen at load 20. Without it the far side waits for ever (tests
 * run without request timeouts) and the test's own 5 s wait fails.
 */
export const CANCEL_PROPAGATES_MS = 1000
