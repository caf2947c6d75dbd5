// The `iip-mesh` CLI as a user runs it: `echo-server` prints its real port, `call` prints the
// answer and exits 0, and a failure is one line on stderr with a non-zero exit; both in the
// reference's TLS mode too (echo-server --tls-cert/--tls-key, call --tls or --tls-ca).
import { type ChildProcess, spawn } from "node:child_process"
import { mkdtempSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join, resolve } from "node:path"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { CHILD_START_MS, holdsStarts } from "../support/childStart.ts"
import { withTimeout } from "../support/iipRaw.ts"
import { ipServerCertificate, makeTestPki } from "../support/testPki.ts"

const main = resolve(import.meta.dirname, "../../src/cli/main.ts")

const run = (args: Array<string>): Promise<{ code: number | null; stdout: string; stderr: string }> =>
  withTimeout(
    new Promise((done) => {
      const child = spawn(process.execPath, [main, ...args], { stdio: ["ignore", "pipe", "pipe"] })
      let stdout = ""
      let stderr = ""
      child.stdout.on("data", (chunk: Buffer) => (stdout += chunk.toString()))
      child.stderr.on("data", (chunk: Buffer) => (stderr += chunk.toString()))
      child.on("close", (code) => done({ code, stdout, stderr }))
    }),
    CHILD_START_MS,
    `iip-mesh ${args[0]}`
  )

/** The address an echo-server child says it listens on. */
const listeningAddress = (server: ChildProcess): Promise<string> =>
  withTimeout(
    new Promise<string>((found, failed) => {
      let out = ""
      server.stdout!.on("data", (chunk: Buffer) => {
        out += chunk.toString()
        const match = /listening on (\S+:\d+)\n/.exec(out)
        if (match !== null) found(match[1]!)
      })
      server.once("exit", (code) => failed(new Error(`echo-server exited with ${code}`)))
    }),
    CHILD_START_MS,
    "echo-server to listen"
  )

// Every test waits for one CLI start, or for a few side by side.
describe("iip-mesh CLI", { timeout: holdsStarts(1, 10_000) }, () => {
  let server: ChildProcess
  let address = ""

  beforeAll(async () => {
    server = spawn(process.execPath, [main, "echo-server", "--listen", "127.0.0.1:0"], { stdio: ["ignore", "pipe", "inherit"] })
    address = await listeningAddress(server)
  }, holdsStarts(1, 5000))

  afterAll(() => {
    server.kill("SIGKILL")
  })

  it("echo-server listens on a real port when given port 0", () => {
    expect(address).toMatch(/^127\.0\.0\.1:[1-9]\d*$/)
  })

  it("call prints the answer of /echo and exits 0", async () => {
    const result = await run(["call", `${address}/echo`, "--data", "hello"])
    expect(result).toStrictEqual({ code: 0, stdout: "hello", stderr: "" })
  })

  it("call sends {} when no data is given, and reads --data-file", async () => {
    const file = join(tmpdir(), `iip-mesh-cli-${process.pid}.bin`)
    writeFileSync(file, "from a file")
    // Two processes side by side: each start is mostly CPU, and the machine has two cores.
    const [empty, fromFile] = await Promise.all([run(["call", `${address}/echo_benchmark`]), run(["call", `${address}/echo`, "--data-file", file])])
    expect(empty.stdout).toBe("{}")
    expect(fromFile.stdout).toBe("from a file")
  })

  it("call reports an unknown path as a one-line typed error (our server speaks mesh mode)", async () => {
    const result = await run(["call", `${address}/nosuch`])
    expect(result.code).not.toBe(0)
    expect(result.stdout).toBe("")
    expect(result.stderr).toBe("iip-mesh call: no handler for /nosuch (not_found)\n")
  })

  it("call reports an unreachable server in one line on stderr with a non-zero exit", async () => {
    const result = await run(["call", "127.0.0.1:1/echo", "--timeout", "2s"])
    expect(result.code).not.toBe(0)
    expect(result.stdout).toBe("")
    expect(result.stderr.trim().split("\n")).toHaveLength(1)
    expect(result.stderr).toMatch(/cannot connect to 127\.0\.0\.1:1/)
  })

  // A --timeout the library's clients refuse (a connect timeout of 0, a timeout past their 24 h)
  // is refused as the flag it came from, in one line: it was a library option's name, or for
  // download, upload and http-adapter (whose parser takes up to 24.8 days) a logged defect.
  it("a --timeout the commands cannot use is one line naming the flag, exit code 1", async () => {
    const tooLong = (command: string) => `iip-mesh ${command}: --timeout: expected a duration from 0 ms to 86400000 ms (24 h), got "25h"\n`
    const [zero, long, down, up, adapter] = await Promise.all([
      run(["call", "127.0.0.1:1/echo", "--timeout", "0"]),
      run(["call", "127.0.0.1:1/echo", "--timeout", "25h"]),
      run(["download", "127.0.0.1:1", "a", join(tmpdir(), `iip-mesh-cli-${process.pid}-never`), "--timeout", "25h"]),
      run(["upload", "127.0.0.1:1", main, "a", "--timeout", "25h"]),
      run(["http-adapter", "--listen", "127.0.0.1:0", "--route", "x=127.0.0.1:1#1", "--timeout", "25h"])
    ])
    expect(zero).toStrictEqual({ code: 1, stdout: "", stderr: `iip-mesh call: --timeout: expected a duration from 1 ms to 86400000 ms (24 h), got "0"\n` })
    expect(long).toStrictEqual({ code: 1, stdout: "", stderr: `iip-mesh call: --timeout: expected a duration from 1 ms to 86400000 ms (24 h), got "25h"\n` })
    expect(down).toStrictEqual({ code: 1, stdout: "", stderr: tooLong("download") })
    expect(up).toStrictEqual({ code: 1, stdout: "", stderr: tooLong("upload") })
    expect(adapter).toStrictEqual({ code: 1, stdout: "", stderr: tooLong("http-adapter") })
  })

  it("call rejects a target without a path", async () => {
    const result = await run(["call", address])
    expect(result.code).not.toBe(0)
    expect(result.stderr).toMatch(/expected HOST:PORT\/path/)
  })

  it("echo-server drains and exits 0 on SIGTERM", async () => {
    const child = spawn(process.execPath, [main, "echo-server", "--listen", "127.0.0.1:0"], { stdio: ["ignore", "pipe", "pipe"] })
    const exited = new Promise<number | null>((done) => child.on("exit", (code) => done(code)))
    await listeningAddress(child)
    child.kill("SIGTERM")
    expect(await exited).toBe(0)
  })
})

