// Starts test/support/meshInstanceChild.ts (an instance of "catalog": its app and sidecar in a
// child process of their own, so a stall or a SIGSTOP of one side does not hold the other).
import { type ChildProcess, spawn } from "node:child_process"
import * as path from "node:path"
import * as readline from "node:readline"
import { fileURLToPath } from "node:url"
import { CHILD_START_MS } from "./childStart.ts"
import { type Cleanup, withTimeout } from "./iipRaw.ts"

const childScript = path.join(path.dirname(fileURLToPath(import.meta.url)), "meshInstanceChild.ts")

/** Instance `name` in a child process; resolves with its inbound address and pid once it is up. */
export const spawnInstance = async (cleanup: Cleanup, name: string, delayMs = 0) => {
  const child: ChildProcess = spawn(process.execPath, [childScript, name, String(delayMs)], { stdio: ["pipe", "pipe", "inherit"] })
  const exited = new Promise<void>((done) => child.once("exit", () => done()))
  cleanup.add(async () => {
    if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL")
    await withTimeout(exited, 5000, `instance ${name} to exit`)
  })
  const up = new Promise<Record<string, unknown>>((done) => {
    readline.createInterface({ input: child.stdout! }).once("line", (line) => done(JSON.parse(line) as Record<string, unknown>))
  })
  const first = await withTimeout(Promise.race([up, exited.then((): Record<string, unknown> => ({ error: "exited" }))]), CHILD_START_MS, `instance ${name} to start`)
  if (typeof first.inbound !== "string") throw new Error(`instance ${name} did not start: ${JSON.stringify(first)}`)
  return { inbound: first.inbound, pid: child.pid! }
}
