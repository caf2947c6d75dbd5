// A Node process as one hop of a bench path (the iip-mesh sidecars, sidecars.ts; the bare Node
// relays, nodeRelays.ts): started with the sidecars' node flags and environment, the stall probe
// loaded (stallProbe.mjs), stopped when its stdin closes; the first JSON line `ready` accepts is its
// ready line, and the probe's lines after it are kept as the hop's stalls and GC pauses.
import { spawn } from "node:child_process"
import { createWriteStream } from "node:fs"
import { join } from "node:path"
import { killChild } from "../children.ts"
import type { Options } from "./options.ts"
import { STALL_PROBE, stallOfLine } from "./hopStalls.ts"
import { gcOfLine } from "./gcTail.ts"
import { type Hop, HopFailed, type HopGc, type HopStall, MAX_HOP_GC } from "./pair.ts"

/**
 * Loaded into each hop before its main module: the hop stops (SIGTERM, a sidecar's graceful path)
 * when its stdin closes, so killChild works on it and no hop outlives a bench killed hard.
 */
const EXIT_WITH_PARENT = `--import=data:text/javascript,process.stdin.on("end",()=>process.kill(process.pid,"SIGTERM")).resume()`

/** How a bench runs a Node hop (the sidecar bench's flags; the gRPC bench takes the same). */
export type SidecarProcessOptions = Pick<Options, "cpuProfDir" | "sidecarNodeFlags" | "sidecarEnv" | "sidecarMain" | "sidecarLogDir">

export interface NodeHop extends Hop {
  readonly stalls: ReadonlyArray<HopStall>
  readonly gcPauses: ReadonlyArray<HopGc>
}

/**
 * Starts `node <flags> <script...>` as the hop named `name` (its CPU profile and log files are
 * `<name>.cpuprofile` and `<name>.log`) and waits for its ready line (its stop is registered at
 * once, ready or not). `ready` reads a parsed stdout line: what the hop says it is, or undefined.
 */
export const startNodeHop = <R>(
  name: string,
  script: ReadonlyArray<string>,
  options: SidecarProcessOptions,
  spawned: Array<() => Promise<void>>,
  ready: (line: Record<string, unknown>) => R | undefined
): Promise<NodeHop & R> =>
  new Promise((resolve, reject) => {
    const dir = options.cpuProfDir
    const prof = dir === undefined ? [] : ["--cpu-prof", `--cpu-prof-dir=${dir}`, `--cpu-prof-name=${name}.cpuprofile`]
    const command = [...prof, ...options.sidecarNodeFlags, EXIT_WITH_PARENT, STALL_PROBE, ...script]
    const child = spawn(process.execPath, command, { stdio: ["pipe", "pipe", "inherit"], env: { ...process.env, ...options.sidecarEnv } })
    const stop = () => killChild(child)
    spawned.push(stop)
    // Whatever else the hop prints on stdout (node's --trace-gc, say), one file per hop when asked for.
    const log = options.sidecarLogDir === undefined ? undefined : createWriteStream(join(options.sidecarLogDir, `${name}.log`))
    if (log !== undefined) child.once("exit", () => log.end())
    let out = ""
    let settled = false
    const stalls: Array<HopStall> = []
    const gcPauses: Array<HopGc> = []
    const timer = setTimeout(() => fail(new HopFailed({ message: `${name} did not print its ready line within 20 s` })), 20_000)
    const fail = (error: HopFailed) => {
      if (settled) return
      settled = true
      clearTimeout(timer)
      reject(error)
    }
    child.on("error", (error) => fail(new HopFailed({ message: `${name} did not start: ${error.message}` })))
    child.once("exit", (code, signal) => fail(new HopFailed({ message: `${name} exited (${code ?? signal}) before it was ready; output: ${JSON.stringify(out.slice(0, 500))}` })))
    child.stdout!.setEncoding("utf8")
    // The ready line, then the stall probe's lines, stalls and GC pauses (anything else it prints goes to the log, or is dropped).
    child.stdout!.on("data", (text: string) => {
      out += text
      for (let nl = out.indexOf("\n"); nl !== -1; nl = out.indexOf("\n")) {
        const line = out.slice(0, nl)
        out = out.slice(nl + 1)
        let parsed: unknown
        try {
          parsed = JSON.parse(line)
        } catch {
          log?.write(`${line}\n`)
          continue
        }
        if (typeof parsed !== "object" || parsed === null) continue
        const stall = stallOfLine(parsed)
        if (stall !== undefined) {
          stalls.push(stall)
          continue
        }
        const pause = gcOfLine(parsed)
        if (pause !== undefined) {
          if (gcPauses.length === MAX_HOP_GC) gcPauses.splice(0, MAX_HOP_GC / 2)
          gcPauses.push(pause)
          continue
        }
        if (settled) continue
        const said = ready(parsed as Record<string, unknown>)
        if (said === undefined) continue
        settled = true
        clearTimeout(timer)
        resolve({ ...said, pid: child.pid!, stop, stalls, gcPauses })
      }
      // A line is at most a few hundred bytes; whatever else the hop prints without newlines is not kept.
      if (out.length > 65_536) out = ""
    })
  })

/** "host:port" as the hops print it. */
export const splitHostPort = (address: string): { host: string; port: number } => {
  const colon = address.lastIndexOf(":")
  return { host: address.slice(0, colon), port: Number(address.slice(colon + 1)) }
}
