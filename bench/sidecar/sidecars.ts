// The iip-mesh rows of the sidecar bench: sidecar B (service "echo", --app the echo app) and sidecar
// A (service "client", --endpoint echo=B's inbound), each `node <flags> <sidecar main> sidecar ...`
// with its ready line giving its addresses; `untraced` starts both with --tracing false. Both get
// credentials (--tls-credentials-dir, written by credentials.ts), so mTLS is on, its default with
// credentials; `mtls-off` starts both with --mtls off and none.
import { spawn } from "node:child_process"
import { createWriteStream } from "node:fs"
import { join } from "node:path"
import { killChild } from "../children.ts"
import type { Meshed, Options } from "./options.ts"
import { STALL_PROBE, stallOfLine } from "./hopStalls.ts"
import { gcOfLine } from "./gcTail.ts"
import { type Hop, HopFailed, type HopGc, type HopStall, MAX_HOP_GC, type ProxyPair } from "./pair.ts"
import { HOST } from "./request.ts"

/**
 * Loaded into each sidecar before its main module: the sidecar stops (SIGTERM, its graceful path)
 * when its stdin closes, so killChild works on it and no sidecar outlives a bench killed hard.
 */
const EXIT_WITH_PARENT = `--import=data:text/javascript,process.stdin.on("end",()=>process.kill(process.pid,"SIGTERM")).resume()`

export interface Sidecar extends Hop {
  readonly stalls: ReadonlyArray<HopStall>
  readonly outbound: { readonly host: string; readonly port: number }
  readonly inbound: string
  readonly admin: string
}

const splitHostPort = (address: string): { host: string; port: number } => {
  const colon = address.lastIndexOf(":")
  return { host: address.slice(0, colon), port: Number(address.slice(colon + 1)) }
}

/** How a bench runs a sidecar process (the sidecar bench's flags; the gRPC bench takes the same). */
export type SidecarProcessOptions = Pick<Options, "cpuProfDir" | "sidecarNodeFlags" | "sidecarEnv" | "sidecarMain" | "sidecarLogDir">

/** The sidecar's command line, in one place: node, profiling and extra flags, the main script. */
const sidecarCommand = (name: string, options: SidecarProcessOptions): ReadonlyArray<string> => {
  const dir = options.cpuProfDir
  const prof = dir === undefined ? [] : ["--cpu-prof", `--cpu-prof-dir=${dir}`, `--cpu-prof-name=sidecar-${name}.cpuprofile`]
  return [...prof, ...options.sidecarNodeFlags, EXIT_WITH_PARENT, STALL_PROBE, options.sidecarMain, "sidecar"]
}

/** Starts one sidecar and waits for its ready line (its stop is registered at once, ready or not). */
export const startSidecar = (name: string, args: ReadonlyArray<string>, options: SidecarProcessOptions, spawned: Array<() => Promise<void>>): Promise<Sidecar> =>
  new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [...sidecarCommand(name, options), ...args], { stdio: ["pipe", "pipe", "inherit"], env: { ...process.env, ...options.sidecarEnv } })
    const stop = () => killChild(child)
    spawned.push(stop)
    // Whatever else the sidecar prints on stdout (node's --trace-gc, say), one file per sidecar when asked for.
    const log = options.sidecarLogDir === undefined ? undefined : createWriteStream(join(options.sidecarLogDir, `sidecar-${name}.log`))
    if (log !== undefined) child.once("exit", () => log.end())
    let out = ""
    let settled = false
    const stalls: Array<HopStall> = []
    const gcPauses: Array<HopGc> = []
    const timer = setTimeout(() => fail(new HopFailed({ message: `sidecar ${name} did not print its ready line within 20 s` })), 20_000)
    const fail = (error: HopFailed) => {
      if (settled) return
      settled = true
      clearTimeout(timer)
      reject(error)
    }
    child.on("error", (error) => fail(new HopFailed({ message: `sidecar ${name} did not start: ${error.message}` })))
    child.once("exit", (code, signal) => fail(new HopFailed({ message: `sidecar ${name} exited (${code ?? signal}) before it was ready; output: ${JSON.stringify(out.slice(0, 500))}` })))
    child.stdout!.setEncoding("utf8")
    // The ready line, then the stall probe's lines, stalls and GC pauses (anything else it prints goes to the log, or is dropped).
    child.stdout!.on("data", (text: string) => {
      out += text
      for (let nl = out.indexOf("\n"); nl !== -1; nl = out.indexOf("\n")) {
        const line = out.slice(0, nl)
        out = out.slice(nl + 1)
        let parsed: { event?: unknown; outbound?: unknown; inbound?: unknown; admin?: unknown } | undefined
        try {
          parsed = JSON.parse(line) as typeof parsed
        } catch {
          log?.write(`${line}\n`)
          continue
        }
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
        if (settled || parsed?.event !== "sidecar-ready" || typeof parsed.outbound !== "string" || typeof parsed.inbound !== "string") continue
        settled = true
        clearTimeout(timer)
        resolve({ pid: child.pid!, stop, outbound: splitHostPort(parsed.outbound), inbound: parsed.inbound, admin: String(parsed.admin), stalls, gcPauses })
      }
      // A line is at most a few hundred bytes; whatever else the sidecar prints without newlines is not kept.
      if (out.length > 65_536) out = ""
    })
  })

/** A sidecar's count of completed outbound TLS handshakes, from its admin /metrics. */
const handshakesOf = async (admin: string): Promise<number> => {
  const body = await (await fetch(`http://${admin}/metrics`)).text()
  const line = body.split("\n").find((l) => l.startsWith(`iip_mesh_tls_handshakes_total{direction="outbound",result="ok"} `))
  return line === undefined ? 0 : Number(line.split(" ").at(-1))
}

/**
 * B in front of the app, A calling B; `untraced` adds --tracing false to both, `mtls-off` --mtls
 * off (and their names get the mode as a suffix). `credentials`: each service's credentials dir.
 */
export const startSidecarPair = async (
  mode: Meshed,
  appPort: number,
  options: Options,
  spawned: Array<() => Promise<void>>,
  credentials: Readonly<Record<"echo" | "client", string>>
): Promise<ProxyPair> => {
  const common = ["--outbound", `${HOST}:0`, "--inbound", `${HOST}:0`, "--admin", `${HOST}:0`, "--admin-control", `${HOST}:0`, "--drain-timeout", "2s"]
  const tracing = mode === "untraced" ? ["--tracing", "false"] : []
  const tls = (service: "echo" | "client") => (mode === "mtls-off" ? ["--mtls", "off"] : ["--tls-credentials-dir", credentials[service]])
  const suffix = mode === "meshed" ? "" : `-${mode}`
  const b = await startSidecar(`b${suffix}`, ["--service", "echo", "--app", `${HOST}:${appPort}`, ...tracing, ...tls("echo"), ...common], options, spawned)
  const a = await startSidecar(`a${suffix}`, ["--service", "client", "--endpoint", `echo=${b.inbound}`, ...tracing, ...tls("client"), ...common], options, spawned)
  return { a, b, entry: a.outbound, handshakes: () => handshakesOf(a.admin) }
}
