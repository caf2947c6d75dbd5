// Whole transfers against our file server in this process, over real TCP: multi-MiB downloads and
// uploads end byte-identical and verified, partial files resume from where they stopped (and are
// started over when they do not match), a remote file that changes underneath (rewritten or
// replaced) is caught by the checksum, and the server refuses uploads that would leave a gap or
// grow past its limit.
import * as Effect from "effect/Effect"
import { existsSync, readFileSync, renameSync, rmSync, truncateSync, writeFileSync } from "node:fs"
import { join } from "node:path"
import { afterEach, describe, expect, it } from "vitest"
import { download } from "../../src/files/download.ts"
import { openRoot, serveFiles } from "../../src/files/server.ts"
import type { Progress } from "../../src/files/transfer.ts"
import { upload } from "../../src/files/upload.ts"
import { IipServer } from "../../src/iip/server.ts"
import { Cleanup } from "../support/iipRaw.ts"
import { randomFile, sha256, sha256File, tempDir } from "./support.ts"

const cleanup = new Cleanup()
afterEach(() => cleanup.run())

const MiB = 1024 * 1024

const setUp = async (maxFileBytes?: number) => {
  const root = tempDir(cleanup, "root")
  const local = tempDir(cleanup, "local")
  const server = new IipServer({ host: "127.0.0.1", port: 0, mesh: false, log: () => {} })
  serveFiles(server, await openRoot(root), maxFileBytes === undefined ? {} : { maxFileBytes })
  await server.listen()
  cleanup.add(() => server.close())
  return { root, local, host: "127.0.0.1", port: server.address.port }
}

describe("download", () => {
  it("a 6 MiB file arrives byte-identical, verified by the server's SHA-256, with progress up to the total", async () => {
    const { root, local, host, port } = await setUp()
    const content = randomFile(6 * MiB + 123)
    writeFileSync(join(root, "big.bin"), content)
    const seen: Array<Progress> = []
    const result = await Effect.runPromise(
      download({ host, port, remotePath: "big.bin", localPath: join(local, "big.bin"), onProgress: (p) => seen.push(p) })
    )
    expect(sha256File(join(local, "big.bin"))).toBe(sha256(content))
    expect(result).toMatchObject({ bytes: content.length, resumedFrom: 0, sha256: sha256(content), verified: true })
    expect(existsSync(join(local, "big.bin.iip-part"))).toBe(false)
    expect(seen.every((p, i) => p.total === content.length && (i === 0 || p.done > seen[i - 1]!.done))).toBe(true)
    expect(seen.at(-1)!.done).toBe(content.length)
  })

  it("resumes from the partial file's size when its bytes are the start of the remote file", async () => {
    const { root, local, host, port } = await setUp()
    const content = randomFile(3 * MiB)
    writeFileSync(join(root, "f.bin"), content)
    writeFileSync(join(local, "f.bin.iip-part"), content.subarray(0, MiB + 7))
    const result = await Effect.runPromise(download({ host, port, remotePath: "f.bin", localPath: join(local, "f.bin") }))
    expect(result.resumedFrom).toBe(MiB + 7)
    expect(result.verified).toBe(true)
    expect(readFileSync(join(local, "f.bin")).equals(content)).toBe(true)
  })

  it("starts over when the partial file is not the start of the remote file", async () => {
    const { root, local, host, port } = await setUp()
    const content = randomFile(2 * MiB)
    writeFileSync(join(root, "f.bin"), content)
    writeFileSync(join(local, "f.bin.iip-part"), randomFile(MiB))
    const result = await Effect.runPromise(download({ host, port, remotePath: "f.bin", localPath: join(local, "f.bin") }))
    expect(result.resumedFrom).toBe(0)
    expect(readFileSync(join(local, "f.bin")).equals(content)).toBe(true)
  })

  it("a remote file changed under a running download fails the checksum and leaves no partial file", async () => {
    const { root, local, host, port } = await setUp()
    const content = randomFile(2 * MiB)
    writeFileSync(join(root, "f.bin"), content)
    let changed = false
    const error = await Effect.runPromise(
      Effect.flip(download({
        host,
        port,
        remotePath: "f.bin",
        localPath: join(local, "f.bin"),
        onProgress: (p) => {
          // Rewrite bytes the download already has: only the final comparison can notice.
          if (!changed && p.done > MiB) writeFileSync(join(root, "f.bin"), Buffer.concat([Buffer.from("changed"), content.subarray(7)]))
          changed ||= p.done > MiB
        }
      }))
    )
    expect(error._tag).toBe("ChecksumMismatch")
    expect(error.message).toMatch(/^checksum mismatch: the remote file is 2097152 bytes with sha256 [0-9a-f]{64}, the download 2097152 bytes/)
    expect(existsSync(join(local, "f.bin"))).toBe(false)
    expect(existsSync(join(local, "f.bin.iip-part"))).toBe(false)
  })

  it("a remote file replaced (renamed over, not grown) under a running download fails, and the next run gets the new file whole", async () => {
    const { root, local, host, port } = await setUp()
    for (const [newSize, failure] of [
      [MiB, /^checksum mismatch: the remote file is 1048576 bytes with sha256 [0-9a-f]{64}, the download 1048576 bytes/],
      [MiB / 4, /^checksum mismatch: the remote file is 262144 bytes with sha256 [0-9a-f]{64}, the download \d+ bytes/],
      [1.5 * MiB, /^the server sent more than the 1048576 bytes it declared for "f.bin"; .*f\.bin\.iip-part keeps what arrived: run again to resume$/]
    ] as const) {
      writeFileSync(join(root, "f.bin"), randomFile(MiB))
      const replacement = randomFile(newSize)
      let replaced = false
      const error = await Effect.runPromise(Effect.flip(download({
        host,
        port,
        remotePath: "f.bin",
        localPath: join(local, "f.bin"),
        onProgress: (p) => {
          if (replaced || p.done < MiB / 2) return
          // A new file under the name, as an editor or a deploy saves one: the old one's descriptor is not in use between requests.
          writeFileSync(join(root, "f.bin.new"), replacement)
          renameSync(join(root, "f.bin.new"), join(root, "f.bin"))
          replaced = true
        }
      })))
      expect(error.message).toMatch(failure)
      expect(existsSync(join(local, "f.bin"))).toBe(false)
      const again = await Effect.runPromise(download({ host, port, remotePath: "f.bin", localPath: join(local, "f.bin") }))
      expect({ bytes: again.bytes, verified: again.verified, sha256: again.sha256 }).toStrictEqual({ bytes: newSize, verified: true, sha256: sha256(replacement) })
      expect(readFileSync(join(local, "f.bin")).equals(replacement)).toBe(true)
      rmSync(join(local, "f.bin"))
    }
  })

  it("a missing remote file is one clear error and leaves nothing behind", async () => {
    const { local, host, port } = await setUp()
    const error = await Effect.runPromise(Effect.flip(download({ host, port, remotePath: "nope.bin", localPath: join(local, "nope.bin") })))
    expect(error.message).toBe(`the server answered with error -1: path refused: "nope.bin" does not exist`)
    expect(existsSync(join(local, "nope.bin.iip-part"))).toBe(false)
  })
})

