// The benches' server children (bench/children.ts): a child whose parent stopped reading its stdout
// (it gave up waiting for the port, at load 23 after 10 s) exits quietly when it writes the port,
// rather than crash on an unhandled EPIPE; a parent that gives up says how long it waited, at what
// load, and that it stopped the child. A child run with the stall probe has its GC pauses kept
// (the gRPC bench counts the app's per path). Node flags reach the child, and what else it prints
// on stdout (node's --trace-gc), before its port as after, goes to its log file.
import { spawn } from "node:child_process"
import { mkdtempSync, readFileSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { fileURLToPath } from "node:url"
import { describe, expect, it } from "vitest"
import { killChild, spawnServer } from "../../bench/children.ts"

const LATE_CHILD = new URL("fixtures/lateServeChild.ts", import.meta.url)
const ALLOCATING_CHILD = new URL("fixtures/allocatingServeChild.ts", import.meta.url)

describe("bench server children", () => {
  it("a child whose stdout was closed exits 0 when it reports its port, with no EPIPE", async () => {
    const child = spawn(process.execPath, [fileURLToPath(LATE_CHILD)], { stdio: ["pipe", "pipe", "pipe"] })
    let stderr = ""
    child.stderr.setEncoding("utf8").on("data", (text: string) => (stderr += text))
    const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)))
    child.stdout.destroy()
    child.stdin.write("go\n")
    const code = await exited
    expect(stderr).not.toContain("EPIPE")
    expect(code).toBe(0)
  })

  it("a parent that gives up says how long it waited, the load, and that it stopped the child", async () => {
    const error = await spawnServer(LATE_CHILD.href, "late", undefined, undefined, 300).then(
      () => undefined,
      (e: unknown) => e
    )
    expect(String(error)).toMatch(/^Error: late server \(pid \d+\) reported no port within 0\.3 s \(load average \d+\.\d+ on \d+ cores\); stopped it$/)
    // Told once the child is gone.
    const pid = Number(/pid (\d+)/.exec(String(error))![1])
    expect(() => process.kill(pid, 0)).toThrow(/ESRCH/)
  })

  it("a port reported after the parent gave up does not turn its failure into a child", async () => {
    const outcome = await spawnServer(LATE_CHILD.href, "late-on-stop", undefined, undefined, 300).then(
      (child) => `a child on port ${child.port}`,
      (e: unknown) => String(e)
    )
    expect(outcome).toMatch(/^Error: late-on-stop server \(pid \d+\) reported no port within 0\.3 s/)
  })

  it("a child run with the stall probe has its GC pauses kept, each with a start and a length", async () => {
    const child = await spawnServer(ALLOCATING_CHILD.href, "allocating", undefined, 10)
    try {
      // Polled with a bound: the child allocates ~1 MB every 5 ms, so a scavenge comes within a second.
      for (let i = 0; i < 200 && child.gcPauses.length === 0; i++) await new Promise((resolve) => setTimeout(resolve, 50))
      expect(child.gcPauses.length).toBeGreaterThan(0)
      const pause = child.gcPauses[0]!
      expect(pause.ms).toBeGreaterThanOrEqual(0)
      expect(Math.abs(pause.startMs - Date.now())).toBeLessThan(60_000)
    } finally {
      await killChild(child.process)
    }
  })

  it("node flags reach the child and its other stdout lines go to its log, its port and probe lines still read", async () => {
    const dir = mkdtempSync(join(tmpdir(), "iip-mesh-children-"))
    const logPath = join(dir, "app.log")
    const child = await spawnServer(ALLOCATING_CHILD.href, "traced", undefined, 10, undefined, { nodeFlags: ["--trace-gc"], logPath })
    try {
      expect(child.port).toBeGreaterThan(0)
      // Polled with a bound: the child allocates ~1 MB every 5 ms, so scavenges come within a second.
      for (let i = 0; i < 200 && (child.gcPauses.length === 0 || !readFileSync(logPath, "utf8").includes("Scavenge")); i++) await new Promise((resolve) => setTimeout(resolve, 50))
      expect(child.gcPauses.length).toBeGreaterThan(0)
      const lines = readFileSync(logPath, "utf8").split("\n").filter((line) => line !== "")
      expect(lines.some((line) => /Scavenge/.test(line))).toBe(true)
      // Only node's trace lines: no probe line, no port.
      expect(lines.filter((line) => line.startsWith("{") || /^\d+$/.test(line))).toEqual([])
    } finally {
      await killChild(child.process)
      rmSync(dir, { recursive: true, force: true })
    }
  })
})
