// Hostile input to the transfer clients, from the side the other tests do not take (no input may
// crash, desync or exhaust the process): a progress callback that throws, a FIFO to upload, and a
// hostile server (more bytes than it declared, answers over the protocol's size, error bodies made
// to drive a terminal). Real files in temp directories, real TCP on 127.0.0.1.
import * as Effect from "effect/Effect"
import { execFileSync } from "node:child_process"
import { readdirSync, statSync, writeFileSync } from "node:fs"
import { join } from "node:path"
import { afterEach, describe, expect, it } from "vitest"
import { download } from "../../src/files/download.ts"
import { openRoot, serveFiles } from "../../src/files/server.ts"
import { TransferFailed } from "../../src/files/transfer.ts"
import { upload } from "../../src/files/upload.ts"
import { encodeChecksumAnswer } from "../../src/files/wire.ts"
import { IipServer } from "../../src/iip/server.ts"
import { Cleanup } from "../support/iipRaw.ts"
import { randomFile, sha256, tempDir } from "./support.ts"

const cleanup = new Cleanup()
afterEach(() => cleanup.run())

const host = "127.0.0.1"
const KiB = 1024

/** A plain IIP server whose answers the test writes by hand: a hostile file server. */
const handMadeServer = async (routes: Record<string, (data: Buffer) => Buffer | string>) => {
  const server = new IipServer({ host, port: 0, mesh: false, log: () => {} })
  for (const [path, answer] of Object.entries(routes)) server.handle(path, (request) => answer(request.data))
  await server.listen()
  cleanup.add(() => server.close())
  return server.address.port
}

const fileServer = async (root: string) => {
  const server = new IipServer({ host, port: 0, mesh: false, log: () => {} })
  serveFiles(server, await openRoot(root))
  await server.listen()
  cleanup.add(() => server.close())
  return server.address.port
}

describe("a progress callback that throws", () => {
  const meterBroke = () => {
    throw new Error("the meter broke")
  }

  it("ends the download as a TransferFailed, the partial file kept for a resume and the server still serving", async () => {
    const root = tempDir(cleanup, "root")
    const local = tempDir(cleanup, "local")
    const content = randomFile(100 * KiB)
    writeFileSync(join(root, "f.bin"), content)
    const port = await fileServer(root)
    let calls = 0
    const onProgress = () => {
      if (++calls === 3) meterBroke()
    }
    const failed = await Effect.runPromise(Effect.flip(download({ host, port, remotePath: "f.bin", localPath: join(local, "f.bin"), onProgress })))
    expect(failed).toBeInstanceOf(TransferFailed)
    expect(failed.message).toMatch(/^the progress callback threw: the meter broke; .*f\.bin\.iip-part keeps what arrived: run again to resume$/)
    expect(statSync(join(local, "f.bin.iip-part")).size).toBe(2 * 10_236)
    const resumed = await Effect.runPromise(download({ host, port, remotePath: "f.bin", localPath: join(local, "f.bin") }))
    expect(resumed).toMatchObject({ resumedFrom: 2 * 10_236, sha256: sha256(content), verified: true })
  })

  it("ends the upload as a TransferFailed before the next request", async () => {
    const root = tempDir(cleanup, "root")
    const local = tempDir(cleanup, "local")
    writeFileSync(join(local, "f.bin"), randomFile(3 * 1024 * KiB))
    const port = await fileServer(root)
    const failed = await Effect.runPromise(Effect.flip(upload({ host, port, localPath: join(local, "f.bin"), remotePath: "f.bin", onProgress: meterBroke })))
    expect(failed).toBeInstanceOf(TransferFailed)
    expect(failed.message).toBe("the progress callback threw: the meter broke")
    expect(readdirSync(root)).toStrictEqual([])
  })
})

const downloadAnswer = (flag: number, bytes: number): Buffer => {
  const answer = Buffer.alloc(4 + bytes, 0x61)
  answer.writeUInt32BE(flag, 0)
  return answer
}

describe("a local path that is not a regular file", () => {
  it("a FIFO given to upload is refused at once instead of blocking the open for a writer", async () => {
    const root = tempDir(cleanup, "root")
    const local = tempDir(cleanup, "local")
    execFileSync("mkfifo", [join(local, "fifo")])
    const port = await fileServer(root)
    const failed = await Effect.runPromise(Effect.flip(upload({ host, port, localPath: join(local, "fifo"), remotePath: "f.bin" })).pipe(Effect.timeout(5000)))
    expect(failed.message).toBe(`${join(local, "fifo")} is not a regular file`)
  })
})

describe("a hostile server", () => {
  it("that declared a size and sends more is stopped before the excess is written", async () => {
    const local = tempDir(cleanup, "local")
    let served = 0
    const port = await handMadeServer({
      "/file_checksum": () => encodeChecksumAnswer({ size: 30_000, length: 0, sha256: sha256(Buffer.alloc(0)) }),
      // Whole chunks, flag 0 forever: a disk filler, had the client no bound.
      "/download_file": () => (served++, downloadAnswer(0, 10_236))
    })
    const failed = await Effect.runPromise(Effect.flip(download({ host, port, remotePath: "f.bin", localPath: join(local, "f.bin"), window: 4 })))
    expect(failed.message).toBe(
      `the server sent more than the 30000 bytes it declared for "f.bin"; ${join(local, "f.bin.iip-part")} keeps what arrived: run again to resume`
    )
    expect(statSync(join(local, "f.bin.iip-part")).size).toBe(2 * 10_236)
    expect(served).toBeLessThanOrEqual(3 + 4)
  })

  it("that sends answers longer than the protocol's 10,236 bytes (a Go server's peer) is stopped at the first", async () => {
    const local = tempDir(cleanup, "local")
    let served = 0
    const port = await handMadeServer({
      "/file_checksum": () => `{"code":102,"message":"handle error"}`,
      "/download_file": () => (served++, downloadAnswer(0, 4 * 1024 * KiB))
    })
    const failed = await Effect.runPromise(Effect.flip(download({ host, port, remotePath: "f.bin", localPath: join(local, "f.bin") })))
    expect(failed.message).toBe(
      `the server sent a download answer of ${4 + 4 * 1024 * KiB} bytes, more than a flag and 10236 bytes; ${join(local, "f.bin.iip-part")} keeps what arrived: run again to resume`
    )
    expect(readdirSync(local)).toStrictEqual([])
    expect(served).toBe(1)
  })

  it("cannot drive the terminal with its error message: controls, DEL, C1, separators and bidi controls come out escaped", async () => {
    const local = tempDir(cleanup, "local")
    const port = await handMadeServer({
      "/file_checksum": () =>
        `{"code":-1,"message":"handler fail:\\u001b]0;owned\\u0007\\r\\u001b[2K\\"f\\" is fine\\n\\u007f\\u009b\\u2028\\u202e${"x".repeat(2000)}"}`
    })
    const failed = await Effect.runPromise(Effect.flip(download({ host, port, remotePath: "f.bin", localPath: join(local, "f.bin") })))
    expect(failed.message).toBe(
      `the server answered with error -1: \\u001b]0;owned\\u0007\\u000d\\u001b[2K"f" is fine\\u000a\\u007f\\u009b\\u2028\\u202e${"x".repeat(969)}...(1031 more)`
    )
    expect(readdirSync(local)).toStrictEqual([])
  })
})
