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
