// A vitest `it` whose tests each get their own Cleanup, run when that test ends (passed or failed):
// for files whose tests wait out real timers side by side (describe.concurrent), where one Cleanup
// set in beforeEach would be shared by the tests running at once.
import { it as base } from "vitest"
import { Cleanup } from "./iipRaw.ts"

export const it = base.extend("cleanup", async ({}, { onCleanup }) => {
  const cleanup = new Cleanup()
  onCleanup(() => cleanup.run())
  return cleanup
})
