// An `iip-mesh sidecar` in a process of its own (src/cli/main.ts), for tests that need the real
// process: its exit code, its signals, its last-resort handler. The environment is the test's
// without IIP_MESH_* and OTEL_* (so only the given flags and `env` configure it); `ready` resolves with the
// first stdout line, the sidecar-ready JSON, or fails with stderr if the process exits first.
import { type ChildProcess, spawn } from "node:child_process"
import { resolve } from "node:path"
import { CHILD_START_MS } from "./childStart.ts"
import { withTimeout } from "./iipRaw.ts"

const main = resolve(import.meta.dirname, "../../src/cli/main.ts")

export interface SidecarReadyLine {
  readonly event: string
  readonly outbound: string
  readonly inbound: string
  /** The read-only admin listener (/health, /ready, /metrics). */
  readonly admin: string
  /** The admin control listener (everything else). */
  readonly adminControl: string
}

export interface SidecarProcess {
  readonly proc: ChildProcess
  readonly ready: Promise<SidecarReadyLine>
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>
  readonly stderr: () => string
}

/**
 * `nodeArgs` go to node before the script (--import, V8 flags); `script` is the CLI to run (the
 * sources unless a test names a built one); `extraEnv` is added to the cleaned environment (e.g.
 * OTEL_* for an export test). The admin control listener goes on 127.0.0.1:0 unless `args` name
 * one (its default is a fixed port). `openFileLimit` runs it under `ulimit -n` that many (soft and
 * hard: node raises a soft limit to the hard one at start), for tests of running out of descriptors.
 */
export const spawnSidecarProcess = (
  args: ReadonlyArray<string>,
  nodeArgs: ReadonlyArray<string> = [],
  script: string = main,
  extraEnv: Readonly<Record<string, string>> = {},
  openFileLimit?: number
): SidecarProcess => {
  const env = {
    ...Object.fromEntries(Object.entries(process.env).filter(([name]) => !name.startsWith("IIP_MESH_") && !name.startsWith("OTEL_"))),
    ...extraEnv
  }
  const control = args.some((arg) => arg.startsWith("--admin-control")) ? [] : ["--admin-control", "127.0.0.1:0"]
  const command = [process.execPath, ...nodeArgs, script, "sidecar", ...args, ...control]
  const proc = openFileLimit === undefined
    ? spawn(command[0]!, command.slice(1), { stdio: ["ignore", "pipe", "pipe"], env })
    : spawn("sh", ["-c", `ulimit -n ${openFileLimit} && exec "$@"`, "sh", ...command], { stdio: ["ignore", "pipe", "pipe"], env })
  let stderr = ""
  proc.stderr!.on("data", (chunk: Buffer) => (stderr += chunk.toString()))
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((done) => proc.on("exit", (code, signal) => done({ code, signal })))
  const ready = withTimeout(
    new Promise<SidecarReadyLine>((found, failed) => {
      let out = ""
      proc.stdout!.on("data", (chunk: Buffer) => {
        out += chunk.toString()
        const newline = out.indexOf("\n")
        if (newline !== -1) found(JSON.parse(out.slice(0, newline)) as SidecarReadyLine)
      })
      proc.once("exit", (code) => failed(new Error(`sidecar exited with ${code} before it was ready: ${stderr}`)))
    }),
    CHILD_START_MS,
    "the sidecar-ready line"
  )
  return { proc, ready, exited, stderr: () => stderr }
}

/** The port of a "host:port" address the ready line names. */
export const portOf = (address: string): number => Number(address.slice(address.lastIndexOf(":") + 1))

/** SIGKILLs a process that is still running. */
export const killIfRunning = (proc: ChildProcess | undefined): void => {
  if (proc?.pid !== undefined && proc.exitCode === null && proc.signalCode === null) proc.kill("SIGKILL")
}
