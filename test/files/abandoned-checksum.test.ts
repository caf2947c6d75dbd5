// A checksum whose caller is gone stops hashing: a client asks for the SHA-256 of a 4 GiB file
// (sparse: no disk used) and closes its connection as soon as the handler begins; the handler's
// request.signal aborts and the hash stops at its next block, instead of reading all 4 GiB for an
// answer nobody can read. A global hook sees the handler's outcome: a refusal, not a checksum.
import { closeSync, ftruncateSync, openSync } from "node:fs"
import { join } from "node:path"
import { afterEach, describe, expect, it } from "vitest"
import { openRoot, serveFiles } from "../../src/files/server.ts"
import { encodeChecksumRequest, FilePath } from "../../src/files/wire.ts"
import type { Outcome } from "../../src/mux/request.ts"
import { Cleanup, deferred, withTimeout } from "../support/iipRaw.ts"
import { settle, startClient, startServer } from "../support/meshTest.ts"
import { tempDir } from "./support.ts"

const cleanup = new Cleanup()
afterEach(() => cleanup.run())

const GiB = 1024 * 1024 * 1024

describe.each([
  { mode: "plain", mesh: false },
  { mode: "mesh", mesh: true }
])("a checksum abandoned by its caller ($mode)", ({ mesh }) => {
  it("stops hashing when the connection closes", async () => {
    const root = tempDir(cleanup, "root")
    const fd = openSync(join(root, "huge.bin"), "w")
    ftruncateSync(fd, 4 * GiB)
    closeSync(fd)
    const server = await startServer(cleanup)
    const began = deferred()
    const ended = deferred<Outcome>()
    server.use({
      before: () => void began.resolve(),
      after: (_request, outcome) => void ended.resolve(outcome)
    })
    serveFiles(server, await openRoot(root))
    const client = startClient(cleanup, server.address.port, { mesh })
    const call = settle(client.call(FilePath.checksum, encodeChecksumRequest({ filePath: "huge.bin", upload: false, length: undefined })))
    await withTimeout(began.promise, 5000, "the checksum handler to begin")
    const closedAt = performance.now()
    client.close()
    expect((await call).ok).toBe(false)
    // Hashing all 4 GiB takes seconds here; stopped at its next 1 MiB block, it ends at once.
    const outcome = await withTimeout(ended.promise, 60_000, "the checksum handler to end")
    console.log(`[abandoned-checksum] ${mesh ? "mesh" : "plain"}: handler ended ${(performance.now() - closedAt).toFixed(0)} ms after the close`)
    expect(outcome instanceof Uint8Array).toBe(false)
    expect(outcome).toMatchObject({ _tag: "Failure", message: expect.stringContaining("stopped") })
  }, 90_000)
})