describe("upload", () => {
  it("a 6 MiB file arrives byte-identical in 1 MiB requests, verified before it takes its name", async () => {
    const { root, local, host, port } = await setUp()
    const content = randomFile(6 * MiB + 5)
    writeFileSync(join(local, "big.bin"), content)
    const seen: Array<number> = []
    const result = await Effect.runPromise(
      upload({ host, port, localPath: join(local, "big.bin"), remotePath: "in/big.bin", onProgress: (p) => seen.push(p.done) })
    )
    expect(sha256File(join(root, "in", "big.bin"))).toBe(sha256(content))
    expect(result).toMatchObject({ bytes: content.length, resumedFrom: 0, sha256: sha256(content), verified: true })
    expect(seen).toStrictEqual([0, 1, 2, 3, 4, 5, 6].map((n) => n * MiB).concat([content.length, content.length]))
    expect(existsSync(join(root, "in", "big.bin.iip-part"))).toBe(false)
  })

  it("resumes the server's unfinished upload when it matches the local file, and starts over when it does not", async () => {
    const { root, local, host, port } = await setUp()
    const content = randomFile(3 * MiB)
    writeFileSync(join(local, "f.bin"), content)
    writeFileSync(join(root, "f.bin.iip-part"), content.subarray(0, 2 * MiB + 1))
    const resumed = await Effect.runPromise(upload({ host, port, localPath: join(local, "f.bin"), remotePath: "f.bin" }))
    expect(resumed.resumedFrom).toBe(2 * MiB + 1)
    expect(readFileSync(join(root, "f.bin")).equals(content)).toBe(true)

    writeFileSync(join(root, "g.bin.iip-part"), randomFile(MiB))
    const fresh = await Effect.runPromise(upload({ host, port, localPath: join(local, "f.bin"), remotePath: "g.bin" }))
    expect(fresh.resumedFrom).toBe(0)
    expect(readFileSync(join(root, "g.bin")).equals(content)).toBe(true)
  })

  it("a server copy that went wrong before completion is caught and never takes the file's name", async () => {
    const { root, local, host, port } = await setUp()
    const content = randomFile(2 * MiB)
    writeFileSync(join(local, "f.bin"), content)
    const error = await Effect.runPromise(
      Effect.flip(upload({
        host,
        port,
        localPath: join(local, "f.bin"),
        remotePath: "f.bin",
        onProgress: (p) => {
          // Damage the server's unfinished copy once the last bytes are acknowledged.
          if (p.done === content.length) writeFileSync(join(root, "f.bin.iip-part"), randomFile(content.length))
        }
      }))
    )
    expect(error._tag).toBe("ChecksumMismatch")
    expect(existsSync(join(root, "f.bin"))).toBe(false)
  })

  it("the server refuses an offset past what it holds, and growth past its limit", async () => {
    const { root, local, host, port } = await setUp(3 * MiB)
    writeFileSync(join(local, "big.bin"), randomFile(4 * MiB))
    const tooBig = await Effect.runPromise(Effect.flip(upload({ host, port, localPath: join(local, "big.bin"), remotePath: "big.bin" })))
    expect(tooBig.message).toBe(`the server answered with error -1: "big.bin" would grow to ${4 * MiB} bytes, past this server's limit of 3145728 bytes per file: its unfinished upload (${3 * MiB} bytes) was removed (it cannot finish here)`)

    // An unfinished upload that lost its tail (a different disk, say): the client's resume point is past it.
    writeFileSync(join(local, "f.bin"), randomFile(2 * MiB))
    writeFileSync(join(root, "f.bin.iip-part"), readFileSync(join(local, "f.bin")).subarray(0, MiB))
    const run = upload({
      host,
      port,
      localPath: join(local, "f.bin"),
      remotePath: "f.bin",
      onProgress: (p) => {
        if (p.done === MiB) truncateSync(join(root, "f.bin.iip-part"), 10)
      }
    })
    const gap = await Effect.runPromise(Effect.flip(run))
    expect(gap.message).toBe("the server answered with error -1: offset 1048576 is past the 10 bytes received so far: continue at 10")
  })
})
