// Every path a client names is confined to the server's root: traversal, absolute paths, symlinks
// that lead out, NUL bytes, over-long paths and malformed requests are each refused with a clear
// error, for reading, writing and hashing alike; the server stays up and nothing outside the root
// is read or written.
import * as Effect from "effect/Effect"
import { execFileSync } from "node:child_process"
import { mkdirSync, readdirSync, readFileSync, symlinkSync, writeFileSync } from "node:fs"
import { join } from "node:path"
import { afterEach, beforeEach, describe, expect, it } from "vitest"
import { download } from "../../src/files/download.ts"
import { openRoot, serveFiles } from "../../src/files/server.ts"
import { upload } from "../../src/files/upload.ts"
import { encodeUploadRequest } from "../../src/files/wire.ts"
import { IipServer } from "../../src/iip/server.ts"
import { Cleanup, frame, RawClient } from "../support/iipRaw.ts"
import { tempDir } from "./support.ts"

const cleanup = new Cleanup()
afterEach(() => cleanup.run())

let root = ""
let outside = ""
let local = ""
let port = 0

const outsideListing = () => readdirSync(outside).sort().map((name) => `${name}:${readFileSync(join(outside, name), "utf8")}`)

beforeEach(async () => {
  const base = tempDir(cleanup, "confine")
  root = join(base, "root")
  outside = join(base, "outside")
  local = tempDir(cleanup, "local")
  mkdirSync(root)
  mkdirSync(outside)
  writeFileSync(join(outside, "secret.txt"), "secret")
  writeFileSync(join(outside, "victim.txt"), "victim")
  writeFileSync(join(root, "ok.txt"), "inside")
  writeFileSync(join(local, "payload.bin"), "payload")
  symlinkSync("../outside", join(root, "link")) // a directory symlink that leads out
  symlinkSync(join(outside, "victim.txt"), join(root, "victim.txt")) // a file symlink that leads out
  symlinkSync("/etc/passwd", join(root, "passwd"))
  const server = new IipServer({ host: "127.0.0.1", port: 0, mesh: false, log: () => {} })
  serveFiles(server, await openRoot(root))
  await server.listen()
  cleanup.add(() => server.close())
  port = server.address.port
})

const fetch = (remotePath: string) =>
  Effect.runPromise(Effect.flip(download({ host: "127.0.0.1", port, remotePath, localPath: join(local, "got.bin") }))).then((e) => e.message)
const send = (remotePath: string) =>
  Effect.runPromise(Effect.flip(upload({ host: "127.0.0.1", port, localPath: join(local, "payload.bin"), remotePath }))).then((e) => e.message)

const refused = (path: string, why: string) => `the server answered with error -1: path refused: ${JSON.stringify(path)} ${why}`

const cases: Array<[string, string]> = [
  ["../outside/secret.txt", "contains '..'"],
  ["/etc/passwd", "is absolute: name it relative to the server's root"],
  ["a/../../outside/secret.txt", "contains '..'"],
  ["ok.txt\u0000.png", "contains a NUL byte"],
  [`${"n".repeat(256)}.txt`, `has a component over 255 bytes`],
  ["./", "names the root itself, not a file"]
]

