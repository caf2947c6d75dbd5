// The sidecar bench's saturation load: wrk (`wrk -t1 -c64 --latency`, a Lua script making its
// request the same 1 KiB POST the Node generator sends), run as a child process, and the reading of
// its text report (requests, req/s, latency percentiles, errors).
import { spawn } from "node:child_process"
import { writeFileSync } from "node:fs"
import { join } from "node:path"
import { Data } from "effect"
import { PATH, PAYLOAD_BYTES } from "./request.ts"

export const WRK_INSTALL_HINT = "apt-get install wrk"

/** wrk's report could not be read (or wrk failed): what was wrong, and what it printed. */
export class WrkFailed extends Data.TaggedError("WrkFailed")<{ readonly message: string; readonly output: string }> {}

export interface WrkReport {
  /** Requests completed over the whole run (the divisor for CPU per request). */
  readonly requests: number
  readonly seconds: number
  readonly rps: number
  /** Latency percentiles of the run, milliseconds. */
  readonly p50: number
  readonly p75: number
  readonly p90: number
  readonly p99: number
  /** Connect, read, write errors and timeouts. */
  readonly socketErrors: number
  /** Answers with a status outside 2xx and 3xx. */
  readonly non2xx: number
}

/** wrk prints durations as a number and one of these units (its format_time_us). */
const MS_PER_UNIT: Record<string, number> = { us: 0.001, ms: 1, s: 1000, m: 60_000, h: 3_600_000 }

const durationMs = (value: string, unit: string): number => Number(value) * MS_PER_UNIT[unit]!

/** Reads wrk's text report (run with --latency); fails when a figure the bench needs is missing. */
export const parseWrkOutput = (output: string): WrkReport => {
  const missing = (what: string) => new WrkFailed({ message: `wrk's report has no ${what}`, output })
  const rps = /^Requests\/sec:\s+([\d.]+)\s*$/m.exec(output)
  if (rps === null) throw missing(`"Requests/sec:" line`)
  const total = /^\s*(\d+) requests in ([\d.]+)(us|ms|s|m|h),/m.exec(output)
  if (total === null) throw missing(`"N requests in T" line`)
  const distribution = output.indexOf("Latency Distribution")
  if (distribution === -1) throw missing(`"Latency Distribution" block (run wrk with --latency)`)
  const percentiles = new Map<string, number>()
  for (const match of output.slice(distribution).matchAll(/^\s+(50|75|90|99)%\s+([\d.]+)(us|ms|s|m|h)\s*$/gm)) {
    percentiles.set(match[1]!, durationMs(match[2]!, match[3]!))
  }
  const percentileOf = (q: string): number => {
    const value = percentiles.get(q)
    if (value === undefined) throw missing(`${q}% line in its latency distribution`)
    return value
  }
  const socket = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(output)
  const non2xx = /Non-2xx or 3xx responses: (\d+)/.exec(output)
  return {
    requests: Number(total[1]),
    seconds: durationMs(total[2]!, total[3]!) / 1000,
    rps: Number(rps[1]),
    p50: percentileOf("50"),
    p75: percentileOf("75"),
    p90: percentileOf("90"),
    p99: percentileOf("99"),
    socketErrors: socket === null ? 0 : socket.slice(1).reduce((sum, n) => sum + Number(n), 0),
    non2xx: non2xx === null ? 0 : Number(non2xx[1])
  }
}

/** The Lua script for wrk: the bench's request (POST, the 1 KiB body byte for byte, Host when proxied), written into `dir`. */
export const writeWrkScript = (dir: string, name: string, hostHeader: string | undefined): string => {
  const file = join(dir, `${name}.lua`)
  writeFileSync(
    file,
    [
      `wrk.method = "POST"`,
      `wrk.headers["Content-Type"] = "application/octet-stream"`,
      ...(hostHeader === undefined ? [] : [`wrk.headers["Host"] = ${JSON.stringify(hostHeader)}`]),
      // The same bytes as request.ts's payloadByte(i) = (i * 31 + 7) & 0xff.
      `local bytes = {}`,
      `for i = 0, ${PAYLOAD_BYTES - 1} do bytes[#bytes + 1] = string.char((i * 31 + 7) % 256) end`,
      `wrk.body = table.concat(bytes)`,
      ``
    ].join("\n")
  )
  return file
}

export interface WrkRun {
  readonly binary: string
  readonly host: string
  readonly port: number
  readonly script: string
  readonly connections: number
  readonly seconds: number
}

/** Runs wrk to the end and reads its report; fails if it exits non-zero or prints no report. */
export const runWrk = (run: WrkRun): Promise<WrkReport> =>
  new Promise((resolve, reject) => {
    const args = ["-t1", `-c${run.connections}`, `-d${Math.max(1, Math.round(run.seconds))}s`, "--latency", "--timeout", "10s", "-s", run.script, `http://${run.host}:${run.port}${PATH}`]
    const child = spawn(run.binary, args, { stdio: ["ignore", "pipe", "pipe"] })
    let stdout = ""
    let stderr = ""
    child.stdout.setEncoding("utf8").on("data", (text: string) => (stdout += text))
    child.stderr.setEncoding("utf8").on("data", (text: string) => (stderr += text))
    child.once("error", (error) => reject(new WrkFailed({ message: `wrk did not start: ${error.message}`, output: "" })))
    child.once("close", (code, signal) => {
      if (code !== 0) return reject(new WrkFailed({ message: `wrk exited (${code ?? signal}): ${stderr.trim().slice(0, 500)}`, output: stdout }))
      try {
        resolve(parseWrkOutput(stdout))
      } catch (error) {
        reject(error)
      }
    })
  })
