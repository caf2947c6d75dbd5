// The examples under examples/ run as they are, as their own process, and print what they say.
// - effectRpc.ts: a plain Effect route with its requirement from the layer, a streamed call, and
//   an RpcGroup's unary, streaming and failing RPCs over IIP; it exits 0 and logs nothing else
//   (no error, no redial after the server stops: the client closes first).
import { execFile } from "node:child_process"
import { resolve } from "node:path"
import { describe, expect, it } from "vitest"
import { CHILD_START_MS, holdsStarts } from "../support/childStart.ts"

const root = resolve(import.meta.dirname, "../..")

const run = (file: string): Promise<{ code: number | null; stdout: string; stderr: string }> =>
  new Promise((done) => {
    execFile(process.execPath, [resolve(root, file)], { cwd: root, timeout: CHILD_START_MS }, (error, stdout, stderr) =>
      done({ code: error === null ? 0 : typeof error.code === "number" ? error.code : null, stdout, stderr })
    )
  })

describe("examples", () => {
  it("examples/effectRpc.ts runs and prints each call's answer", async () => {
    const { code, stdout, stderr } = await run("examples/effectRpc.ts")
    expect(stderr).toBe("")
    expect(code).toBe(0)
    expect(stdout).toContain("greet: hello effect")
    expect(stdout).toContain("upper: STREAMED BOTH WAYS")
    expect(stdout).toContain("temperature paris: 14")
    expect(stdout).toContain("forecast oslo: 4,5,6")
    expect(stdout).toContain("temperature atlantis: UnknownCity atlantis")
  }, holdsStarts(1, 5000))
})
