// The endpoints file (`endpointsFile`, src/discovery/staticSource.ts fileSource/readEndpointFile)
// when what sits at its path is not a small JSON file: a FIFO, a huge file, values whose error
// message would carry megabytes into the log. The last good set stays and the error says why.
import * as Result from "effect/Result"
import { spawn, spawnSync } from "node:child_process"
import { mkdtempSync, rmSync, truncateSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join, resolve } from "node:path"
import { afterAll, describe, expect, it } from "vitest"
import { MaxEndpointsFileBytes, readEndpointFile } from "../../src/discovery/staticSource.ts"
import { CHILD_START_MS, holdsStarts } from "../support/childStart.ts"

const root = mkdtempSync(join(tmpdir(), "iip-mesh-endpoints-hostile-"))
afterAll(() => rmSync(root, { recursive: true, force: true }))

const failure = (path: string): string => {
  const result = readEndpointFile(path)
  if (Result.isSuccess(result)) throw new Error(`expected ${path} to be rejected`)
  return result.failure.message
}

describe("readEndpointFile against hostile files", () => {
  it("a file larger than MaxEndpointsFileBytes is refused by its size, not read", () => {
    const file = join(root, "huge.json")
    writeFileSync(file, "")
    truncateSync(file, MaxEndpointsFileBytes + 1) // sparse
    const started = performance.now()
    expect(failure(file)).toContain(`larger than ${MaxEndpointsFileBytes} bytes`)
    expect(performance.now() - started).toBeLessThan(200)
  })

  it("values that do not check are named in a message of bounded size (a 1 MB address or service name is cut)", () => {
    const file = join(root, "long.json")
    writeFileSync(file, JSON.stringify({ web: [{ address: "x".repeat(1_000_000), weight: 1 }] }))
    expect(failure(file).length).toBeLessThan(2000)
    writeFileSync(file, JSON.stringify({ ["W".repeat(1_000_000)]: [] }))
    expect(failure(file).length).toBeLessThan(2000)
  })

  it("a FIFO at the path does not block the read (in a child process, bounded)", async () => {
    const fifo = join(root, "fifo.json")
    const made = spawnSync("mkfifo", [fifo])
    expect(made.status, String(made.stderr)).toBe(0)
    const source = resolve(import.meta.dirname, "../../src/discovery/staticSource.ts")
    const script = `
      import { readEndpointFile } from ${JSON.stringify(source)}
      console.log(JSON.stringify(readEndpointFile(${JSON.stringify(fifo)})))
    `
    const child = spawn(process.execPath, ["--input-type=module", "-e", script], { stdio: ["ignore", "pipe", "pipe"] })
    let out = ""
    child.stdout.on("data", (chunk: Buffer) => (out += chunk.toString()))
    const exited = await new Promise<boolean>((done) => {
      const timer = setTimeout(() => done(false), CHILD_START_MS)
      child.on("exit", () => {
        clearTimeout(timer)
        done(true)
      })
    })
    if (!exited) child.kill("SIGKILL")
    expect(exited, `the read blocked on the FIFO; output: ${out}`).toBe(true)
    expect(out).toContain("not a regular file")
  }, holdsStarts(1, 5000))
})
