// Transfers survive a SIGKILL of either side: the file server runs as `iip-mesh file-server` in a
// child process and is killed once some bytes have crossed, then started again on a new port; the
// download CLI is killed mid-way and run again. Each resumes from the offset left on disk (the
// client's `.iip-part`, or the server's unfinished upload), not from 0, and ends byte-identical.
// Piped, the CLI prints its one result line and nothing on stderr; on a terminal it draws progress.
import * as Effect from "effect/Effect"
import { spawn } from "node:child_process"
import { statSync, writeFileSync } from "node:fs"
import { join } from "node:path"
import { afterEach, describe, expect, it } from "vitest"
import { download } from "../../src/files/download.ts"
import { openRoot, serveFiles } from "../../src/files/server.ts"
import { upload } from "../../src/files/upload.ts"
import { IipServer } from "../../src/iip/server.ts"
import { CHILD_START_MS, holdsStarts } from "../support/childStart.ts"
import { Cleanup, waitFor, withTimeout } from "../support/iipRaw.ts"
import { kill9, main, randomFile, runCli, sha256, sha256File, startCli, startFileServer, tempDir } from "./support.ts"

const cleanup = new Cleanup()
afterEach(() => cleanup.run())

const MiB = 1024 * 1024
const host = "127.0.0.1"

describe("a SIGKILLed file server", () => {
  it("download: the restarted server is asked from the partial file's size on, and the file ends byte-identical", async () => {
    const root = tempDir(cleanup, "root")
    const localPath = join(tempDir(cleanup, "local"), "big.bin")
    const content = randomFile(16 * MiB)
    writeFileSync(join(root, "big.bin"), content)

    const first = await startFileServer(cleanup, root)
    let killed: Promise<void> | undefined
    const failure = await Effect.runPromise(Effect.flip(download({
      host,
      port: first.port,
      remotePath: "big.bin",
      localPath,
      onProgress: (p) => {
        if (killed === undefined && p.done >= 2 * MiB) killed = kill9(first.child)
      }
    })))
    await killed
    expect(failure._tag).toBe("TransferFailed")
    expect(failure.message).toMatch(/big\.bin\.iip-part keeps what arrived: run again to resume$/)
    const saved = statSync(`${localPath}.iip-part`).size
    expect(saved).toBeGreaterThanOrEqual(2 * MiB)
    expect(saved).toBeLessThan(content.length)

    const second = await startFileServer(cleanup, root)
    expect(second.port).not.toBe(first.port)
    const firstSeen: Array<number> = []
    const result = await Effect.runPromise(
      download({ host, port: second.port, remotePath: "big.bin", localPath, onProgress: (p) => firstSeen.push(p.done) })
    )
    expect(result.resumedFrom).toBe(saved)
    expect(firstSeen[0]).toBe(saved)
    expect(result).toMatchObject({ bytes: content.length, verified: true, sha256: sha256(content) })
    expect(sha256File(localPath)).toBe(sha256(content))
  }, holdsStarts(2, 15_000))

  it("upload: the restarted server's unfinished upload is continued, not restarted, and the file ends byte-identical", async () => {
    const root = tempDir(cleanup, "root")
    const localPath = join(tempDir(cleanup, "local"), "big.bin")
    const content = randomFile(16 * MiB + 3)
    writeFileSync(localPath, content)

    const first = await startFileServer(cleanup, root)
    let killed: Promise<void> | undefined
    const failure = await Effect.runPromise(Effect.flip(upload({
      host,
      port: first.port,
      localPath,
      remotePath: "up/big.bin",
      onProgress: (p) => {
        if (killed === undefined && p.done >= 2 * MiB) killed = kill9(first.child)
      }
    })))
    await killed
    expect(failure._tag).toBe("TransferFailed")
    const saved = statSync(join(root, "up", "big.bin.iip-part")).size
    expect(saved).toBeGreaterThanOrEqual(2 * MiB)
    expect(saved).toBeLessThan(content.length)

    const second = await startFileServer(cleanup, root)
    const result = await Effect.runPromise(upload({ host, port: second.port, localPath, remotePath: "up/big.bin" }))
    expect(result.resumedFrom).toBe(saved)
    expect(result).toMatchObject({ bytes: content.length, verified: true, sha256: sha256(content) })
    expect(sha256File(join(root, "up", "big.bin"))).toBe(sha256(content))
  }, holdsStarts(2, 15_000))
})

