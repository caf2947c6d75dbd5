// The file server's limits and its partial files (issue 13, point 8): a per-file size cap and a
// quota for everything under the root (measured at start, kept up to date with what the server
// writes), each refused in the protocol's error shape before a byte of the offending request is
// written; and an unfinished upload (`<path>.iip-part`) that is a hard link to a file elsewhere,
// or not a regular file, is never written through or hashed. The download client's own partial
// file is held to the same rule. Also the `file-server` command's --max-file-size and --quota.
import * as Effect from "effect/Effect"
import { execFileSync } from "node:child_process"
import { existsSync, linkSync, mkdirSync, readdirSync, readFileSync, statSync, symlinkSync, writeFileSync } from "node:fs"
import { join } from "node:path"
import { afterEach, describe, expect, it } from "vitest"
import { download } from "../../src/files/download.ts"
import { type FileServerOptions, openRoot, serveFiles } from "../../src/files/server.ts"
import { ask, connect, taskId } from "../../src/files/transfer.ts"
import { upload } from "../../src/files/upload.ts"
import { encodeChecksumRequest, encodeUploadRequest, FilePath } from "../../src/files/wire.ts"
import { IipServer } from "../../src/iip/server.ts"
import { holdsStarts } from "../support/childStart.ts"
import { Cleanup, frame, RawClient } from "../support/iipRaw.ts"
import { randomFile, runCli, sha256, sha256File, startFileServer, tempDir } from "./support.ts"

const cleanup = new Cleanup()
afterEach(() => cleanup.run())

const MiB = 1024 * 1024
const host = "127.0.0.1"

const setUp = async (options: FileServerOptions = {}) => {
  const root = tempDir(cleanup, "root")
  const local = tempDir(cleanup, "local")
  const outside = tempDir(cleanup, "outside")
  return { root, local, outside, start: () => listen(root, options) }
}

const listen = async (root: string, options: FileServerOptions) => {
  const server = new IipServer({ host, port: 0, mesh: false, log: () => {} })
  serveFiles(server, await openRoot(root), options)
  await server.listen()
  cleanup.add(() => server.close())
  return server.address.port
}

const uploadFails = async (port: number, localPath: string, remotePath: string) =>
  (await Effect.runPromise(Effect.flip(upload({ host, port, localPath, remotePath })))).message

/**
 * Opens a raw client with two channels and writes `count` pairs of uploads at once, `first(i)` on
 * channel 1 and `second(i)` on channel 2 behind 0-3 checksums of `s.txt` (there or not: a few file
 * system calls), so the second starts a varying margin after the first and races between them go
 * either way; the texts answered on each channel.
 */
const racedPairs = async (port: number, count: number, first: (i: number) => Buffer, second: (i: number) => Buffer) => {
  const client = await RawClient.connect(port, cleanup)
  await client.newChannel()
  await client.newChannel()
  const small = encodeChecksumRequest({ filePath: "s.txt", upload: false, length: undefined })
  const answers: Record<1 | 2, Array<string>> = { 1: [], 2: [] }
  for (let i = 0; i < count; i++) {
    const delay = i % 4
    client.write(Buffer.concat([
      ...Array.from({ length: delay }, () => frame(1, FilePath.checksum, 2, small)),
      frame(1, FilePath.upload, 1, first(i)),
      frame(1, FilePath.upload, 2, second(i))
    ]))
    for (let k = 0; k < 2 + delay; k++) {
      const answer = await client.next(10_000)
      answers[answer.channelId as 1 | 2].push(answer.data.toString())
    }
  }
  return { client, answers }
}

