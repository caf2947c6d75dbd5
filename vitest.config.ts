// Test runner settings: real sockets and child processes, so generous but bounded timeouts.
// Files named *.solo.test.ts measure latency under load they make themselves: `npm test` runs them
// after the rest, alone, since other files running in parallel on two cores would stall them.
import { defineConfig } from "vitest/config"

export default defineConfig({
  test: {
    include: ["test/**/*.test.ts"],
    testTimeout: 30_000,
    hookTimeout: 30_000,
    pool: "forks"
  }
})
