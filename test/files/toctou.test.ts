// A directory of a requested path swapped for a symlink that leads out of the root between the
// server's check (realpath) and its open: the open's descriptor is checked for where it really
// leads, so nothing outside the root is read. The swap is made deterministic by running it inside
// realpathSync.native, right after the check has seen the real directory.
import * as Effect from "effect/Effect"
import * as fs from "node:fs"
import { mkdirSync, renameSync, symlinkSync, writeFileSync } from "node:fs"
import { join } from "node:path"
import { afterEach, describe, expect, it, vi } from "vitest"
import { openRoot, serveFiles } from "../../src/files/server.ts"
import { ask, connect, taskId } from "../../src/files/transfer.ts"
import { encodeChecksumRequest, encodeDownloadRequest, FilePath } from "../../src/files/wire.ts"
import { IipServer } from "../../src/iip/server.ts"
import { Cleanup } from "../support/iipRaw.ts"
import { tempDir } from "./support.ts"

const swap = vi.hoisted(() => ({ after: undefined as (() => void) | undefined }))

vi.mock("node:fs", async (importOriginal) => {
  const original = await importOriginal<typeof import("node:fs")>()
  const realpathSync = Object.assign((...args: Parameters<typeof original.realpathSync>) => original.realpathSync(...args), {
    native: (path: fs.PathLike) => {
      const real = original.realpathSync.native(path)
      const then = swap.after
      swap.after = undefined
      then?.()
      return real
    }
  })
  return { ...original, default: { ...original, realpathSync }, realpathSync }
})

const cleanup = new Cleanup()
afterEach(() => cleanup.run())

describe("a directory swapped for a symlink between check and open", () => {
  it("is not read through, for download or checksum", async () => {
    const base = tempDir(cleanup, "toctou")
    const root = join(base, "root")
    const outside = join(base, "outside")
    mkdirSync(join(root, "d"), { recursive: true })
    mkdirSync(outside)
    writeFileSync(join(root, "d", "f.txt"), "inside")
    writeFileSync(join(outside, "f.txt"), "SECRET")
    const server = new IipServer({ host: "127.0.0.1", port: 0, mesh: false, log: () => {} })
    serveFiles(server, await openRoot(root))
    await server.listen()
    cleanup.add(() => server.close())
    const swapIn = () => {
      renameSync(join(root, "d"), join(root, "d-old"))
      symlinkSync(outside, join(root, "d"))
    }
    const swapBack = () => {
      fs.rmSync(join(root, "d"))
      renameSync(join(root, "d-old"), join(root, "d"))
    }
    const request = (path: string, data: Buffer) =>
      Effect.runPromise(Effect.scoped(Effect.gen(function*() {
        const remote = yield* connect({ host: "127.0.0.1", port: server.address.port }, "d/f.txt")
        return yield* ask(remote, path, data)
      })))

    swap.after = swapIn
    const downloaded = await request(FilePath.download, encodeDownloadRequest(taskId, "d/f.txt", 0))
    expect(downloaded.toString()).toBe(`{"code":-1,"message":"handler fail:path refused: \\"d/f.txt\\" resolves outside the root"}`)
    swapBack()
    swap.after = swapIn
    const hashed = await request(FilePath.checksum, encodeChecksumRequest({ filePath: "d/f.txt", upload: false, length: undefined }))
    expect(hashed.toString()).toBe(`{"code":-1,"message":"handler fail:path refused: \\"d/f.txt\\" resolves outside the root"}`)
  })
})