describe("paths are confined to the root", () => {
  it.each(cases)("%j is refused for download and upload", async (path, why) => {
    const expected = refused(path.length > 80 ? `${path.slice(0, 80)}...` : path, why)
    expect(await fetch(path)).toBe(expected)
    expect(await send(path)).toBe(expected)
    expect(outsideListing()).toStrictEqual(["secret.txt:secret", "victim.txt:victim"])
  })

  it("the client itself will not send an empty or over-long path (the server's own check is below)", async () => {
    expect(await fetch("")).toBe("the remote path must be 1 to 1024 bytes long")
    expect(await send(`${"d/".repeat(600)}x`)).toBe("the remote path must be 1 to 1024 bytes long")
  })

  it("an upload's name may be at most 246 bytes, 255 (NAME_MAX) less the 9 of .iip-part: 247 and 255 are refused up front, naming the limit", async () => {
    const name = (bytes: number) => `${"é".repeat(Math.floor((bytes - 4) / 2))}${"n".repeat((bytes - 4) % 2)}.bin`
    expect([246, 247, 255].map((bytes) => Buffer.byteLength(name(bytes)))).toStrictEqual([246, 247, 255])
    const result = await Effect.runPromise(upload({ host: "127.0.0.1", port, localPath: join(local, "payload.bin"), remotePath: `dir/${name(246)}` }))
    expect(result).toMatchObject({ bytes: 7, verified: true })
    expect(readFileSync(join(root, "dir", name(246)), "utf8")).toBe("payload")
    for (const bytes of [247, 255]) {
      const path = `dir/${name(bytes)}`
      const why = `has a name of ${bytes} bytes: an upload's may be at most 246 (255, NAME_MAX, less the 9 of .iip-part, its unfinished upload's suffix)`
      expect(await send(path)).toBe(refused(`${path.slice(0, 80)}...`, why))
    }
    // A Go client sends no checksum first: its upload request gets the same answer.
    const client = await RawClient.connect(port, cleanup)
    await client.newChannel()
    client.write(frame(1, "/upload_file", 1, encodeUploadRequest(1, `dir/${name(255)}`, 0, false, Buffer.from("x"))))
    const raw = JSON.parse((await client.next()).data.toString()) as { message: string }
    expect(raw.message).toMatch(/^handler fail:path refused: ".*\.\.\." has a name of 255 bytes: an upload's may be at most 246 /)
    expect(readdirSync(join(root, "dir"))).toStrictEqual([name(246)])
    // A file of such a name placed there by other means is still served.
    writeFileSync(join(root, "dir", name(255)), "long")
    const got = await Effect.runPromise(download({ host: "127.0.0.1", port, remotePath: `dir/${name(255)}`, localPath: join(local, "long.bin") }))
    expect(got).toMatchObject({ bytes: 4, verified: true })
    // The download client's own partial is <local>.iip-part: such a local name is refused before it connects.
    const tooLong = join(local, name(247))
    const failed = await Effect.runPromise(Effect.flip(download({ host: "127.0.0.1", port: 1, remotePath: "ok.txt", localPath: tooLong })))
    expect(failed.message).toBe(`${tooLong} has a name of 247 bytes: a download's may be at most 246 (255, NAME_MAX, less the 9 of .iip-part, its unfinished download's suffix)`)
  })

  it("a symlink inside the root that leads out is refused for reading, writing through it and hashing", async () => {
    expect(await fetch("link/secret.txt")).toBe(refused("link/secret.txt", "resolves outside the root"))
    expect(await fetch("passwd")).toBe(refused("passwd", "resolves outside the root"))
    expect(await send("link/new.bin")).toBe(refused("link/new.bin", "resolves outside the root"))
    expect(await send("link/deeper/new.bin")).toBe(refused("link/deeper/new.bin", "resolves outside the root"))
    expect(await send("victim.txt")).toBe(refused("victim.txt", "is a symlink that leads outside the root"))
    expect(outsideListing()).toStrictEqual(["secret.txt:secret", "victim.txt:victim"])
    expect(readdirSync(local).sort()).toStrictEqual(["payload.bin"])
  })

  it("the server stays up through all of it and still serves what is inside", async () => {
    for (const [path] of cases) await fetch(path)
    const result = await Effect.runPromise(download({ host: "127.0.0.1", port, remotePath: "ok.txt", localPath: join(local, "ok.txt") }))
    expect(result).toMatchObject({ bytes: 6, verified: true })
    expect(readFileSync(join(local, "ok.txt"), "utf8")).toBe("inside")
  })
})

describe("raw requests the Go clients would never send", () => {
  const ask = async (path: string, data: Buffer): Promise<string> => {
    const client = await RawClient.connect(port, cleanup)
    await client.newChannel()
    client.write(frame(1, path, 1, data))
    return (await client.next()).data.toString()
  }
  const fail = (message: string) => `{"code":-1,"message":"handler fail:${message}"}`
  const uploadRequest = (header: string, declared = Buffer.byteLength(header)) => {
    const length = Buffer.alloc(4)
    length.writeUInt32BE(declared)
    return Buffer.concat([length, Buffer.from(header)])
  }

  it("over-long paths sent raw, escaped NULs, bad JSON and bad lengths are refused with the reference's error body", async () => {
    const long = JSON.stringify({ FilePath: "a".repeat(5000) })
    expect(await ask("/download_file", Buffer.from(long))).toBe(fail(`path refused: \\"${"a".repeat(80)}...\\" is 5000 bytes long (at most 1024)`))
    expect(await ask("/download_file", Buffer.from(JSON.stringify({ FilePath: "a".repeat(9000) })))).toBe(
      fail("a download request of 9015 bytes (at most 8192)")
    )
    expect(await ask("/download_file", Buffer.from(`{"FilePath":"ok.txt\\u0000"}`))).toBe(fail(`path refused: \\"ok.txt\\\\u0000\\" contains a NUL byte`))
    expect(await ask("/download_file", Buffer.from("not json"))).toBe(fail("a download request that is not a JSON object"))
    expect(await ask("/download_file", Buffer.from(`{"FilePath":"ok.txt","DownloadStartPos":-1}`))).toBe(
      fail("DownloadStartPos must be a whole number from 0 to 9007199254740991")
    )
    expect(await ask("/download_file", Buffer.from(`{"FilePath":"ok.txt","DownloadStartPos":1e3}`))).toBe(
      fail("DownloadStartPos must be a whole number from 0 to 9007199254740991")
    )
    expect(await ask("/upload_file", Buffer.from("{}"))).toBe(fail("an upload request of 2 bytes"))
    expect(await ask("/upload_file", uploadRequest(`{"FilePath":"x"}`, 99_999))).toBe(fail("an upload header of 99999 bytes in a request of 20"))
    expect(await ask("/upload_file", uploadRequest(`{"FilePath":"x","TaskId":1.5}`))).toBe(fail("TaskId must be a 64-bit integer"))
    expect(await ask("/upload_file", uploadRequest(`{"FilePath":"x","TaskId":9223372036854775808}`))).toBe(fail("TaskId must be a 64-bit integer"))
    expect(await ask("/file_checksum", Buffer.from(`{"FilePath":"../x","Upload":true}`))).toBe(fail(`path refused: \\"../x\\" contains '..'`))
    expect(await ask("/file_checksum", Buffer.from(`{"FilePath":"link/secret.txt"}`))).toBe(fail(`path refused: \\"link/secret.txt\\" resolves outside the root`))
    expect(outsideListing()).toStrictEqual(["secret.txt:secret", "victim.txt:victim"])
  })

  it("a directory, a FIFO and a file used as a directory are refused, without server paths in the message", async () => {
    mkdirSync(join(root, "dir"))
    execFileSync("mkfifo", [join(root, "fifo")])
    expect(await ask("/download_file", Buffer.from(`{"FilePath":"dir"}`))).toBe(fail(`\\"dir\\" is not a regular file`))
    expect(await ask("/download_file", Buffer.from(`{"FilePath":"fifo"}`))).toBe(fail(`\\"fifo\\" is not a regular file`))
    expect(await ask("/file_checksum", Buffer.from(`{"FilePath":"fifo"}`))).toBe(fail(`\\"fifo\\" is not a regular file`))
    expect(await ask("/upload_file", uploadRequest(`{"FilePath":"dir"}`))).toBe(fail(`path refused: \\"dir\\" is a directory`))
    // ENOTDIR said in words, as ELOOP is: the client cannot see the server's tree.
    const fileInTheWay = "a file is in the way (a directory of the path is a file)"
    expect(await ask("/upload_file", uploadRequest(`{"FilePath":"ok.txt/x"}`))).toBe(fail(`cannot write \\"ok.txt/x\\": ${fileInTheWay}`))
    expect(await ask("/upload_file", uploadRequest(`{"FilePath":"ok.txt/d/x"}`))).toBe(fail(`cannot write \\"ok.txt/d/x\\": ${fileInTheWay}`))
    expect(await ask("/file_checksum", Buffer.from(`{"FilePath":"ok.txt/x","Upload":true}`))).toBe(fail(`cannot hash \\"ok.txt/x\\": ${fileInTheWay}`))
  })
})
