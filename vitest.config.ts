// Test runner settings: real sockets and child processes, so generous but bounded timeouts.
// Files named *.solo.test.ts measure latency under load they make themselves: `npm test` runs them
// after the rest, alone, since other files running in parallel on two cores would stall them.
// NODE_COMPILE_CACHE (Node's on-disk V8 code cache, keyed by file content and Node version) is set
// here so every test worker and every node child a test starts (CLI runs, sidecars, server
// children, the demo's apps) inherits it: a process start then compiles from the cache instead of
// from source (an `iip-mesh stat` start: 1.2-1.4 s of CPU instead of 1.9-2.0 s).
// maxWorkers: one test file per core. vitest's default for a run is one fewer (one on a 2-core
// machine), but most files here wait on sockets, timers and child processes rather than compute:
// on 2 cores the suite took 699 s with one worker and 371 s with two, every test passing.
import { availableParallelism, tmpdir } from "node:os"
import { join } from "node:path"
import { defineConfig } from "vitest/config"

process.env.NODE_COMPILE_CACHE ??= join(tmpdir(), "iip-mesh-node-compile-cache")

// Isolation: each test file gets a fresh process and module graph, and loading src and its
// libraries again costs about a second a file. The files of SHARED (codecs, HTTP/2, balancing: no
// module mocked, no global, env var or process listener touched, no fake timers, no stall of their
// own) run in one another's module graph (isolate: false). test/mux and test/toolkit were tried and
// failed so: deadlines-own-stall.test.ts (a timing test) 2 runs in 5, loadBalanceClient.test.ts 1 in
// 5, with 67 files at a load of 12-15. Every other file stays isolated.
const SOLO = "test/**/*.solo.test.ts"
const SHARED = ["test/protocol/**/*.test.ts", "test/h2/**/*.test.ts", "test/balancer/**/*.test.ts"]

export default defineConfig({
  test: {
    testTimeout: 30_000,
    hookTimeout: 30_000,
    pool: "forks",
    maxWorkers: availableParallelism(),
    projects: [
      { extends: true, test: { name: "shared", include: SHARED, isolate: false } },
      // The solo files' own project: `npm test` leaves them out of its first run with --exclude, which
      // a project that sets its own exclude list does not take.
      { extends: true, test: { name: "isolated", include: ["test/**/*.test.ts"], exclude: [...SHARED, SOLO] } },
      { extends: true, test: { name: "solo", include: [SOLO] } }
    ]
  }
})
