// A directory of a requested path swapped for a symlink that leads out of the root between the
// server's check (realpath) and its use: the open's descriptor is checked for where it really
// leads, so nothing outside the root is read; an upload's partial file is created, and renamed to
// its name, in its directory held open, so nothing outside the root is created or replaced. The
// swap is made deterministic by running it inside realpathSync.native, right after the check has
// seen the real directory, or just before the upload's open, rename, mkdir or rmdir.
// The same hooks make a file sent whole fail to take its name (a directory made there just before
// its rename) and its partial fail to be removed (an unlink that fails, as it does for a non-root
// server in a directory made read-only meanwhile): the partial stays counted among the unfinished
// uploads, and the sweep removes it once expired.
import * as Effect from "effect/Effect"
import * as fs from "node:fs"
import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, symlinkSync, writeFileSync } from "node:fs"
import { join } from "node:path"
import { afterEach, describe, expect, it, vi } from "vitest"
import { openRoot, serveFiles } from "../../src/files/server.ts"
import { ask, connect, taskId } from "../../src/files/transfer.ts"
import { encodeChecksumRequest, encodeDownloadRequest, encodeUploadRequest, FilePath } from "../../src/files/wire.ts"
import { IipServer } from "../../src/iip/server.ts"
import { Cleanup, waitFor } from "../support/iipRaw.ts"
import { tempDir } from "./support.ts"

const swap = vi.hoisted(() => ({
  after: undefined as (() => void) | undefined,
  beforeOpenPartial: undefined as (() => void) | undefined,
  beforeRename: undefined as (() => void) | undefined,
  beforeMkdir: undefined as (() => void) | undefined,
  afterMkdir: undefined as (() => void) | undefined,
  beforeRmdir: undefined as (() => void) | undefined,
  beforeUnlink: undefined as (() => void) | undefined
}))

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

vi.mock("node:fs/promises", async (importOriginal) => {
  const original = await importOriginal<typeof import("node:fs/promises")>()
  const take = (key: "beforeOpenPartial" | "beforeRename" | "beforeMkdir" | "afterMkdir" | "beforeRmdir" | "beforeUnlink") => {
    const then = swap[key]
    swap[key] = undefined
    then?.()
  }
  const open: typeof original.open = (path, ...rest) => {
    if (String(path).endsWith(".iip-part")) take("beforeOpenPartial")
    return original.open(path, ...rest)
  }
  const rename: typeof original.rename = (from, to) => {
    take("beforeRename")
    return original.rename(from, to)
  }
  const mkdir = (async (path, options) => {
    take("beforeMkdir")
    // A failed request removes the directories it made: what the mkdir itself did is seen here.
    return await original.mkdir(path, options).finally(() => take("afterMkdir"))
  }) as typeof original.mkdir
  const rmdir: typeof original.rmdir = (path, options) => {
    take("beforeRmdir")
    return original.rmdir(path, options)
  }
  const unlink: typeof original.unlink = async (path) => {
    take("beforeUnlink")
    return await original.unlink(path)
  }
  return { ...original, default: { ...original, open, rename, mkdir, rmdir, unlink }, open, rename, mkdir, rmdir, unlink }
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

  it("an upload's partial file and directories are not created, nor renamed over a file, outside the root", async () => {
    const base = tempDir(cleanup, "toctou-upload")
    const root = join(base, "root")
    const outside = join(base, "outside")
    mkdirSync(join(root, "d"), { recursive: true })
    mkdirSync(outside)
    // Someone who can write to both places plants x.iip-part outside, next to a file they may not replace (a sticky /tmp, say).
    writeFileSync(join(outside, "x.iip-part"), "planted")
    writeFileSync(join(outside, "x"), "precious")
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
    const upload = (name: string, completed: boolean, offset = 0) =>
      Effect.runPromise(Effect.scoped(Effect.gen(function*() {
        const remote = yield* connect({ host: "127.0.0.1", port: server.address.port }, `d/${name}`)
        return (yield* ask(remote, FilePath.upload, encodeUploadRequest(taskId, `d/${name}`, offset, completed, Buffer.from("uploaded")))).toString()
      })))

    swap.beforeOpenPartial = swapIn
    expect(await upload("y", false)).toBe(`{"TaskId":1,"DoneBytes":8}`)
    swapBack()
    swap.beforeRename = swapIn
    expect(await upload("x", true)).toBe(`{"TaskId":1,"DoneBytes":8}`)
    swapBack()
    swap.beforeMkdir = swapIn
    let madeOutside: boolean | undefined
    swap.afterMkdir = () => (madeOutside = existsSync(join(outside, "new")))
    expect(await upload("new/z", false)).toMatch(/^{"code":-1,/)
    expect(madeOutside).toBe(false)
    // A refused request removes the directories it made: not an empty one of the same name outside.
    swapBack()
    mkdirSync(join(outside, "empty"))
    swap.beforeRmdir = swapIn
    expect(await upload("empty/z", false, 5)).toMatch(/no unfinished upload of \\"d\/empty\/z\\" to continue at 5/)
    expect(existsSync(join(outside, "empty"))).toBe(true)
    expect(readdirSync(outside).sort()).toStrictEqual(["empty", "x", "x.iip-part"])
    expect(readFileSync(join(outside, "x"), "utf8")).toBe("precious")
    // Both went where the checked directory went.
    expect(readdirSync(join(root, "d-old")).filter((name) => name !== "new" && name !== "empty").sort()).toStrictEqual(["x", "y.iip-part"])
  })
})

describe("a file sent whole whose rename fails and whose partial cannot be removed", () => {
  it("stays counted among the unfinished uploads, and the sweep removes it once expired", async () => {
    const root = tempDir(cleanup, "discard")
    const server = new IipServer({ host: "127.0.0.1", port: 0, mesh: false, log: () => {} })
    // One unfinished upload at most; one not written for 2 s expires (swept every 250 ms).
    serveFiles(server, await openRoot(root), { maxUnfinishedUploads: 1, partialMaxAgeMs: 2000 })
    await server.listen()
    cleanup.add(() => server.close())
    const upload = (name: string, completed: boolean) =>
      Effect.runPromise(Effect.scoped(Effect.gen(function*() {
        const remote = yield* connect({ host: "127.0.0.1", port: server.address.port }, name)
        return (yield* ask(remote, FilePath.upload, encodeUploadRequest(taskId, name, 0, completed, Buffer.from("uploaded")))).toString()
      })))
    swap.beforeRename = () => mkdirSync(join(root, "w"))
    swap.beforeUnlink = () => {
      throw Object.assign(new Error("EACCES: permission denied, unlink"), { code: "EACCES" })
    }
    expect(await upload("w", true)).toMatch(/^{"code":-1,.*(EISDIR|is a directory)/)
    // Still there: forgotten, it held its bytes and its entry until a restart, and took no place.
    expect(readdirSync(root).sort()).toStrictEqual(["w", "w.iip-part"])
    expect(await upload("u", false)).toMatch(/past this server's limit of 1 unfinished uploads \(1 held\)/)
    await waitFor(() => !existsSync(join(root, "w.iip-part")), 20_000, "the sweep to remove w.iip-part")
    expect(await upload("u", false)).toBe(`{"TaskId":1,"DoneBytes":8}`)
  })
})
