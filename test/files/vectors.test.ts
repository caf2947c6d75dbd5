// The §12.5 byte vectors of the reference's file protocols (iip-protocol.md §11.2, §11.3): our
// download and upload clients send exactly the Go clients' requests to a stand-in of the Go
// servers, and our file server gives exactly the Go servers' answers to raw requests.
import * as Effect from "effect/Effect"
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs"
import { join } from "node:path"
import { afterEach, describe, expect, it } from "vitest"
import { download } from "../../src/files/download.ts"
import { openRoot, serveFiles } from "../../src/files/server.ts"
import { upload } from "../../src/files/upload.ts"
import { IipServer } from "../../src/iip/server.ts"
import { Cleanup, frame, hex, packetHex, RawClient } from "../support/iipRaw.ts"
import { randomFile, startGoExampleServer, tempDir } from "./support.ts"

const cleanup = new Cleanup()
afterEach(() => cleanup.run())

const json = (text: string) => Buffer.from(text, "utf8").toString("hex")
const newChannelRequest = "012f7379732f6e65775f6368616e6e656c0000000000000000027b7d"
const newChannelAnswer = "052f7379732f6e65775f6368616e6e656c0000000000000000197b22636f6465223a302c226368616e6e656c5f6964223a317d"
const downloadPath = "2f646f776e6c6f61645f66696c65" // "/download_file"
const uploadPath = "2f75706c6f61645f66696c65" // "/upload_file"
const u32 = (n: number) => n.toString(16).padStart(8, "0")

/** The Go download client's request at `offset` on channel 1, as §12.5 shows it for offset 0. */
const downloadRequest = (filePath: string, offset: number) => {
  const body = `{"TaskId":1,"FilePath":"${filePath}","DownloadStartPos":${offset}}`
  return `01${downloadPath}00${u32(1)}${u32(body.length)}${json(body)}`
}

const startOurServer = async (root: string): Promise<number> => {
  const server = new IipServer({ host: "127.0.0.1", port: 0, mesh: false, log: () => {} })
  serveFiles(server, await openRoot(root))
  await server.listen()
  cleanup.add(() => server.close())
  return server.address.port
}

describe("our clients send the Go clients' bytes (§12.5)", () => {
  it("download: new_channel, then /download_file at 0, 10236, 20472, 25000 on channel 1, as file_client", async () => {
    // §12.5 prints the JSON with the path "/data/src25000.bin" (65 bytes) but its length field says
    // 0x4c = 76: the captured path had 29 characters, as in the upload capture (0x5c = 63 + 29).
    const remotePath = "/data/iipcapture/src25000.bin"
    const content = randomFile(25_000)
    const go = await startGoExampleServer(cleanup, new Map([[remotePath, content]]))
    const local = join(tempDir(cleanup, "vec-dl"), "out.bin")
    const result = await Effect.runPromise(download({ host: "127.0.0.1", port: go.port, remotePath, localPath: local }))

    const sent = go.received.map(packetHex)
    expect(sent[0]).toBe(newChannelRequest)
    // Our one addition: the checksum question, which a Go server answers with 102 (unknown path).
    const question = `{"FilePath":"${remotePath}","Upload":false,"Length":0}`
    expect(sent[1]).toBe(`01${json("/file_checksum")}00${u32(1)}${u32(question.length)}${json(question)}`)
    // §12.5: 012f646f776e6c6f61645f66696c6500 00000001 0000004c {"TaskId":1,"FilePath":...,"DownloadStartPos":0}
    expect(sent[2]).toBe(`012f646f776e6c6f61645f66696c6500000000010000004c${json(`{"TaskId":1,"FilePath":"${remotePath}","DownloadStartPos":0}`)}`)
    expect(sent.slice(2)).toStrictEqual([0, 10_236, 20_472, 25_000].map((offset) => downloadRequest(remotePath, offset)))
    expect(readFileSync(local).equals(content)).toBe(true)
    expect(result).toMatchObject({ bytes: 25_000, resumedFrom: 0, verified: false })
  })

  it("upload: the whole 25,000 bytes in one request (IIP length 0x6208, JSON 0x5c), then the empty Completed request", async () => {
    const content = randomFile(25_000)
    const files = new Map<string, Buffer>()
    const go = await startGoExampleServer(cleanup, files)
    const dir = tempDir(cleanup, "vec-up")
    writeFileSync(join(dir, "src25000.bin"), content)
    const remotePath = "uploads/2021/06/src-25000.bin" // 29 characters: a 92-byte header, as captured
    const result = await Effect.runPromise(upload({ host: "127.0.0.1", port: go.port, localPath: join(dir, "src25000.bin"), remotePath }))

    const sent = go.received.map(packetHex)
    expect(sent[0]).toBe(newChannelRequest)
    expect(go.received[1]!.path).toBe("/file_checksum") // answered 102: the upload starts at 0
    const first = `{"TaskId":1,"FilePath":"${remotePath}","UploadStartPos":0,"Completed":false}`
    expect(sent[2]).toBe(`01${uploadPath}00${u32(1)}00006208${"0000005c"}${json(first)}${hex(content)}`)
    const last = `{"TaskId":1,"FilePath":"${remotePath}","UploadStartPos":25000,"Completed":true}`
    expect(sent[3]).toBe(`01${uploadPath}00${u32(1)}${u32(99)}${"0000005f"}${json(last)}`)
    expect(sent).toHaveLength(4)
    expect(files.get(remotePath)!.equals(content)).toBe(true)
    expect(result).toMatchObject({ bytes: 25_000, resumedFrom: 0, verified: false })
  })
})

