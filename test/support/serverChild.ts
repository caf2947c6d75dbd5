// Starts a child-process server script (test/support/meshServerChild.ts, iipServerChild.ts) for
// tests whose peer must keep running while this process stalls, or be stopped (SIGSTOP) on its own.
import { type ChildProcess, spawn } from "node:child_process"
import * as fs from "node:fs"
import * as path from "node:path"
import * as readline from "node:readline"
import { fileURLToPath } from "node:url"
import { CHILD_START_MS } from "./childStart.ts"
import { type Cleanup, waitFor, withTimeout } from "./iipRaw.ts"

/** `script` (a file name in test/support) in a child process; resolves with its port and pid once it listens. */
export const startServerChild = async (cleanup: Cleanup, script: string): Promise<{ port: number; pid: number }> => {
  const scriptPath = path.join(path.dirname(fileURLToPath(import.meta.url)), script)
  const child: ChildProcess = spawn(process.execPath, [scriptPath], { stdio: ["ignore", "pipe", "inherit"] })
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()))
  cleanup.add(async () => {
    if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL")
    await withTimeout(exited, 5000, `child ${child.pid} to exit`)
  })
  const first = new Promise<Record<string, unknown>>((resolve) => {
    readline.createInterface({ input: child.stdout! }).once("line", (line) => resolve(JSON.parse(line) as Record<string, unknown>))
  })
  const listening = await withTimeout(Promise.race([first, exited.then((): Record<string, unknown> => ({ error: "exited" }))]), CHILD_START_MS, `${script} to listen`)
  if (typeof listening.port !== "number") throw new Error(`${script} did not listen: ${JSON.stringify(listening)}`)
  return { port: listening.port, pid: child.pid! }
}

/** The process is stopped by a signal (state T in /proc/PID/stat: the field after the parenthesised name). */
const isStopped = (pid: number): boolean => {
  const stat = fs.readFileSync(`/proc/${pid}/stat`, "latin1")
  return stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3) === "T"
}

/** SIGSTOPs `pid` (continued at cleanup); resolves once the kernel shows it stopped: the signal is sent, not yet taken, when kill returns. */
export const stop = async (cleanup: Cleanup, pid: number): Promise<void> => {
  cleanup.add(() => process.kill(pid, "SIGCONT"))
  process.kill(pid, "SIGSTOP")
  await waitFor(() => isStopped(pid), 5000, "the child to be stopped")
}