describe("iip-mesh CLI in the reference's TLS mode", { timeout: holdsStarts(1, 10_000) }, () => {
  let server: ChildProcess
  let address = ""
  const dir = mkdtempSync(join(tmpdir(), "iip-mesh-cli-tls-"))

  beforeAll(async () => {
    const pki = await makeTestPki("cli")
    const certificate = await ipServerCertificate(pki, "127.0.0.1")
    writeFileSync(join(dir, "cert.pem"), certificate.cert)
    writeFileSync(join(dir, "key.pem"), certificate.key)
    writeFileSync(join(dir, "ca.pem"), pki.root.certificatePem)
    writeFileSync(join(dir, "other-ca.pem"), (await makeTestPki("other")).root.certificatePem)
    server = spawn(process.execPath, [main, "echo-server", "--listen", "127.0.0.1:0", "--tls-cert", join(dir, "cert.pem"), "--tls-key", join(dir, "key.pem")], { stdio: ["ignore", "pipe", "inherit"] })
    address = await listeningAddress(server)
  }, holdsStarts(1, 5000))

  afterAll(() => {
    server.kill("SIGKILL")
    rmSync(dir, { recursive: true, force: true })
  })

  it("call over TLS: unverified (--tls) and verified against the CA (--tls-ca); another CA is refused", async () => {
    // Three independent calls side by side: the refused one waits out its 2 s while the others run.
    const [unverified, verified, refused] = await Promise.all([
      run(["call", `${address}/echo`, "--data", "hello", "--tls"]),
      run(["call", `${address}/echo`, "--data", "hello", "--tls-ca", join(dir, "ca.pem")]),
      run(["call", `${address}/echo`, "--tls-ca", join(dir, "other-ca.pem"), "--timeout", "2s"])
    ])
    expect(unverified).toStrictEqual({ code: 0, stdout: "hello", stderr: "" })
    expect(verified).toStrictEqual({ code: 0, stdout: "hello", stderr: "" })
    expect(refused.code).not.toBe(0)
    expect(refused.stderr).toMatch(/does not chain to the trust bundle/)
  })
})
