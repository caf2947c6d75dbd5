// A stall of this process for tests of what it does to judgments of peers (keepalive-own-stall,
// slow-try-own-stall, deadline-own-stall): what a long GC, a noisy neighbour or a throttled
// cgroup does to a sidecar.

/** Blocks this process's event loop for `ms`: the stall under test, not a wait for anything. */
export const busyWait = (ms: number): void => {
  const until = performance.now() + ms
  while (performance.now() < until) {
    // spinning
  }
}
