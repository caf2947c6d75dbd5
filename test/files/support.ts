// Helpers for the file-transfer tests: temp directories, random files and their SHA-256, running
// the CLI as a child (file-server, download, upload), and a raw-byte stand-in for the Go
// examples' servers (file_server.go and upload_server.go, iip-protocol.md §11.2-§11.3): it answers
// /sys/new_channel with ids 1, 2, ..., /download_file with at most 10,236 bytes after a 4-byte flag,
// /upload_file by truncating at offset 0 and appending otherwise, anything else with 102; and it
// records every packet the client sent. Written from the spec with test/support/iipRaw.ts, not
// from src/files, so the client is checked against the wire format rather than against itself.
import { type ChildProcess, spawn } from "node:child_process"
import { createHash, randomBytes } from "node:crypto"
import { mkdtempSync, readFileSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join, resolve } from "node:path"
import { CHILD_START_MS } from "../support/childStart.ts"
import { type Cleanup, frame, type RawPacket, RawParser, startRawServer, withTimeout } from "../support/iipRaw.ts"

export const main = resolve(import.meta.dirname, "../../src/cli/main.ts")

export const tempDir = (cleanup: Cleanup, name: string): string => {
  const dir = mkdtempSync(join(tmpdir(), `iip-files-${name}-`))
  cleanup.add(() => rmSync(dir, { recursive: true, force: true }))
  return dir
}

export const randomFile = (bytes: number): Buffer => randomBytes(bytes)

export const sha256 = (data: Uint8Array): string => createHash("sha256").update(data).digest("hex")
export const sha256File = (path: string): string => sha256(readFileSync(path))

export interface CliRun {
  readonly code: number | null
  readonly signal: NodeJS.Signals | null
  readonly stdout: string
  readonly stderr: string
}

/** Starts `iip-mesh <args>` with piped output; `done` settles when it exits. */
export const startCli = (cleanup: Cleanup, args: ReadonlyArray<string>): { readonly child: ChildProcess; readonly done: Promise<CliRun> } => {
  const child = spawn(process.execPath, [main, ...args], { stdio: ["ignore", "pipe", "pipe"] })
  cleanup.add(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL")
  })
  let stdout = ""
  let stderr = ""
  child.stdout!.on("data", (chunk: Buffer) => (stdout += chunk.toString()))
  child.stderr!.on("data", (chunk: Buffer) => (stderr += chunk.toString()))
  const done = new Promise<CliRun>((resolve) => child.once("close", (code, signal) => resolve({ code, signal, stdout, stderr })))
  return { child, done }
}

export const runCli = (cleanup: Cleanup, args: ReadonlyArray<string>, timeoutMs = CHILD_START_MS): Promise<CliRun> =>
  withTimeout(startCli(cleanup, args).done, timeoutMs, `iip-mesh ${args[0]}`)

/** `iip-mesh file-server --root ROOT --listen 127.0.0.1:0 [extra]` as a child; resolves once it printed its port. */
export const startFileServer = async (
  cleanup: Cleanup,
  root: string,
  extra: ReadonlyArray<string> = []
): Promise<{ readonly child: ChildProcess; readonly port: number }> => {
  const { child, done } = startCli(cleanup, ["file-server", "--root", root, "--listen", "127.0.0.1:0", ...extra])
  const port = await withTimeout(
    new Promise<number>((found, failed) => {
      let out = ""
      child.stdout!.on("data", (chunk: Buffer) => {
        out += chunk.toString()
        const match = /listening on 127\.0\.0\.1:(\d+), root /.exec(out)
        if (match !== null) found(Number(match[1]))
      })
      void done.then((run) => failed(new Error(`file-server exited (${run.code ?? run.signal}): ${run.stderr}`)))
    }),
    CHILD_START_MS,
    "the file server to listen"
  )
  return { child, port }
}

/** Kills a child with SIGKILL and waits until it is gone. */
export const kill9 = (child: ChildProcess): Promise<void> =>
  child.exitCode !== null || child.signalCode !== null
    ? Promise.resolve()
    : withTimeout(
      new Promise<void>((gone) => {
        child.once("exit", () => gone())
        child.kill("SIGKILL")
      }),
      5000,
      "the child to die"
    )

/** The stand-in for the Go example servers. */
export const startGoExampleServer = async (cleanup: Cleanup, files: Map<string, Buffer>): Promise<{ readonly port: number; readonly received: Array<RawPacket> }> => {
  const received: Array<RawPacket> = []
  const { port } = await startRawServer(cleanup, (socket) => {
    const parser = new RawParser()
    let nextChannel = 1
    socket.on("data", (chunk: Buffer) => {
      for (const packet of parser.push(chunk)) {
        received.push(packet)
        const answer = (data: Uint8Array | string) => socket.write(frame(5, packet.path, packet.channelId, data))
        if (packet.path === "/sys/new_channel") answer(`{"code":0,"channel_id":${nextChannel++}}`)
        else if (packet.path === "/download_file") {
          const request = JSON.parse(packet.data.toString("utf8")) as { FilePath: string; DownloadStartPos: number }
          const bytes = (files.get(request.FilePath) ?? Buffer.alloc(0)).subarray(request.DownloadStartPos, request.DownloadStartPos + 10_236)
          const flag = Buffer.alloc(4)
          flag.writeUInt32BE(bytes.length === 0 ? 1 : 0)
          answer(Buffer.concat([flag, bytes]))
        } else if (packet.path === "/upload_file") {
          const headerLength = packet.data.readUInt32BE(0)
          const header = JSON.parse(packet.data.subarray(4, 4 + headerLength).toString("utf8")) as { TaskId: number; FilePath: string; UploadStartPos: number }
          const content = packet.data.subarray(4 + headerLength)
          const before = header.UploadStartPos === 0 ? Buffer.alloc(0) : (files.get(header.FilePath) ?? Buffer.alloc(0))
          files.set(header.FilePath, Buffer.concat([before, content]))
          answer(`{"TaskId":${header.TaskId},"DoneBytes":${content.length}}`)
        } else answer(`{"code":102,"message":"handle error"}`)
      }
    })
  })
  return { port, received }
}