describe("our file server gives the Go servers' answers (§12.5)", () => {
  it("download: 10,240, 10,240, 4,532 and 4 bytes, the last exactly 052f646f776e6c6f61645f66696c65000000000100000004 00000001", async () => {
    const root = tempDir(cleanup, "vec-srv")
    const content = randomFile(25_000)
    mkdirSync(join(root, "data"))
    writeFileSync(join(root, "data", "src25000.bin"), content)
    const client = await RawClient.connect(await startOurServer(root), cleanup)
    expect(packetHex(await client.newChannel())).toBe(newChannelAnswer)

    const answers: Array<string> = []
    for (const offset of [0, 10_236, 20_472, 25_000]) {
      client.write(Buffer.from(downloadRequest("data/src25000.bin", offset), "hex"))
      answers.push(packetHex(await client.next()))
    }
    const chunk = (from: number, to: number) => `05${downloadPath}00${u32(1)}${u32(4 + to - from)}00000000${hex(content.subarray(from, to))}`
    expect(answers).toStrictEqual([
      chunk(0, 10_236),
      chunk(10_236, 20_472),
      chunk(20_472, 25_000),
      "052f646f776e6c6f61645f66696c65000000000100000004" + "00000001"
    ])
    expect(answers.map((a) => a.length / 2 - 24)).toStrictEqual([10_240, 10_240, 4_532, 4])
  })

  it("download: the captured request's absolute path is refused with the reference's handler-fail body", async () => {
    const client = await RawClient.connect(await startOurServer(tempDir(cleanup, "vec-abs")), cleanup)
    await client.newChannel()
    client.write(Buffer.from(downloadRequest("/data/src25000.bin", 0), "hex"))
    const answer = await client.next()
    expect(answer.header.toString("hex")).toBe(`05${downloadPath}00${u32(1)}${u32(answer.data.length)}`)
    expect(answer.data.toString()).toBe(
      `{"code":-1,"message":"handler fail:path refused: \\"/data/src25000.bin\\" is absolute: name it relative to the server's root"}`
    )
  })

  it("upload: {\"TaskId\":1,\"DoneBytes\":25000} exactly, then DoneBytes 0 for the Completed request, and the file is whole", async () => {
    const root = tempDir(cleanup, "vec-up-srv")
    const content = randomFile(25_000)
    const client = await RawClient.connect(await startOurServer(root), cleanup)
    await client.newChannel()
    const request = (start: number, completed: boolean, data: Buffer) => {
      const header = Buffer.from(`{"TaskId":1,"FilePath":"uploads/2021/06/src-25000.bin","UploadStartPos":${start},"Completed":${completed}}`)
      const length = Buffer.alloc(4)
      length.writeUInt32BE(header.length)
      return frame(1, "/upload_file", 1, Buffer.concat([length, header, data]))
    }
    client.write(request(0, false, content))
    expect(packetHex(await client.next())).toBe(`052f75706c6f61645f66696c6500000000010000001e${json(`{"TaskId":1,"DoneBytes":25000}`)}`)
    expect(existsSync(join(root, "uploads/2021/06/src-25000.bin"))).toBe(false) // not before Completed
    client.write(request(25_000, true, Buffer.alloc(0)))
    expect(packetHex(await client.next())).toBe(`052f75706c6f61645f66696c6500000000010000001a${json(`{"TaskId":1,"DoneBytes":0}`)}`)
    expect(readFileSync(join(root, "uploads/2021/06/src-25000.bin")).equals(content)).toBe(true)
    expect(existsSync(join(root, "uploads/2021/06/src-25000.bin.iip-part"))).toBe(false)
  })

  it("upload: a 64-bit TaskId comes back exactly as sent", async () => {
    const client = await RawClient.connect(await startOurServer(tempDir(cleanup, "vec-task")), cleanup)
    await client.newChannel()
    const header = Buffer.from(`{"TaskId":9223372036854775807,"FilePath":"t.bin","UploadStartPos":0,"Completed":true}`)
    const length = Buffer.alloc(4)
    length.writeUInt32BE(header.length)
    client.write(frame(1, "/upload_file", 1, Buffer.concat([length, header, Buffer.from("x")])))
    expect((await client.next()).data.toString()).toBe(`{"TaskId":9223372036854775807,"DoneBytes":1}`)
  })
})