describe("file server limits", () => {
  it("a file may not grow past the per-file cap: the chunk that would is refused, nothing of it written, its unfinished upload removed", async () => {
    const { local, root, start } = await setUp({ maxFileBytes: 2 * MiB + 100, quotaBytes: 2 * MiB + 100 })
    const port = await start()
    writeFileSync(join(local, "big.bin"), randomFile(3 * MiB))
    expect(await uploadFails(port, join(local, "big.bin"), "big.bin")).toBe(
      `the server answered with error -1: "big.bin" would grow to ${3 * MiB} bytes, past this server's limit of ${2 * MiB + 100} bytes per file: ` +
        `its unfinished upload (${2 * MiB} bytes) was removed (it cannot finish here)`
    )
    expect(readdirSync(root)).toStrictEqual([])
    // Its bytes were given back: a file as large as the quota fits.
    writeFileSync(join(local, "fits.bin"), randomFile(2 * MiB + 100))
    await Effect.runPromise(upload({ host, port, localPath: join(local, "fits.bin"), remotePath: "fits.bin" }))
    expect(readdirSync(root)).toStrictEqual(["fits.bin"])
  })

  it("the root's quota counts what was there at start and what uploads add; the upload that would pass it is refused before writing", async () => {
    const { local, root, start } = await setUp({ quotaBytes: 3 * MiB })
    writeFileSync(join(root, "there-before.bin"), randomFile(MiB / 2))
    const port = await start()
    writeFileSync(join(local, "a.bin"), randomFile(2 * MiB))
    await Effect.runPromise(upload({ host, port, localPath: join(local, "a.bin"), remotePath: "a.bin" }))
    expect(sha256File(join(root, "a.bin"))).toBe(sha256File(join(local, "a.bin")))

    writeFileSync(join(local, "b.bin"), randomFile(MiB))
    expect(await uploadFails(port, join(local, "b.bin"), "dir/b.bin")).toBe(
      `the server answered with error -1: "dir/b.bin" needs ${MiB} more bytes, past this server's quota of ${3 * MiB} bytes for its root (${2.5 * MiB} bytes held)`
    )
    expect(existsSync(join(root, "dir", "b.bin.iip-part"))).toBe(false)

    // What fits still goes through: the quota is not a ban.
    writeFileSync(join(local, "c.bin"), randomFile(MiB / 4))
    await Effect.runPromise(upload({ host, port, localPath: join(local, "c.bin"), remotePath: "c.bin" }))
    expect(statSync(join(root, "c.bin")).size).toBe(MiB / 4)
  })

  it("an upload refused for the quota midway is removed, and our client, run again once there is room, starts at 0 and verifies", async () => {
    const { local, root, start } = await setUp({ quotaBytes: 3 * MiB })
    writeFileSync(join(root, "there.bin"), randomFile(1.5 * MiB))
    const port = await start()
    writeFileSync(join(local, "b.bin"), randomFile(2 * MiB))
    // Its first MiB fits, its second does not: it cannot finish, and its MiB is given back.
    expect(await uploadFails(port, join(local, "b.bin"), "b.bin")).toBe(
      `the server answered with error -1: "b.bin" needs ${MiB} more bytes, past this server's quota of ${3 * MiB} bytes for its root (${2.5 * MiB} bytes held): ` +
        `its unfinished upload (${MiB} bytes) was removed so that uploads which fit can finish; start again at 0 once there is room`
    )
    expect(readdirSync(root)).toStrictEqual(["there.bin"])
    // Room made (there.bin replaced by a smaller file), the same upload run again starts over.
    writeFileSync(join(local, "there.bin"), randomFile(MiB / 4))
    await Effect.runPromise(upload({ host, port, localPath: join(local, "there.bin"), remotePath: "there.bin" }))
    const again = await Effect.runPromise(upload({ host, port, localPath: join(local, "b.bin"), remotePath: "b.bin" }))
    expect(again).toMatchObject({ bytes: 2 * MiB, resumedFrom: 0, verified: true })
    expect(sha256File(join(root, "b.bin"))).toBe(sha256File(join(local, "b.bin")))
  })

  it("a refused upload leaves no directory behind: its missing directories are removed again", async () => {
    const { root, start } = await setUp({ quotaBytes: 10 })
    writeFileSync(join(root, "there.txt"), "12345678")
    const port = await start()
    const client = await RawClient.connect(port, cleanup)
    await client.newChannel()
    const refusedWith = async (path: string, offset: number, content: string) => {
      client.write(frame(1, FilePath.upload, 1, encodeUploadRequest(taskId, path, offset, false, Buffer.from(content))))
      return (await client.next(10_000)).data.toString()
    }
    expect(await refusedWith("a/b/c/x.bin", 7, "abc")).toMatch(/needs 10 more bytes, past this server's quota/)
    expect(await refusedWith("q/r/s/x.bin", 0, "abcdefghijklmnop")).toMatch(/needs 16 more bytes, past this server's quota/)
    expect(await refusedWith("a/b/c/x.bin", 0, "")).toBe(`{"TaskId":1,"DoneBytes":0}`)
    expect(await refusedWith("a/b/d/y.bin", 2, "abc")).toMatch(/needs 5 more bytes, past this server's quota/)
    expect(readdirSync(root, { recursive: true }).sort()).toStrictEqual(["a", "a/b", "a/b/c", "a/b/c/x.bin.iip-part", "there.txt"])
  })

  it("a refused upload does not remove a new directory from under another upload going into it", async () => {
    const { root, start } = await setUp()
    writeFileSync(join(root, "s.txt"), "s")
    // Channel 1: refused (nothing to continue at 5) after creating d<i>. Channel 2: a fresh upload into d<i>.
    const { answers } = await racedPairs(
      await start(),
      100,
      (i) => encodeUploadRequest(taskId, `d${i}/x.bin`, 5, false, Buffer.from("abc")),
      (i) => encodeUploadRequest(taskId, `d${i}/y.bin`, 0, false, Buffer.from("abc"))
    )
    expect(answers[2].filter((text) => !text.startsWith(`{"Size"`) && text !== `{"TaskId":1,"DoneBytes":3}`)).toStrictEqual([])
    for (let i = 0; i < 100; i++) expect(readFileSync(join(root, `d${i}/y.bin.iip-part`), "utf8")).toBe("abc")
  })

  it("files and directories count against maxEntries as bytes count against the quota: empty files cannot exhaust the inodes", async () => {
    const { root, start } = await setUp({ maxEntries: 6 })
    mkdirSync(join(root, "there"))
    writeFileSync(join(root, "there", "f.txt"), "")
    const port = await start()
    const client = await RawClient.connect(port, cleanup)
    await client.newChannel()
    const send = async (path: string, completed: boolean) => {
      client.write(frame(1, FilePath.upload, 1, encodeUploadRequest(taskId, path, 0, completed, Buffer.alloc(0))))
      return (await client.next(10_000)).data.toString()
    }
    for (const name of ["e0", "e1", "e2"]) expect(await send(name, true)).toBe(`{"TaskId":1,"DoneBytes":0}`)
    expect(await send("e3", false)).toBe(`{"TaskId":1,"DoneBytes":0}`)
    expect(await send("e4", false)).toMatch(/"e4\\" needs a new file, past this server's limit of 6 files and directories under its root \(6 held\)"}$/)
    expect(await send("d/e4", false)).toMatch(/"d\/e4\\" needs a new directory, past this server's limit of 6 files and directories under its root \(6 held\)"}$/)
    // An unfinished upload taking its name takes no more; replacing a file needs one while its copy grows next to it.
    expect(await send("e3", true)).toBe(`{"TaskId":1,"DoneBytes":0}`)
    expect(await send("e0", true)).toMatch(/"e0\\" needs a new file, past this server's limit of 6/)
    expect(readdirSync(root, { recursive: true }).sort()).toStrictEqual(["e0", "e1", "e2", "e3", "there", "there/f.txt"])
    // A restarted server counts what is there.
    const client2 = await RawClient.connect(await listen(root, { maxEntries: 8 }), cleanup)
    await client2.newChannel()
    client2.write(frame(1, FilePath.upload, 1, encodeUploadRequest(taskId, "a/b/c/x", 0, false, Buffer.alloc(0))))
    expect((await client2.next(10_000)).data.toString()).toMatch(/"a\/b\/c\/x\\" needs a new directory, past this server's limit of 8 files and directories under its root \(8 held\)"}$/)
    // The two directories it made were removed and given back: a directory and a file fit.
    client2.write(frame(1, FilePath.upload, 1, encodeUploadRequest(taskId, "a/x", 0, false, Buffer.alloc(0))))
    expect((await client2.next(10_000)).data.toString()).toBe(`{"TaskId":1,"DoneBytes":0}`)
    expect(readdirSync(root, { recursive: true }).sort()).toStrictEqual(["a", "a/x.iip-part", "e0", "e1", "e2", "e3", "there", "there/f.txt"])
  })

  it("unfinished uploads are held to maxUnfinishedUploads: one past it is refused, the others go on, a finished one makes room", async () => {
    const { root, local, start } = await setUp({ maxUnfinishedUploads: 3 })
    const port = await start()
    const client = await RawClient.connect(port, cleanup)
    await client.newChannel()
    const send = async (path: string, at: number, completed: boolean, content = "x") => {
      client.write(frame(1, FilePath.upload, 1, encodeUploadRequest(taskId, path, at, completed, Buffer.from(content))))
      return (await client.next(10_000)).data.toString()
    }
    for (const name of ["u0", "u1", "u2"]) expect(await send(name, 0, false)).toBe(`{"TaskId":1,"DoneBytes":1}`)
    const refused = /"u3\\" would be a new unfinished upload, past this server's limit of 3 unfinished uploads \(3 held\): finish one, or let abandoned ones expire"}$/
    expect(await send("u3", 0, false)).toMatch(refused)
    expect(existsSync(join(root, "u3.iip-part"))).toBe(false)
    // The others go on, and a file whole in one request is never unfinished: it needs no place.
    expect(await send("u1", 1, false)).toBe(`{"TaskId":1,"DoneBytes":1}`)
    expect(await send("whole", 0, true)).toBe(`{"TaskId":1,"DoneBytes":1}`)
    // The upload client's uploads start unfinished (its Completed request follows the content): refused the same way.
    writeFileSync(join(local, "big.bin"), randomFile(3 * MiB))
    expect(await uploadFails(port, join(local, "big.bin"), "big.bin")).toMatch(/"big.bin" would be a new unfinished upload, past this server's limit of 3/)
    // u0 finished: its place is free.
    expect(await send("u0", 1, true)).toBe(`{"TaskId":1,"DoneBytes":1}`)
    expect(await send("u3", 0, false)).toBe(`{"TaskId":1,"DoneBytes":1}`)
    expect(readdirSync(root).sort()).toStrictEqual(["u0", "u1.iip-part", "u2.iip-part", "u3.iip-part", "whole"])
    // A restarted server counts the unfinished uploads it finds.
    const again = await RawClient.connect(await listen(root, { maxUnfinishedUploads: 3 }), cleanup)
    await again.newChannel()
    again.write(frame(1, FilePath.upload, 1, encodeUploadRequest(taskId, "u4", 0, false, Buffer.from("x"))))
    expect((await again.next(10_000)).data.toString()).toMatch(/"u4\\" would be a new unfinished upload, past this server's limit of 3 unfinished uploads \(3 held\)/)
  })

  it("a file sent whole whose rename fails (a directory took its name meanwhile) leaves no unfinished upload and takes no place", async () => {
    // 60 files d<i>/x of 3 bytes stay: 180 of the 400 bytes allowed.
    const { root, start } = await setUp({ maxUnfinishedUploads: 2, quotaBytes: 400 })
    // Channel 1: d<i> whole in one request; channel 2: d<i>/x, which makes the directory d<i>
    // while the first is being written: its rename then fails.
    const { client, answers } = await racedPairs(
      await start(),
      60,
      (i) => encodeUploadRequest(taskId, `d${i}`, 0, true, Buffer.from("abc")),
      (i) => encodeUploadRequest(taskId, `d${i}/x`, 0, true, Buffer.from("abc"))
    )
    const failed = answers[1].filter((text) => text.includes("EISDIR") || text.includes("is a directory"))
    expect(failed.length).toBeGreaterThan(0)
    // Nothing unfinished is left of them: no partial on disk, no place taken.
    expect(readdirSync(root).filter((name) => name.endsWith(".iip-part"))).toStrictEqual([])
    const send = async (path: string) => {
      client.write(frame(1, FilePath.upload, 1, encodeUploadRequest(taskId, path, 0, false, Buffer.from("x"))))
      return (await client.next(10_000)).data.toString()
    }
    expect(await send("u0")).toBe(`{"TaskId":1,"DoneBytes":1}`)
    expect(await send("u1")).toBe(`{"TaskId":1,"DoneBytes":1}`)
    // Their bytes went back too: 180 + 2 held, 200 more fit.
    client.write(frame(1, FilePath.upload, 1, encodeUploadRequest(taskId, "last", 0, true, Buffer.alloc(200))))
    expect((await client.next(10_000)).data.toString()).toBe(`{"TaskId":1,"DoneBytes":200}`)
  })

  it("re-uploading a file counts only the bytes it adds, and a restarted server measures the root again", async () => {
    const { local, root } = await setUp()
    writeFileSync(join(local, "a.bin"), randomFile(MiB))
    const first = await listen(root, { quotaBytes: 2 * MiB + 10 })
    await Effect.runPromise(upload({ host, port: first, localPath: join(local, "a.bin"), remotePath: "a.bin" }))
    // A second copy of a.bin grows next to the first until it replaces it: 2 MiB at the peak, within the quota.
    await Effect.runPromise(upload({ host, port: first, localPath: join(local, "a.bin"), remotePath: "a.bin" }))
    await Effect.runPromise(upload({ host, port: first, localPath: join(local, "a.bin"), remotePath: "a.bin" }))
    const second = await listen(root, { quotaBytes: MiB + 10 })
    writeFileSync(join(local, "b.bin"), randomFile(20))
    expect(await uploadFails(second, join(local, "b.bin"), "b.bin")).toMatch(/past this server's quota of 1048586 bytes for its root \(1048576 bytes held\)$/)
  })
})

describe("checksums at once", () => {
  it("hundreds of /file_checksum requests of a large file on one connection hold a few MiB of buffers, not one MiB each", async () => {
    const { root, start } = await setUp()
    writeFileSync(join(root, "big.bin"), Buffer.alloc(16 * MiB, 7))
    const port = await start()
    const client = await RawClient.connect(port, cleanup)
    const requests = 200
    for (let channel = 1; channel <= requests; channel++) await client.newChannel(10_000)
    const before = process.memoryUsage().arrayBuffers
    let peak = before
    const sampler = setInterval(() => (peak = Math.max(peak, process.memoryUsage().arrayBuffers)), 2)
    const ask = encodeChecksumRequest({ filePath: "big.bin", upload: false, length: undefined })
    for (let channel = 1; channel <= requests; channel++) client.write(frame(1, FilePath.checksum, channel, ask))
    const answers = new Set<string>()
    for (let i = 0; i < requests; i++) answers.add((await client.next(120_000)).data.toString())
    clearInterval(sampler)
    expect([...answers]).toStrictEqual([`{"Size":${16 * MiB},"Length":${16 * MiB},"Sha256":"${sha256(Buffer.alloc(16 * MiB, 7))}"}`])
    expect(peak - before).toBeLessThan(16 * MiB)
  }, 300_000)

  it("a small file's checksum asked after 8 of a large file waits a few 1 MiB reads, not for whole hashes of the large one", async () => {
    const { root, start } = await setUp()
    writeFileSync(join(root, "big.bin"), Buffer.alloc(32 * MiB, 7))
    writeFileSync(join(root, "small.txt"), "small")
    const port = await start()
    const client = await RawClient.connect(port, cleanup)
    for (let channel = 1; channel <= 9; channel++) await client.newChannel(10_000)
    const big = encodeChecksumRequest({ filePath: "big.bin", upload: false, length: undefined })
    for (let channel = 1; channel <= 8; channel++) client.write(frame(1, FilePath.checksum, channel, big))
    client.write(frame(1, FilePath.checksum, 9, encodeChecksumRequest({ filePath: "small.txt", upload: false, length: undefined })))
    const order: Array<number> = []
    for (let i = 0; i < 9; i++) order.push((await client.next(120_000)).channelId)
    // Each large hash takes 32 reads; the small one, asked last, needs one.
    expect(order[0]).toBe(9)
  }, 300_000)
})

describe("partial files the server did not make", () => {
  it("an unfinished upload hard-linked to a file outside the root is neither written through nor hashed", async () => {
    const { local, root, outside, start } = await setUp()
    const port = await start()
    const victim = join(outside, "victim.txt")
    writeFileSync(victim, "precious content outside the root\n")
    linkSync(victim, join(root, "x.bin.iip-part"))
    writeFileSync(join(local, "x.bin"), randomFile(MiB + 5))
    expect(await uploadFails(port, join(local, "x.bin"), "x.bin")).toBe(
      `the server answered with error -1: path refused: "x.bin" has an unfinished upload (.iip-part) with other links to it`
    )
    // The write path on its own, as a client that skips the checksum (a Go upload_client) reaches it.
    for (const start of [0, 34]) {
      const answer = await Effect.runPromise(
        Effect.scoped(Effect.gen(function*() {
          const remote = yield* connect({ host, port }, "x.bin")
          return yield* ask(remote, FilePath.upload, encodeUploadRequest(taskId, "x.bin", start, false, Buffer.from("overwritten")))
        }))
      )
      expect(answer.toString()).toBe(`{"code":-1,"message":"handler fail:path refused: \\"x.bin\\" has an unfinished upload (.iip-part) with other links to it"}`)
    }
    expect(readFileSync(victim, "utf8")).toBe("precious content outside the root\n")
  })

  it("an upload may not be named like an unfinished one (<name>.iip-part): it would replace another's partial file outside its turn", async () => {
    const { root, start } = await setUp()
    const port = await start()
    const client = await RawClient.connect(port, cleanup)
    await client.newChannel()
    const send = async (path: string, offset: number, completed: boolean, content: string) => {
      client.write(frame(1, FilePath.upload, 1, encodeUploadRequest(taskId, path, offset, completed, Buffer.from(content))))
      return (await client.next(10_000)).data.toString()
    }
    expect(await send("x.bin", 0, false, "first half, ")).toBe(`{"TaskId":1,"DoneBytes":12}`)
    expect(await send("x.bin.iip-part", 0, true, "replaced")).toBe(
      `{"code":-1,"message":"handler fail:path refused: \\"x.bin.iip-part\\" ends in .iip-part, the name the server gives an unfinished upload"}`
    )
    expect(readFileSync(join(root, "x.bin.iip-part"), "utf8")).toBe("first half, ")
    expect(await send("x.bin", 12, true, "second half")).toBe(`{"TaskId":1,"DoneBytes":11}`)
    expect(readdirSync(root)).toStrictEqual(["x.bin"])
  })

  it("an unfinished upload that is a symlink or a FIFO is refused as well", async () => {
    const { local, root, outside, start } = await setUp()
    const port = await start()
    writeFileSync(join(outside, "victim.txt"), "precious")
    symlinkSync(join(outside, "victim.txt"), join(root, "s.bin.iip-part"))
    execFileSync("mkfifo", [join(root, "f.bin.iip-part")])
    writeFileSync(join(local, "x.bin"), randomFile(100))
    expect(await uploadFails(port, join(local, "x.bin"), "s.bin")).toMatch(/unfinished upload \(\.iip-part\) that is not a regular file/)
    expect(await uploadFails(port, join(local, "x.bin"), "f.bin")).toMatch(/unfinished upload \(\.iip-part\) that is not a regular file/)
    expect(readFileSync(join(outside, "victim.txt"), "utf8")).toBe("precious")
  })

  it("the download client does not write through a hard-linked or symlinked <local>.iip-part", async () => {
    const { local, root, outside, start } = await setUp()
    const port = await start()
    writeFileSync(join(root, "f.bin"), randomFile(50_000))
    const victim = join(outside, "victim.txt")
    writeFileSync(victim, "precious")
    linkSync(victim, join(local, "f.bin.iip-part"))
    const linked = await Effect.runPromise(Effect.flip(download({ host, port, remotePath: "f.bin", localPath: join(local, "f.bin") })))
    expect(linked.message).toBe(`${join(local, "f.bin.iip-part")} has other links to it (a hard link): remove it and run again`)
    symlinkSync(victim, join(local, "g.bin.iip-part"))
    const symlinked = await Effect.runPromise(Effect.flip(download({ host, port, remotePath: "f.bin", localPath: join(local, "g.bin") })))
    expect(symlinked.message).toBe(`cannot open ${join(local, "g.bin.iip-part")}: ELOOP`)
    expect(readFileSync(victim, "utf8")).toBe("precious")
    expect(existsSync(join(local, "f.bin"))).toBe(false)
  })
})

describe("iip-mesh file-server --max-file-size --quota --max-entries --partial-max-age --partial-idle --max-unfinished", () => {
  it("takes sizes like 1MiB and refuses what passes them", async () => {
    const root = tempDir(cleanup, "root")
    const local = tempDir(cleanup, "local")
    const { port } = await startFileServer(cleanup, root, ["--max-file-size", "1MiB", "--quota", "1536KiB", "--max-entries", "3", "--partial-max-age", "90m", "--partial-idle", "5m"])
    writeFileSync(join(local, "big.bin"), randomFile(MiB + 1))
    const tooBig = await runCli(cleanup, ["upload", `${host}:${port}`, join(local, "big.bin"), "big.bin"])
    expect(tooBig.code).toBe(1)
    expect(tooBig.stderr).toBe(
      `iip-mesh upload: the server answered with error -1: "big.bin" would grow to ${MiB + 1} bytes, past this server's limit of ${MiB} bytes per file: ` +
        `its unfinished upload (${MiB} bytes) was removed (it cannot finish here)\n`
    )
    // big.bin's 1 MiB was given back: small.bin and a file of the largest size fill the quota exactly.
    writeFileSync(join(local, "small.bin"), randomFile(MiB / 2))
    const fits = await runCli(cleanup, ["upload", `${host}:${port}`, join(local, "small.bin"), "small.bin"])
    expect(fits.code, fits.stderr).toBe(0)
    writeFileSync(join(local, "largest.bin"), randomFile(MiB))
    const largest = await runCli(cleanup, ["upload", `${host}:${port}`, join(local, "largest.bin"), "largest.bin"])
    expect(largest.code, largest.stderr).toBe(0)
    // small.bin and largest.bin are 2 of the 3 entries: a new directory and its file are 2 more.
    expect(await uploadFails(port, join(local, "small.bin"), "d/small.bin")).toBe(
      `the server answered with error -1: "d/small.bin" needs a new file, past this server's limit of 3 files and directories under its root (3 held)`
    )
  }, holdsStarts(4, 10_000))

  it("--max-unfinished bounds the unfinished uploads: the upload past it is refused with the server's reason", async () => {
    const root = tempDir(cleanup, "root")
    const local = tempDir(cleanup, "local")
    const { port } = await startFileServer(cleanup, root, ["--max-unfinished", "1"])
    const client = await RawClient.connect(port, cleanup)
    await client.newChannel()
    client.write(frame(1, FilePath.upload, 1, encodeUploadRequest(taskId, "paused.bin", 0, false, Buffer.from("x"))))
    expect((await client.next(10_000)).data.toString()).toBe(`{"TaskId":1,"DoneBytes":1}`)
    writeFileSync(join(local, "small.bin"), randomFile(1000))
    const refused = await runCli(cleanup, ["upload", `${host}:${port}`, join(local, "small.bin"), "small.bin"])
    expect(refused.code).toBe(1)
    expect(refused.stderr).toBe(
      `iip-mesh upload: the server answered with error -1: "small.bin" would be a new unfinished upload, past this server's limit of 1 unfinished uploads (1 held): finish one, or let abandoned ones expire\n`
    )
  }, holdsStarts(2, 10_000))

  it("a bad size is one line on stderr and exit code 1", async () => {
    const root = tempDir(cleanup, "root")
    const run = await runCli(cleanup, ["file-server", "--root", root, "--listen", "127.0.0.1:0", "--quota", "lots"])
    expect(run.code).toBe(1)
    expect(run.stderr).toBe(`iip-mesh file-server: expected a size like 4GiB, 512MiB or a number of bytes, got "lots"\n`)
  }, holdsStarts(1, 10_000))

  it("a count out of range is one line on stderr naming its flag, and exit code 1", async () => {
    const root = tempDir(cleanup, "root")
    const run = await runCli(cleanup, ["file-server", "--root", root, "--listen", "127.0.0.1:0", "--max-entries", "0"])
    expect(run.code).toBe(1)
    expect(run.stderr).toBe(`iip-mesh file-server: --max-entries must be a whole number from 1 to ${Number.MAX_SAFE_INTEGER}, not 0\n`)
  }, holdsStarts(1, 10_000))

  it("--max-unfinished out of range names its flag too", async () => {
    const root = tempDir(cleanup, "root")
    const run = await runCli(cleanup, ["file-server", "--root", root, "--listen", "127.0.0.1:0", "--max-unfinished", "-1"])
    expect(run.code).toBe(1)
    expect(run.stderr).toBe(`iip-mesh file-server: --max-unfinished must be a whole number from 0 to ${Number.MAX_SAFE_INTEGER}, not -1\n`)
  }, holdsStarts(1, 10_000))
})

