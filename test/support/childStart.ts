// The one bound on a child process's start (a CLI run, a sidecar, a server child, a mesh instance):
// every helper and test that waits for a child to listen, print its ready line or finish a short
// CLI command uses it, and tests that wait for such starts take their timeout from `holdsStarts`.
//
// It bounds a start that never comes (a crash, a hang), not a speed: nothing asserts how fast a
// child starts. Measured: 1.7-9 s from spawn in CI logs; 5.5-6.5 s for a mesh instance at load 17
// here and over 15 s once in CI; a child's import of @kubernetes/client-node alone took 7-7.8 s wall
// at load 20; at load 14-17 starts went over 10, 15 and 20 s limits.
export const CHILD_START_MS = 30_000

/**
 * A test timeout that holds `starts` child starts waited for one after another plus `ownMs`, the
 * test's own bounds on what follows them (its waits for events, its work).
 */
export const holdsStarts = (starts: number, ownMs: number): number => starts * CHILD_START_MS + ownMs
