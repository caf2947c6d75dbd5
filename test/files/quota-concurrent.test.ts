// The file server's quota against uploads that race for it (red team round six): many clients
// upload at once, each on its own connection, into a root whose quota holds only some of them.
// Every request reserves its bytes before it writes (quota.ts), so what lands on disk never passes
// the quota, however the requests interleave; the uploads refused say so, and leave no partial file.
// Without a declared size, each upload's first 1 MiB fit and every second request was refused: none
// finished, and the unfinished ones held the whole quota for a day (--partial-max-age). An upload
// refused for the quota now gives its bytes back, so the others finish, and the quota has room after.
import * as Effect from "effect/Effect"
import { readdirSync, statSync, writeFileSync } from "node:fs"
import { join } from "node:path"
import { afterEach, describe, expect, it } from "vitest"
import { openRoot, serveFiles } from "../../src/files/server.ts"
import { upload } from "../../src/files/upload.ts"
import { IipServer } from "../../src/iip/server.ts"
import { Cleanup } from "../support/iipRaw.ts"
import { randomFile, tempDir } from "./support.ts"

const cleanup = new Cleanup()
afterEach(() => cleanup.run())

const MiB = 1024 * 1024
const host = "127.0.0.1"
/** 24 connections at once on a loaded 2-core machine: their requests must not time out. */
const patient = { timeoutMs: 30_000, connectTimeoutMs: 30_000 }

/** Bytes of the regular files under `dir`, partial files included. */
const bytesUnder = (dir: string): number =>
  readdirSync(dir, { withFileTypes: true, recursive: true }).reduce((sum, entry) => (entry.isFile() ? sum + statSync(join(entry.parentPath, entry.name)).size : sum), 0)

describe("the file server's quota under concurrent uploads", () => {
  it("24 uploads of 1.5 MiB at once into a 10 MiB quota: what is written never passes it, the refused ones leave nothing", async () => {
    const root = tempDir(cleanup, "root")
    const local = tempDir(cleanup, "local")
    const server = new IipServer({ host, port: 0, mesh: false, log: () => {} })
    serveFiles(server, await openRoot(root), { quotaBytes: 10 * MiB })
    await server.listen()
    cleanup.add(() => server.close())
    const size = 1.5 * MiB
    const uploads = 24
    for (let i = 0; i < uploads; i++) writeFileSync(join(local, `f${i}.bin`), randomFile(size))
    let peak = 0
    const watch = setInterval(() => (peak = Math.max(peak, bytesUnder(root))), 5)
    cleanup.add(() => clearInterval(watch))
    const results = await Promise.all(Array.from({ length: uploads }, (_, i) =>
      Effect.runPromise(Effect.result(upload({ host, port: server.address.port, localPath: join(local, `f${i}.bin`), remotePath: `d${i % 3}/f${i}.bin`, ...patient })))))
    clearInterval(watch)
    const done = results.filter((result) => result._tag === "Success").length
    const refused = results.flatMap((result) => (result._tag === "Failure" ? [result.failure.message] : []))
    expect(done).toBeGreaterThan(0)
    expect(refused.length).toBeGreaterThan(0)
    for (const message of refused) expect(message).toMatch(/this server.s quota of 10485760 bytes/)
    expect(Math.max(peak, bytesUnder(root))).toBeLessThanOrEqual(10 * MiB)
    expect(bytesUnder(root)).toBe(done * size)
    const partials = readdirSync(root, { recursive: true }).filter((name) => String(name).endsWith(".iip-part"))
    expect(partials).toStrictEqual([])
    // Six of 1.5 MiB fit 10 MiB: at least half of them finished.
    expect(done).toBeGreaterThanOrEqual(3)
    // What is left is free: a later small upload goes through.
    writeFileSync(join(local, "later.bin"), randomFile(100 * 1024))
    const later = await Effect.runPromise(upload({ host, port: server.address.port, localPath: join(local, "later.bin"), remotePath: "later.bin", ...patient }))
    expect(later.bytes).toBe(100 * 1024)
  }, 60_000)
})