describe("the CLI", () => {
  const startServer = async (root: string): Promise<number> => {
    const server = new IipServer({ host, port: 0, mesh: false, log: () => {} })
    serveFiles(server, await openRoot(root))
    await server.listen()
    cleanup.add(() => server.close())
    return server.address.port
  }

  it("a download killed with SIGKILL resumes when run again; piped, it prints only its result line", async () => {
    const root = tempDir(cleanup, "root")
    const localPath = join(tempDir(cleanup, "local"), "big.bin")
    const content = randomFile(32 * MiB)
    writeFileSync(join(root, "big.bin"), content)
    const address = `${host}:${await startServer(root)}`

    const run = startCli(cleanup, ["download", address, "big.bin", localPath])
    let ended = false
    void run.done.then(() => (ended = true))
    // The partial file's size is the state there is to wait for: it announces itself no other way.
    // The bound is for a loaded machine (a CLI start costs 1.2-2 s of CPU: 15 s ran out at load 20);
    // a download that ended by itself first says so rather than waiting the bound out.
    await waitFor(() => ended || (statSync(`${localPath}.iip-part`, { throwIfNoEntry: false })?.size ?? 0) >= MiB, 60_000, "1 MiB downloaded")
    expect(ended, "the download ended before it could be killed").toBe(false)
    await kill9(run.child)
    const killed = await run.done
    expect(killed.signal).toBe("SIGKILL")
    const saved = statSync(`${localPath}.iip-part`).size
    expect(saved).toBeLessThan(content.length)

    const again = await runCli(cleanup, ["download", address, "big.bin", localPath], 60_000)
    expect(again.stderr).toBe("")
    expect(again.code).toBe(0)
    const line = new RegExp(
      `^downloaded big\\.bin -> ${localPath.replaceAll(".", "\\.")}: ${content.length} bytes in \\d+\\.\\d\\d s, resumed at ${saved}, ` +
        `sha256 ${sha256(content)} \\(verified by the server\\)\\n$`
    )
    expect(again.stdout).toMatch(line)
    expect(sha256File(localPath)).toBe(sha256(content))
  }, 150_000)

  it("a piped upload prints one line on stdout and nothing on stderr; a refused one, one line on stderr and exit 1", async () => {
    const root = tempDir(cleanup, "root")
    const localPath = join(tempDir(cleanup, "local"), "f.bin")
    const content = randomFile(3 * MiB)
    writeFileSync(localPath, content)
    const address = `${host}:${await startServer(root)}`

    const ok = await runCli(cleanup, ["upload", address, localPath, "f.bin"])
    expect(ok).toStrictEqual({
      code: 0,
      signal: null,
      stdout: `uploaded ${localPath} -> f.bin: ${content.length} bytes in ${/\d+\.\d\d/.exec(ok.stdout)![0]} s, sha256 ${sha256(content)} (verified by the server)\n`,
      stderr: ""
    })
    expect(sha256File(join(root, "f.bin"))).toBe(sha256(content))

    const refused = await runCli(cleanup, ["upload", address, localPath, "../f.bin"])
    expect(refused).toStrictEqual({
      code: 1,
      signal: null,
      stdout: "",
      stderr: `iip-mesh upload: the server answered with error -1: path refused: "../f.bin" contains '..'\n`
    })
  }, holdsStarts(2, 10_000))

  it("file-server refuses a root that is not a directory in one line", async () => {
    const file = join(tempDir(cleanup, "notdir"), "file")
    writeFileSync(file, "x")
    const run = await runCli(cleanup, ["file-server", "--root", file, "--listen", "127.0.0.1:0"])
    expect(run).toMatchObject({ code: 1, stdout: "", stderr: `iip-mesh file-server: root ${JSON.stringify(file)} is not a directory\n` })
  }, holdsStarts(1, 10_000))

  it("on a terminal, a download draws its progress (bytes, rate, time left) on stderr before the result", async () => {
    const root = tempDir(cleanup, "root")
    const localPath = join(tempDir(cleanup, "local"), "big.bin")
    writeFileSync(join(root, "big.bin"), randomFile(8 * MiB))
    const address = `${host}:${await startServer(root)}`
    // script(1) gives the child a pseudo-terminal, so process.stderr.isTTY is true there.
    const command = [process.execPath, main, "download", address, "big.bin", localPath].map((arg) => `'${arg}'`).join(" ")
    const script = spawn("script", ["-qec", command, "/dev/null"], { stdio: ["ignore", "pipe", "inherit"] })
    cleanup.add(() => script.kill("SIGKILL"))
    let output = ""
    script.stdout.on("data", (chunk: Buffer) => (output += chunk.toString()))
    const code = await withTimeout(new Promise((exited) => script.once("close", exited)), CHILD_START_MS, "the download under script")
    expect(code).toBe(0)
    expect(output).toMatch(/\r8\.0 MiB \/ 8\.0 MiB \(100%\) {2}[\d.]+ [KMG]iB\/s {2}0:00 left\x1b\[K/)
    expect(output).toMatch(/\r\x1b\[Kdownloaded big\.bin -> .*\(verified by the server\)\r?\n$/)
  }, holdsStarts(1, 10_000))
})
