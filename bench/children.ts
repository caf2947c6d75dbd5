// Server processes for the benches: each server runs in a child process (the bench file itself
// with `--serve <kind>`), prints its port as one stdout line, and exits when its stdin closes.
import { type ChildProcess, spawn } from "node:child_process"
import { createWriteStream } from "node:fs"
import type * as net from "node:net"
import { availableParallelism, loadavg } from "node:os"
import { fileURLToPath } from "node:url"
import { gcOfLine } from "./sidecar/gcTail.ts"
import { STALL_PROBE, stallOfLine } from "./sidecar/hopStalls.ts"
import { type HopGc, type HopStall, MAX_HOP_GC } from "./sidecar/pair.ts"

export interface Child {
  readonly process: ChildProcess
  readonly port: number
  /** With `stallProbeMs`: each event-loop stall over 10 ms so far (sidecar/stallProbe.mjs). */
  readonly stalls: ReadonlyArray<HopStall>
  /** With `stallProbeMs`: its every GC pause so far (the probe's `bench-gc` lines), as a sidecar's (sidecars.ts). */
  readonly gcPauses: ReadonlyArray<HopGc>
}

/** Extra ways to run a server child: node flags before its script, and a file for what else it prints. */
export interface ServerRun {
  /** Node flags (the gRPC bench's --app-node-flags: "--trace-gc", "--max-semi-space-size=8"). */
  readonly nodeFlags?: ReadonlyArray<string>
  /**
   * Where whatever else the child prints on stdout goes (node's --trace-gc, say), before its port
   * line as after; without it such a line before the port fails the start, as a port misprinted.
   */
  readonly logPath?: string | undefined
}

/**
 * Starts `benchFile --serve kind` and waits for the port it prints, `reportWithinMs` at most (then
 * the child is stopped). `stallProbeMs`: the child also runs the bench's stall probe, reporting
 * stalls over that many ms, whose lines after the port are gathered in `stalls`.
 */
export const spawnServer = (benchFile: string, kind: string, cpuProfDir: string | undefined, stallProbeMs?: number, reportWithinMs = 10_000, run: ServerRun = {}): Promise<Child> =>
  new Promise((resolve, reject) => {
    const execArgv = [
      ...(cpuProfDir === undefined ? [] : ["--cpu-prof", `--cpu-prof-dir=${cpuProfDir}`, `--cpu-prof-name=server-${kind}.cpuprofile`]),
      ...(run.nodeFlags ?? []),
      ...(stallProbeMs === undefined ? [] : [STALL_PROBE])
    ]
    const child = spawn(process.execPath, [...execArgv, fileURLToPath(benchFile), "--serve", kind], {
      stdio: ["pipe", "pipe", "inherit"],
      env: stallProbeMs === undefined ? process.env : { ...process.env, BENCH_STALL_MS: String(stallProbeMs) }
    })
    const log = run.logPath === undefined ? undefined : createWriteStream(run.logPath)
    if (log !== undefined) child.once("exit", () => log.end())
    let out = ""
    let port = 0
    const stalls: Array<HopStall> = []
    const gcPauses: Array<HopGc> = []
    const started = performance.now()
    // A child starts slowly on a loaded machine: the load says whether to wait longer or look at the child.
    const load = () => `load average ${loadavg()[0]!.toFixed(1)} on ${availableParallelism()} cores`
    const timer = setTimeout(() => fail(new Error(`${kind} server (pid ${child.pid}) reported no port within ${reportWithinMs / 1000} s (${load()}); stopped it`)), reportWithinMs)
    // Once (the child's exit follows a stop), and told once the child is gone.
    let failed = false
    const fail = (error: Error) => {
      clearTimeout(timer)
      if (failed) return
      failed = true
      if (child.pid === undefined) return reject(error)
      killChild(child).then(() => reject(error), () => reject(error))
    }
    child.on("error", fail)
    child.on("exit", (code, signal) => fail(new Error(`${kind} server (pid ${child.pid}) exited with ${code ?? signal} ${Math.round(performance.now() - started)} ms after its start, before reporting its port (${load()})`)))
    child.stdout!.setEncoding("utf8")
    // The port, then the stall probe's lines (anything else is dropped).
    child.stdout!.on("data", (text: string) => {
      // Given up on: what the child prints while it is being stopped is no port to hand out.
      if (failed) return
      out += text
      for (let nl = out.indexOf("\n"); nl !== -1; nl = out.indexOf("\n")) {
        const line = out.slice(0, nl)
        out = out.slice(nl + 1)
        if (port !== 0) {
          try {
            const parsed: unknown = JSON.parse(line)
            const stall = stallOfLine(parsed)
            if (stall !== undefined) stalls.push(stall)
            const pause = gcOfLine(parsed)
            if (pause !== undefined) {
              if (gcPauses.length === MAX_HOP_GC) gcPauses.splice(0, MAX_HOP_GC / 2)
              gcPauses.push(pause)
            }
            if (stall === undefined && pause === undefined) log?.write(`${line}\n`)
          } catch {
            // Not a probe's line.
            log?.write(`${line}\n`)
          }
          continue
        }
        if (log !== undefined && !/^\d+$/.test(line)) {
          log.write(`${line}\n`)
          continue
        }
        clearTimeout(timer)
        child.removeAllListeners("exit")
        port = Number(line)
        if (!Number.isInteger(port) || port <= 0) return fail(new Error(`${kind} server printed ${JSON.stringify(line)}, not a port`))
        resolve({ process: child, port, stalls, gcPauses })
      }
      if (out.length > 65_536) out = ""
    })
  })

/** Ends a child by its pid: closing its stdin lets it exit by itself (and write a CPU profile). */
export const killChild = (child: ChildProcess): Promise<void> =>
  new Promise((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) return resolve()
    const force = setTimeout(() => {
      if (child.pid !== undefined && child.exitCode === null) process.kill(child.pid, "SIGKILL")
    }, 3000)
    child.once("exit", () => {
      clearTimeout(force)
      resolve()
    })
    child.stdin?.end()
    if (child.pid !== undefined) setTimeout(() => child.exitCode === null && child.signalCode === null && process.kill(child.pid!, "SIGTERM"), 1000).unref()
  })

// The child side lives in serveChild.ts, which imports nothing else: a server child loads only what it serves with.
export { serveChild } from "./serveChild.ts"

export const listenOn = (server: Pick<net.Server, "once" | "listen" | "address">, host: string): Promise<number> =>
  new Promise((resolve, reject) => {
    server.once("error", reject)
    server.listen(0, host, () => resolve((server.address() as net.AddressInfo).port))
  })
