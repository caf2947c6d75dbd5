// The process-level last line of defence of the long-running commands (src/cli/lastResort.ts), in
// a real child process (test/support/lastResortChild.ts): exceptions thrown from timers and
// promise rejections nobody handles no longer end the process; each is one JSON line on stderr with
// its message sanitized (no raw CR/LF or escape sequences, so no forged log lines), at most 20 per
// minute when they come in a flood, and all of them counted in iip_mesh_uncaught_errors_total;
// written through the bounded stderr (src/iip/outputLines.ts), so a stderr nobody reads holds ~1 MiB.
import { spawn } from "node:child_process"
import { resolve } from "node:path"
import { afterEach, describe, expect, it } from "vitest"
import { CHILD_START_MS, holdsStarts } from "../support/childStart.ts"
import { Cleanup, withTimeout } from "../support/iipRaw.ts"
import { call } from "../support/sidecarHarness.ts"

const childScript = resolve(import.meta.dirname, "../support/lastResortChild.ts")
const cleanup = new Cleanup()
afterEach(() => cleanup.run())

const startChild = async (faults: number) => {
  const child = spawn(process.execPath, [childScript], { stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, FAULTS: String(faults) } })
  cleanup.add(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL")
  })
  let stderr = ""
  child.stderr.on("data", (chunk: Buffer) => (stderr += chunk.toString()))
  const port = await withTimeout(
    new Promise<number>((found, failed) => {
      let out = ""
      child.stdout.on("data", (chunk: Buffer) => {
        out += chunk.toString()
        if (out.includes("\n")) found((JSON.parse(out.slice(0, out.indexOf("\n"))) as { port: number }).port)
      })
      child.once("exit", (code, signal) => failed(new Error(`the child exited (${code ?? signal}): ${stderr}`)))
    }),
    CHILD_START_MS,
    "the child to serve after its faults"
  )
  return { child, port, stderr: () => stderr }
}

const uncaughtSeries = (metrics: string) =>
  Object.fromEntries([...metrics.matchAll(/^iip_mesh_uncaught_errors_total\{kind="(\w+)"\} (\d+)$/gm)].map((m) => [m[1], Number(m[2])]))

describe("the last line of defence", () => {
  it("survives thrown exceptions and unhandled rejections, logging each as one sanitized JSON line and counting them", async () => {
    const { child, port, stderr } = await startChild(3)
    const metrics = (await call(port, { path: "/metrics" })).body.toString()
    expect(uncaughtSeries(metrics)).toStrictEqual({ exception: 3, rejection: 2 })
    expect(child.exitCode).toBeNull()

    const lines = stderr().trimEnd().split("\n")
    expect(lines).toHaveLength(5)
    const events = lines.map((line) => JSON.parse(line) as Record<string, unknown>)
    expect(events.map((e) => e.event)).toStrictEqual(["unhandled-rejection", "unhandled-rejection", "uncaught-exception", "uncaught-exception", "uncaught-exception"])
    expect(events.every((e) => e.command === "test-child" && e.action === "kept serving")).toBe(true)
    expect(events[2]!.message).toBe(String.raw`thrown 0\r\n{\"event\":\"forged\"}\u001b[31m red`)
    expect(events[1]!.message).toBe(String.raw`a bare string\n{\"event\":\"forged\"}`)
    expect(events.map((e) => e.total)).toStrictEqual([1, 2, 1, 2, 3])
    for (const line of lines) expect(line).not.toMatch(/[\u0000-\u001f\u007f]/)
  }, holdsStarts(1, 10_000))

  it("a flood is logged at most 20 lines a minute, and every fault still counted", async () => {
    const { port, stderr } = await startChild(200)
    const metrics = (await call(port, { path: "/metrics" })).body.toString()
    expect(uncaughtSeries(metrics)).toStrictEqual({ exception: 200, rejection: 2 })
    expect(stderr().trimEnd().split("\n")).toHaveLength(20)
  }, holdsStarts(1, 10_000))

  it("its lines go through the bounded stderr: a stderr nobody reads holds at most about 1 MiB of them", async () => {
    // 3,000 faults of 1 KB messages, admitted without the throttle (as 20 a minute would be, over days).
    const script = [
      `import { installLastResort } from ${JSON.stringify(resolve(import.meta.dirname, "../../src/cli/lastResort.ts"))}`,
      `installLastResort({ command: "test-child", maxLines: 1e6 })`,
      `let left = 3000`,
      `const fault = () => {`,
      `  if (left-- === 0) return void process.stdout.write(process.stderr.writableLength + "\\n")`,
      `  setImmediate(fault)`,
      `  throw new Error("x".repeat(1000))`,
      `}`,
      `setImmediate(fault)`
    ].join("\n")
    const child = spawn(process.execPath, ["--input-type=module", "-e", script], { stdio: ["ignore", "pipe", "pipe"] })
    cleanup.add(() => {
      if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL")
    })
    // Its stderr is never read: the pipe fills and what is written after queues in the child.
    child.stderr.pause()
    const held = await withTimeout(new Promise<number>((done) => child.stdout.once("data", (chunk: Buffer) => done(Number(chunk.toString())))), CHILD_START_MS, "the child's count")
    expect(held).toBeLessThanOrEqual(1 << 20)
  }, holdsStarts(1, 10_000))
})
